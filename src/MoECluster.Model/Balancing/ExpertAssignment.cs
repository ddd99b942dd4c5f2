using System.Globalization;
using MoECluster.Model.Dispatch;

namespace MoECluster.Model.Balancing;

/// <summary>
/// One MoE layer's experts on the expert silos: the set of experts each silo serves. Every expert is on at least one
/// silo; an expert on several silos has replicas (the router splits its rows among them); no silo holds an expert twice.
/// </summary>
public sealed class ExpertAssignment : IEquatable<ExpertAssignment>
{
    private readonly int[][] _bySilo;

    /// <summary>Validates and takes the sets (each silo's experts, any order; stored ascending).</summary>
    /// <exception cref="ArgumentException">An expert outside [0, <paramref name="experts"/>), on no silo, or twice on one silo.</exception>
    public ExpertAssignment(int experts, IEnumerable<IEnumerable<int>> expertsBySilo)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(experts, 1);
        ArgumentNullException.ThrowIfNull(expertsBySilo);
        _bySilo = [.. expertsBySilo.Select(s => s.Order().ToArray())];
        if (_bySilo.Length == 0)
        {
            throw new ArgumentException("an assignment needs at least one silo", nameof(expertsBySilo));
        }

        var replicas = new int[experts];
        for (int silo = 0; silo < _bySilo.Length; silo++)
        {
            int[] set = _bySilo[silo];
            for (int i = 0; i < set.Length; i++)
            {
                int e = set[i];
                if ((uint)e >= (uint)experts)
                {
                    throw new ArgumentException(Invariant($"silo {silo} holds expert {e}, outside 0..{experts - 1}"), nameof(expertsBySilo));
                }

                if (i > 0 && set[i - 1] == e)
                {
                    throw new ArgumentException(Invariant($"silo {silo} holds expert {e} twice (replicas of one expert go to different silos)"), nameof(expertsBySilo));
                }

                replicas[e]++;
            }
        }

        int missing = Array.IndexOf(replicas, 0);
        if (missing >= 0)
        {
            throw new ArgumentException(Invariant($"expert {missing} is on no silo"), nameof(expertsBySilo));
        }

        Experts = experts;
        Replicas = replicas;
    }

    public int Experts { get; }

    public int Silos => _bySilo.Length;

    /// <summary>How many silos serve each expert.</summary>
    public IReadOnlyList<int> Replicas { get; }

    /// <summary>Replicas beyond one per expert: the extra expert memory, in experts.</summary>
    public int ExtraReplicas => Replicas.Sum() - Experts;

    /// <summary>The experts silo <paramref name="silo"/> serves, ascending.</summary>
    public IReadOnlyList<int> ExpertsOf(int silo) => _bySilo[silo];

    /// <summary>Whether <paramref name="silo"/> serves <paramref name="expert"/>.</summary>
    public bool Holds(int silo, int expert) => Array.BinarySearch(_bySilo[silo], expert) >= 0;

    /// <summary>
    /// The default placement: the <paramref name="shards"/> contiguous expert ranges of the layer's default routing table
    /// (<see cref="ExpertRoutingTable"/>: as equal as possible), shard i on silo i mod <paramref name="silos"/>.
    /// </summary>
    public static ExpertAssignment FromContiguousShards(int experts, int shards, int silos) =>
        FromTable(new ExpertRoutingTable("assignment", 0, experts, shards), silos);

    /// <summary>
    /// The placement of a routing table whose shard i sits on silo i mod <paramref name="silos"/> (the cluster's
    /// placement groups shards so): each silo's experts are those of its shards.
    /// </summary>
    public static ExpertAssignment FromTable(ExpertRoutingTable table, int silos)
    {
        ArgumentNullException.ThrowIfNull(table);
        return new ExpertAssignment(table.Experts, table.Groups(silos));
    }

    /// <summary>Each silo's load when every expert's load is split evenly among its replicas.</summary>
    public double[] SiloLoads(IReadOnlyList<double> expertLoads)
    {
        ArgumentNullException.ThrowIfNull(expertLoads);
        if (expertLoads.Count != Experts)
        {
            throw new ArgumentException(Invariant($"{expertLoads.Count} loads for {Experts} experts"), nameof(expertLoads));
        }

        return [.. _bySilo.Select(set => set.Sum(e => expertLoads[e] / Replicas[e]))];
    }

    /// <summary>The most loaded silo over the mean silo load (1 when balanced; 1 for no load at all).</summary>
    public double Imbalance(IReadOnlyList<double> expertLoads)
    {
        return ExpertLoad.Imbalance(SiloLoads(expertLoads));
    }

    public bool Equals(ExpertAssignment? other) =>
        other is not null && other.Experts == Experts && other._bySilo.Length == _bySilo.Length
        && _bySilo.Zip(other._bySilo).All(p => p.First.AsSpan().SequenceEqual(p.Second));

    public override bool Equals(object? obj) => Equals(obj as ExpertAssignment);

    public override int GetHashCode()
    {
        var hash = new HashCode();
        hash.Add(Experts);
        foreach (int[] set in _bySilo)
        {
            hash.Add(set.Length);
            foreach (int e in set)
            {
                hash.Add(e);
            }
        }

        return hash.ToHashCode();
    }

    /// <summary>"silo 0: 0-15, 32-47, 3; silo 1: …" (ranges folded).</summary>
    public override string ToString() => string.Join("; ", _bySilo.Select((set, i) => Invariant($"silo {i}: {Ranges(set)}")));

    private static string Ranges(int[] set)
    {
        var parts = new List<string>();
        for (int i = 0; i < set.Length;)
        {
            int j = i;
            while (j + 1 < set.Length && set[j + 1] == set[j] + 1)
            {
                j++;
            }

            parts.Add(j == i ? Invariant($"{set[i]}") : Invariant($"{set[i]}-{set[j]}"));
            i = j + 1;
        }

        return string.Join(", ", parts);
    }

    private static string Invariant(FormattableString text) => text.ToString(CultureInfo.InvariantCulture);
}
