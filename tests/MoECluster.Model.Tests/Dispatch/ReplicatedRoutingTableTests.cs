using MoECluster.Model.Balancing;
using MoECluster.Model.Dispatch;
using MoECluster.Model.Routing;

namespace MoECluster.Model.Tests.Dispatch;

public sealed class ReplicatedRoutingTableTests
{
    [Theory]
    [InlineData(new[] { 0, 1, 2, 3 }, "0-4")]
    [InlineData(new[] { 3, 17, 18 }, "3-4,17-19")]
    [InlineData(new[] { 40, 2, 1, 7 }, "1-3,7-8,40-41")]
    public void An_expert_set_is_written_as_its_maximal_ranges_and_parses_back(int[] ids, string text)
    {
        var set = ExpertSet.Of(ids);
        Assert.Equal(text, set.ToString());
        Assert.True(ExpertSet.TryParse(text, out var parsed));
        Assert.Equal(set, parsed);
        Assert.Equal(ids.Order(), parsed);
    }

    [Theory]
    [InlineData("")]
    [InlineData("4-4")]
    [InlineData("5-3")]
    [InlineData("0-4,4-8")] // touching: not maximal, "0-8" is the one text of that set
    [InlineData("0-4,2-8")] // overlapping
    [InlineData("8-9,0-4")] // unsorted
    [InlineData("0-4,")]
    [InlineData("-1-4")]
    [InlineData("0-65537")]
    public void Only_the_one_canonical_text_of_a_set_parses(string text)
    {
        Assert.False(ExpertSet.TryParse(text, out _));
    }

    [Fact]
    public void A_shard_key_names_its_set_and_parses_back_to_the_same_shard()
    {
        var shard = new ExpertShard("latent", 1, 2, ExpertSet.Of([3, 17, 18]));
        Assert.Equal("latent/1/s2/3-4,17-19", shard.Key);
        Assert.Equal(shard, ExpertShard.ParseKey(shard.Key));
        Assert.True(shard.Holds(17));
        Assert.False(shard.Holds(16));
        Assert.False(ExpertShard.TryParseKey("latent/1/s2/3-4,4-5", out _, out string? error));
        Assert.Contains("latent/1/s2/3-4,4-5", error);
    }

    [Fact]
    public void A_plan_table_puts_each_groups_experts_on_the_shards_of_that_group_and_lists_every_replica()
    {
        // Two groups (silos) over four shards: shards 0 and 2 are group 0, shards 1 and 3 group 1. Expert 5 is on both.
        IReadOnlyList<int>[] groups = [[0, 1, 2, 3, 4, 5], [5, 6, 7, 8, 9]];
        var table = ExpertRoutingTable.FromGroups("m", 1, 10, 4, groups, epoch: 3);
        Assert.Equal(3, table.Epoch);
        Assert.True(table.HasReplicas);
        Assert.Equal(1, table.ExtraReplicas);
        Assert.Equal(["0-3", "5-8", "3-6", "8-10"], table.Shards.Select(s => s.Experts.ToString()));
        Assert.Equal([1, 2], table.ShardsOf(5).ToArray());
        Assert.Equal([0], table.ShardsOf(0).ToArray());
        Assert.Equal(groups.Select(g => g.ToArray()), table.Groups(2).Select(g => g.ToArray()));
        Assert.Equal(new ExpertAssignment(10, groups), ExpertAssignment.FromTable(table, 2));
    }

