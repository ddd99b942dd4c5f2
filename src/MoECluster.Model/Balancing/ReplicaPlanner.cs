namespace MoECluster.Model.Balancing;

/// <summary>What the planner may do: how many replicas beyond one per expert (the memory budget, in experts), and the imbalance below which a layer is left as it is.</summary>
public sealed record ReplicaPlanOptions(int RedundantExperts, double LeaveAloneBelow = 1.10)
{
    public void Validate()
    {
        ArgumentOutOfRangeException.ThrowIfNegative(RedundantExperts);
        ArgumentOutOfRangeException.ThrowIfLessThan(LeaveAloneBelow, 1.0);
    }
}

/// <summary>A plan: the new assignment (or the current one, unchanged), the imbalance before and after, and how many experts a silo must newly load.</summary>
public sealed record ReplicaPlan(ExpertAssignment Assignment, bool Changed, double ImbalanceBefore, double ImbalanceAfter, int NewlyLoaded, string Reason);

/// <summary>
/// Chooses which experts to replicate and where, from measured expert loads (tokens per expert over a recent window),
/// minimising the most loaded silo within a budget of extra replicas — the approach of DeepSeek's EPLB and
/// Megatron-Core's replica planner, for one layer:
/// <list type="number">
/// <item>Replica counts: each extra replica goes, one at a time, to the expert with the largest load per replica that has
/// fewer replicas than there are silos (anti-affinity caps it there).</item>
/// <item>Packing: experts in the order of their load per replica, heaviest first; an expert's replicas, each carrying
/// its load ÷ its replica count, go to that many distinct silos, the least loaded of those with a free slot (⌊replicas ÷
/// silos⌋ per silo and one more on replicas mod silos of them, so expert memory differs by at most one expert); a tie
/// prefers a silo that already serves the expert (nothing to load), then the lower silo.</item>
/// </list>
/// Deterministic (ties broken by index), pure, and conservative: a layer already within <see cref="ReplicaPlanOptions.LeaveAloneBelow"/>,
/// or one the plan would not improve, keeps its assignment.
/// </summary>
public static class ReplicaPlanner
{
    public static ReplicaPlan Plan(IReadOnlyList<double> expertLoads, ExpertAssignment current, ReplicaPlanOptions options)
    {
        ArgumentNullException.ThrowIfNull(expertLoads);
        ArgumentNullException.ThrowIfNull(current);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        if (expertLoads.Count != current.Experts)
        {
            throw new ArgumentException($"{expertLoads.Count} loads for {current.Experts} experts", nameof(expertLoads));
        }

        if (expertLoads.Any(l => !double.IsFinite(l) || l < 0))
        {
            throw new ArgumentException("expert loads must be finite and non-negative", nameof(expertLoads));
        }

        double before = current.Imbalance(expertLoads);
        if (expertLoads.Sum() == 0)
        {
            return new ReplicaPlan(current, false, before, before, 0, "no load measured");
        }

        if (before < options.LeaveAloneBelow)
        {
            return new ReplicaPlan(current, false, before, before, 0, $"imbalance {before:F3} is below {options.LeaveAloneBelow:F2}: left alone");
        }

        int experts = current.Experts, silos = current.Silos;
        int[] replicas = ReplicaCounts(expertLoads, silos, options.RedundantExperts);
        var assignment = Pack(expertLoads, replicas, current);
        double after = assignment.Imbalance(expertLoads);
        if (after >= before)
        {
            return new ReplicaPlan(current, false, before, before, 0, $"no better assignment found (imbalance {before:F3})");
        }

        int newlyLoaded = Enumerable.Range(0, silos).Sum(s => assignment.ExpertsOf(s).Count(e => !current.Holds(s, e)));
        return new ReplicaPlan(assignment, true, before, after, newlyLoaded,
            $"imbalance {before:F3} -> {after:F3} with {assignment.ExtraReplicas} extra replicas of {experts} experts; {newlyLoaded} expert loads");
    }

    /// <summary>One replica each, then the extra ones to the largest load per replica (ties: lower expert), at most one per silo.</summary>
    internal static int[] ReplicaCounts(IReadOnlyList<double> loads, int silos, int extra)
    {
        var counts = Enumerable.Repeat(1, loads.Count).ToArray();
        for (int k = 0; k < extra; k++)
        {
            int best = -1;
            for (int e = 0; e < loads.Count; e++)
            {
                if (counts[e] < silos && loads[e] > 0 && (best < 0 || loads[e] / counts[e] > loads[best] / counts[best]))
                {
                    best = e;
                }
            }

            if (best < 0)
            {
                break;
            }

            counts[best]++;
        }

        return counts;
    }

    private static ExpertAssignment Pack(IReadOnlyList<double> loads, int[] replicas, ExpertAssignment current)
    {
        int silos = current.Silos;

        // Experts heaviest replica first (ties: lower expert); all of an expert's replicas are placed together, on
        // distinct silos.
        int[] order = [.. Enumerable.Range(0, replicas.Length).OrderByDescending(e => loads[e] / replicas[e]).ThenBy(e => e)];

        // Expert memory within one expert across silos: ⌊units ÷ silos⌋ each, and one more on (units mod silos) of them.
        int units = replicas.Sum();
        int floor = units / silos, larger = units % silos;
        var sets = Enumerable.Range(0, silos).Select(_ => new List<int>()).ToArray();
        var siloLoad = new double[silos];
        foreach (int expert in order)
        {
            double unit = loads[expert] / replicas[expert];

            // Within the slots when enough silos have room; otherwise (rare: many heavy replicas late) the least loaded
            // silos, slots aside, so that every replica lands on a silo of its own.
            var ranked = Enumerable.Range(0, silos)
                .OrderBy(s => siloLoad[s])
                .ThenBy(s => current.Holds(s, expert) ? 0 : 1) // a tie prefers the silo that already serves it
                .ThenBy(s => s)
                .ToList();
            var chosen = new List<int>();
            int atLarger = sets.Count(x => x.Count > floor);
            foreach (int s in ranked)
            {
                if (chosen.Count == replicas[expert])
                {
                    break;
                }

                if (sets[s].Count < floor)
                {
                    chosen.Add(s);
                }
                else if (sets[s].Count == floor && atLarger < larger)
                {
                    chosen.Add(s);
                    atLarger++;
                }
            }

            if (chosen.Count < replicas[expert])
            {
                chosen = [.. ranked.Take(replicas[expert])];
            }

            foreach (int s in chosen)
            {
                sets[s].Add(expert);
                siloLoad[s] += unit;
            }
        }

        return new ExpertAssignment(replicas.Length, sets);
    }
}
