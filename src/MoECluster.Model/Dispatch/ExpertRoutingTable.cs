using System.Globalization;

namespace MoECluster.Model.Dispatch;

/// <summary>
/// The routing table of one MoE layer of one model: the single place that says which shards serve an expert, and
/// which shards exist (what a shard activation may hold). The default table (<see cref="Epoch"/> 0) has
/// <c>shards</c> contiguous ranges as equal as possible (the first N mod S shards get one expert more), one shard per
/// expert. A placement plan's table (<see cref="FromGroups"/>) gives each shard any set of experts, and an expert may
/// be in several shards — its replicas — among which the dispatcher splits its rows (<see cref="ShardDispatchPlan"/>).
/// Immutable; the cluster builds one per (model, layer, epoch) and swaps it whole.
/// </summary>
public sealed class ExpertRoutingTable
{
    private readonly int[][] _shardsOfExpert;
    private readonly Dictionary<string, ExpertShard> _byKey;

    /// <summary>The default table: <paramref name="shards"/> contiguous ranges, as equal as possible.</summary>
    public ExpertRoutingTable(string model, int layer, int experts, int shards)
        : this(model, layer, experts, ContiguousRanges(experts, shards), epoch: 0)
    {
    }

    /// <summary>A table of the given shard sets (shard i holds <paramref name="shardSets"/>[i]).</summary>
    /// <exception cref="ArgumentException">An expert outside the layer or in no shard.</exception>
    public ExpertRoutingTable(string model, int layer, int experts, IReadOnlyList<ExpertSet> shardSets, long epoch)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(shardSets);
        ArgumentOutOfRangeException.ThrowIfLessThan(experts, 1);
        ArgumentOutOfRangeException.ThrowIfNegative(epoch);
        if (shardSets.Count < 1)
        {
            throw new ArgumentException("a routing table has at least one shard", nameof(shardSets));
        }

        var lists = Enumerable.Range(0, experts).Select(_ => new List<int>(1)).ToArray();
        var shards = new List<ExpertShard>(shardSets.Count);
        for (int s = 0; s < shardSets.Count; s++)
        {
            var set = shardSets[s];
            if (set.End > experts)
            {
                throw new ArgumentException(Invariant($"shard {s} holds expert {set.End - 1}, outside 0..{experts - 1}"), nameof(shardSets));
            }

            foreach (int e in set)
            {
                lists[e].Add(s);
            }

            shards.Add(new ExpertShard(model, layer, s, set));
        }

        int missing = Array.FindIndex(lists, l => l.Count == 0);
        if (missing >= 0)
        {
            throw new ArgumentException(Invariant($"expert {missing} is in no shard"), nameof(shardSets));
        }

        _shardsOfExpert = [.. lists.Select(l => l.ToArray())];
        Model = model;
        Layer = layer;
        Shards = shards;
        Experts = experts;
        Epoch = epoch;
        HasReplicas = _shardsOfExpert.Any(s => s.Length > 1);
        _byKey = shards.ToDictionary(s => s.Key, StringComparer.Ordinal);
    }

    public string Model { get; }

    public int Layer { get; }

    /// <summary>0 for the default table; a placement plan's number otherwise (each plan of a model one higher).</summary>
    public long Epoch { get; }

    /// <summary>The shards of the layer, in index order (the order their partial sums are added in).</summary>
    public IReadOnlyList<ExpertShard> Shards { get; }

    /// <summary>The layer's routed experts.</summary>
    public int Experts { get; }

    /// <summary>Whether some expert is in more than one shard.</summary>
    public bool HasReplicas { get; }

    /// <summary>Replicas beyond one per expert: the extra expert memory of this table, in experts.</summary>
    public int ExtraReplicas => _shardsOfExpert.Sum(s => s.Length) - Experts;

    /// <summary>The indexes in <see cref="Shards"/> of the shards that serve <paramref name="expert"/>, ascending.</summary>
    public ReadOnlySpan<int> ShardsOf(int expert) => _shardsOfExpert[expert];

    /// <summary>The index of the first shard that serves <paramref name="expert"/> (its only one in a table without replicas).</summary>
    public int ShardOf(int expert) => _shardsOfExpert[expert][0];

    /// <summary>The first shard that serves <paramref name="expert"/> (its only one in a table without replicas).</summary>
    public ExpertShard ShardFor(int expert) => Shards[_shardsOfExpert[expert][0]];

    /// <summary>The shard whose grain key is <paramref name="key"/>, when this table names one.</summary>
    public bool TryGetShard(string key, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out ExpertShard? shard) =>
        _byKey.TryGetValue(key, out shard);

    /// <summary>Whether <paramref name="key"/> is the grain key of one of this table's shards.</summary>
    public bool Contains(string key) => _byKey.ContainsKey(key);

    /// <summary>
    /// The table of a placement given per group of shards: shard i is in group i mod <c>groups.Count</c> (the cluster's
    /// placement puts a group's shards on one expert silo and different groups on different silos), and group j's
    /// experts are split among its shards in ascending order, as equal as possible. <paramref name="shards"/> ≥ the
    /// number of groups.
    /// </summary>
    public static ExpertRoutingTable FromGroups(string model, int layer, int experts, int shards, IReadOnlyList<IReadOnlyList<int>> groups, long epoch)
    {
        ArgumentNullException.ThrowIfNull(groups);
        int g = groups.Count;
        if (g < 1 || shards < g)
        {
            throw new ArgumentOutOfRangeException(nameof(shards), shards, Invariant($"{shards} shards cannot hold {g} groups (one shard at least per group)"));
        }

        var sets = new ExpertSet[shards];
        for (int j = 0; j < g; j++)
        {
            int[] members = [.. groups[j].Order()];
            int count = (shards - j + g - 1) / g; // shards j, j + g, j + 2g, … below `shards`
            if (members.Length < count)
            {
                throw new ArgumentException(Invariant($"group {j} has {members.Length} experts for its {count} shards"), nameof(groups));
            }

            int offset = 0;
            for (int c = 0; c < count; c++)
            {
                int size = (members.Length / count) + (c < members.Length % count ? 1 : 0);
                sets[j + (c * g)] = ExpertSet.Of(members.AsSpan(offset, size).ToArray());
                offset += size;
            }
        }

        return new ExpertRoutingTable(model, layer, experts, sets, epoch);
    }

    /// <summary>The experts of each group of shards (shard i in group i mod <paramref name="groups"/>), each group's ascending and without repeats.</summary>
    public IReadOnlyList<IReadOnlyList<int>> Groups(int groups)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(groups, 1);
        var sets = Enumerable.Range(0, groups).Select(_ => new SortedSet<int>()).ToArray();
        foreach (var shard in Shards)
        {
            sets[shard.Index % groups].UnionWith(shard.Experts);
        }

        return [.. sets.Select(s => (IReadOnlyList<int>)[.. s])];
    }

    private static ExpertSet[] ContiguousRanges(int experts, int shards)
    {
        if (shards < 1 || shards > experts)
        {
            throw new ArgumentOutOfRangeException(nameof(shards), shards, $"shard count must be 1..{experts} (the layer's routed experts)");
        }

        var sets = new ExpertSet[shards];
        int first = 0;
        for (int s = 0; s < shards; s++)
        {
            int count = (experts / shards) + (s < experts % shards ? 1 : 0);
            sets[s] = ExpertSet.Range(first, count);
            first += count;
        }

        return sets;
    }

    private static string Invariant(FormattableString text) => text.ToString(CultureInfo.InvariantCulture);
}