    [Fact]
    public void A_plan_table_that_leaves_an_expert_out_or_names_one_outside_the_layer_is_refused()
    {
        Assert.Throws<ArgumentException>(() => new ExpertRoutingTable("m", 1, 4, [ExpertSet.Of([0, 1]), ExpertSet.Of([3])], 1));
        Assert.Throws<ArgumentException>(() => new ExpertRoutingTable("m", 1, 4, [ExpertSet.Of([0, 1]), ExpertSet.Of([2, 3, 4])], 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => ExpertRoutingTable.FromGroups("m", 1, 4, 1, [[0, 1], [2, 3]], 1));
    }

    [Fact]
    public void A_replicated_experts_pairs_go_once_each_to_the_replica_with_the_least_outstanding_work()
    {
        // Expert 5 on shards 1 and 2; every token chooses it.
        var table = ExpertRoutingTable.FromGroups("m", 1, 10, 4, [[0, 1, 2, 3, 4, 5], [5, 6, 7, 8, 9]], 1);
        int tokens = 200;
        var plan = new RoutingPlan(tokens, 2);
        var rng = new Random(7);
        for (int t = 0; t < tokens; t++)
        {
            int other = rng.Next(9);
            plan.Experts[2 * t] = 5;
            plan.Experts[(2 * t) + 1] = other >= 5 ? other + 1 : other;
            plan.Weights[2 * t] = 0.6f;
            plan.Weights[(2 * t) + 1] = 0.4f;
        }

        // Every (token, expert) pair lands exactly once, on a shard that holds the expert.
        var idle = ShardDispatchPlan.Build(plan, table);
        var seen = new HashSet<(int Token, int Expert)>();
        foreach (var d in idle)
        {
            for (int row = 0; row < d.Rows; row++)
            {
                foreach (int e in d.Pairs.ExpertsOf(row))
                {
                    Assert.True(d.Shard.Holds(e));
                    Assert.True(seen.Add((d.Tokens[row], e)));
                }
            }
        }

        Assert.Equal(2 * tokens, seen.Count);
        int Pairs(IReadOnlyList<ShardDispatch> ds, int shard, int expert) =>
            ds.Where(d => d.Shard.Index == shard).Sum(d => d.Pairs.Experts.Count(e => e == expert));

        // With nothing in flight the split evens the two replicas' work.
        long[] work = [.. Enumerable.Range(0, 4).Select(s => (long)idle.Where(d => d.Shard.Index == s).Sum(d => d.Pairs.Count))];
        Assert.InRange(Math.Abs(work[1] - work[2]), 0, 2); // a pair of the expert evens them, the token's other pair may add one more

        // A replica with much work in flight gets none of the expert's rows until the other catches up.
        var busy = ShardDispatchPlan.Build(plan, table, [0, 1000, 0, 0]);
        Assert.Equal(0, Pairs(busy, 1, 5));
        Assert.Equal(tokens, Pairs(busy, 2, 5));

        // Deterministic.
        var again = ShardDispatchPlan.Build(plan, table);
        Assert.Equal(idle.Select(d => (d.Shard.Index, d.Tokens, d.Pairs.Experts)), again.Select(d => (d.Shard.Index, d.Tokens, d.Pairs.Experts)), new DispatchComparer());
    }

    [Fact]
    public void A_tie_between_replicas_goes_to_the_one_the_token_already_has_a_row_on()
    {
        // Expert 1 on shards 0 and 1; expert 0 only on shard 1. One token choosing both: one row, on shard 1.
        var table = new ExpertRoutingTable("m", 1, 3, [ExpertSet.Of([1, 2]), ExpertSet.Of([0, 1])], 1);
        var plan = new RoutingPlan(1, 2);
        plan.Experts[0] = 0;
        plan.Experts[1] = 1;
        plan.Weights[0] = plan.Weights[1] = 0.5f;

        // Shard 1 has one pair (expert 0) when expert 1 is placed; shard 0 starts one pair ahead so the two tie.
        var dispatches = ShardDispatchPlan.Build(plan, table, [1, 0]);
        var single = Assert.Single(dispatches);
        Assert.Equal(1, single.Shard.Index);
        Assert.Equal([0, 1], single.Pairs.Experts);
    }

    [Fact]
    public void Expected_rows_are_refused_for_a_table_with_replicas()
    {
        var table = ExpertRoutingTable.FromGroups("m", 1, 10, 2, [[0, 1, 2, 3, 4, 5], [5, 6, 7, 8, 9]], 1);
        Assert.Throws<ArgumentException>(() => ShardDispatchPlan.ExpectedRowsPerToken(table, 2));
    }

    private sealed class DispatchComparer : IEqualityComparer<(int, int[], int[])>
    {
        public bool Equals((int, int[], int[]) x, (int, int[], int[]) y) => x.Item1 == y.Item1 && x.Item2.SequenceEqual(y.Item2) && x.Item3.SequenceEqual(y.Item3);

        public int GetHashCode((int, int[], int[]) obj) => obj.Item1;
    }
}
