using MoECluster.Model.Dispatch;
using MoECluster.Model.Routing;

namespace MoECluster.Model.Tests.Dispatch;

public sealed class ExpertRoutingTableTests
{
    [Theory]
    [InlineData(10, 4)]
    [InlineData(24, 5)]
    [InlineData(16, 16)]
    public void Every_expert_has_the_shard_that_owns_it_and_every_shard_is_found_by_its_key(int experts, int shards)
    {
        var table = new ExpertRoutingTable("m", 2, experts, shards);
        Assert.Equal(("m", 2, experts), (table.Model, table.Layer, table.Experts));
        Assert.Equal(Enumerable.Range(0, shards), table.Shards.Select(s => s.Index));
        for (int e = 0; e < experts; e++)
        {
            Assert.True(table.ShardFor(e).Holds(e));
            Assert.Same(table.Shards[table.ShardOf(e)], table.ShardFor(e));
        }

        foreach (var shard in table.Shards)
        {
            Assert.True(table.TryGetShard(shard.Key, out var found));
            Assert.Same(shard, found);
            Assert.True(table.Contains(shard.Key));
        }
    }

    [Theory]
    [InlineData("m/2/0-10")]
    [InlineData("m/3/0-3")]
    [InlineData("other/2/0-3")]
    [InlineData("m/2/0-3/alt")]
    public void Keys_of_ranges_the_table_does_not_name_are_not_found(string key)
    {
        var table = new ExpertRoutingTable("m", 2, 10, 4);
        Assert.False(table.Contains(key));
        Assert.False(table.TryGetShard(key, out _));
    }

    [Fact]
    public void A_plans_pairs_are_its_K_slots_per_token_in_slot_order()
    {
        var plan = new RoutingPlan(3, 2);
        int[] experts = [4, 1, 0, 7, 2, 3];
        experts.CopyTo(plan.Experts, 0);
        for (int i = 0; i < 6; i++)
        {
            plan.Weights[i] = i + 0.5f;
        }

        var pairs = RoutedPairs.Of(plan);
        Assert.Equal([0, 2, 4, 6], pairs.Offsets);
        Assert.Equal(3, pairs.Rows);
        Assert.Equal(6, pairs.Count);
        Assert.Equal([0, 7], pairs.ExpertsOf(1).ToArray());
        Assert.Equal([2.5f, 3.5f], pairs.WeightsOf(1).ToArray());
    }
}
