using MoECluster.Model.Balancing;

namespace MoECluster.Model.Tests.Balancing;

/// <summary>
/// The hot-expert planner: deterministic, within its replica budget, never two replicas of an expert on one silo, a
/// balanced layer left alone, and a Zipf-skewed Super layer brought within 1.15 of balance.
/// </summary>
public sealed class ReplicaPlannerTests
{
    /// <summary>Tokens per expert under Zipf(s) routing, expert e of rank e + 1, scaled to <paramref name="total"/>.</summary>
    private static double[] Zipf(int experts, double s, double total = 1e6)
    {
        double[] w = [.. Enumerable.Range(1, experts).Select(r => Math.Pow(r, -s))];
        double sum = w.Sum();
        return [.. w.Select(x => x / sum * total)];
    }

    [Fact]
    public void Todays_placement_of_contiguous_shards_round_robin_is_the_starting_assignment()
    {
        var a = ExpertAssignment.FromContiguousShards(64, 4, 2);
        Assert.Equal([.. Enumerable.Range(0, 16), .. Enumerable.Range(32, 16)], a.ExpertsOf(0));
        Assert.Equal([.. Enumerable.Range(16, 16), .. Enumerable.Range(48, 16)], a.ExpertsOf(1));
        Assert.Equal(0, a.ExtraReplicas);
        Assert.Equal("silo 0: 0-15, 32-47; silo 1: 16-31, 48-63", a.ToString());
    }

    [Fact]
    public void A_zipf_skewed_super_layer_on_two_silos_goes_from_at_least_1_5_to_at_most_1_15_with_12_5_percent_more_experts()
    {
        double[] loads = Zipf(64, 1.2);
        var current = ExpertAssignment.FromContiguousShards(64, 4, 2);
        Assert.True(current.Imbalance(loads) >= 1.5, $"before: {current.Imbalance(loads):F3}");

        var plan = ReplicaPlanner.Plan(loads, current, new ReplicaPlanOptions(RedundantExperts: 8));
        Assert.True(plan.Changed, plan.Reason);
        Assert.True(plan.ImbalanceAfter <= 1.15, plan.Reason);
        Assert.Equal(plan.ImbalanceAfter, plan.Assignment.Imbalance(loads), 12);
        Assert.True(plan.Assignment.ExtraReplicas <= 8, plan.Reason);
        Assert.True(plan.NewlyLoaded > 0, plan.Reason);
    }

    [Theory]
    [InlineData(64, 4, 2, 8, 1.2)]
    [InlineData(64, 8, 4, 4, 1.0)]
    [InlineData(512, 16, 8, 32, 1.4)]
    [InlineData(8, 2, 2, 6, 2.0)]
    [InlineData(16, 4, 3, 0, 1.2)]
    public void Plans_respect_the_budget_anti_affinity_and_balanced_memory_and_are_deterministic(int experts, int shards, int silos, int budget, double s)
    {
        // A shuffled Zipf: the hot experts anywhere in the range.
        var rng = new Random(experts * 31 + silos);
        double[] loads = [.. Zipf(experts, s).OrderBy(_ => rng.Next())];
        var current = experts % shards == 0 ? ExpertAssignment.FromContiguousShards(experts, shards, silos) : throw new InvalidOperationException();
        var options = new ReplicaPlanOptions(budget);
        var plan = ReplicaPlanner.Plan(loads, current, options);
        var again = ReplicaPlanner.Plan([.. loads], current, options);
        Assert.Equal(plan.Assignment, again.Assignment);
        Assert.Equal(plan.Reason, again.Reason);

        var a = plan.Assignment;
        Assert.True(a.ExtraReplicas <= budget, plan.Reason);
        Assert.All(Enumerable.Range(0, experts), e => Assert.InRange(a.Replicas[e], 1, silos));
        Assert.True(plan.ImbalanceAfter <= plan.ImbalanceBefore);
        if (plan.Changed)
        {
            // A new assignment spreads expert memory evenly (today's may not: 4 shards on 3 silos).
            int[] sizes = [.. Enumerable.Range(0, silos).Select(x => a.ExpertsOf(x).Count)];
            Assert.True(sizes.Max() - sizes.Min() <= 1, $"experts per silo {string.Join(", ", sizes)}");
            Assert.True(plan.ImbalanceAfter < plan.ImbalanceBefore, plan.Reason);
        }
    }

    [Fact]
    public void The_extra_replicas_go_to_the_hottest_experts_one_silo_each()
    {
        double[] loads = [100, 10, 10, 10, 10, 10, 10, 40];
        var plan = ReplicaPlanner.Plan(loads, ExpertAssignment.FromContiguousShards(8, 2, 2), new ReplicaPlanOptions(2));

        // Expert 0 gets one extra replica (100 / 2 = 50 > 40), then expert 7 (40 > 100 / 2 is false: 50 > 40, but
        // expert 0 already has one per silo), so expert 7.
        Assert.Equal([2, 1, 1, 1, 1, 1, 1, 2], plan.Assignment.Replicas);
        Assert.True(plan.Assignment.Holds(0, 0) && plan.Assignment.Holds(1, 0));
        Assert.True(plan.Assignment.Holds(0, 7) && plan.Assignment.Holds(1, 7));
    }

    [Fact]
    public void A_uniform_load_is_left_alone()
    {
        var current = ExpertAssignment.FromContiguousShards(64, 4, 2);
        double[] loads = [.. Enumerable.Range(0, 64).Select(e => 1000.0 + (e % 3))];
        var plan = ReplicaPlanner.Plan(loads, current, new ReplicaPlanOptions(8));
        Assert.False(plan.Changed);
        Assert.Same(current, plan.Assignment);
        Assert.Contains("left alone", plan.Reason, StringComparison.Ordinal);

        var none = ReplicaPlanner.Plan(new double[64], current, new ReplicaPlanOptions(8));
        Assert.False(none.Changed);
        Assert.Same(current, none.Assignment);
    }

    [Fact]
    public void Bad_input_is_refused()
    {
        var current = ExpertAssignment.FromContiguousShards(8, 2, 2);
        Assert.Throws<ArgumentException>(() => ReplicaPlanner.Plan(new double[7], current, new ReplicaPlanOptions(1)));
        Assert.Throws<ArgumentException>(() => ReplicaPlanner.Plan([1, 1, 1, double.NaN, 1, 1, 1, 1], current, new ReplicaPlanOptions(1)));
        Assert.Throws<ArgumentOutOfRangeException>(() => ReplicaPlanner.Plan(new double[8], current, new ReplicaPlanOptions(-1)));
        Assert.Throws<ArgumentException>(() => new ExpertAssignment(4, [[0, 1], [1, 1, 2, 3]]));
        Assert.Throws<ArgumentException>(() => new ExpertAssignment(4, [[0, 1], [2]]));
        Assert.Throws<ArgumentException>(() => new ExpertAssignment(4, [[0, 1, 4], [2, 3]]));
    }
}
