using MoECluster.Cluster.Placement;
using MoECluster.Model.Dispatch;
using static MoECluster.Cluster.Tests.Placement.PlacementFakes;

namespace MoECluster.Cluster.Tests.Placement;

/// <summary>The default placement policy, in process: uneven splits, pins, alternates, silos joining and leaving.</summary>
public sealed class SpreadByIndexPlacementPolicyTests
{
    private readonly SpreadByIndexPlacementPolicy _policy = new();

    private Dictionary<ExpertShard, SiloAddress> Place(ExpertRoutingTable map, IReadOnlyList<ExpertSilo> silos, IReadOnlyDictionary<string, string>? pins = null) =>
        map.Shards.ToDictionary(s => s, s => _policy.Choose(new ShardIdentity(s), silos, pins ?? NoPins) ?? throw new InvalidOperationException($"{s.Key} not placed"));

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(5)]
    public void Ten_experts_in_four_shards_on_three_expert_silos_leave_no_silo_empty(int layer)
    {
        var silos = Experts(1, 2, 3);
        var placed = Place(new ExpertRoutingTable("m", layer, 10, 4), silos);
        Assert.Equal(silos.Select(s => s.Address).Order(), placed.Values.Distinct().Order());
    }

    [Theory]
    [InlineData(0, 3)]
    [InlineData(1, 3)]
    [InlineData(0, 5)]
    [InlineData(3, 5)]
    public void Twenty_four_experts_in_five_shards_place_every_shard_index(int layer, int silos)
    {
        var map = new ExpertRoutingTable("m", layer, 24, 5);
        var placed = Place(map, Experts([.. Enumerable.Range(1, silos)]));
        Assert.Equal([0, 1, 2, 3, 4], placed.Keys.Select(s => ExpertShard.ParseKey(s.Key).Index).Order());

        // Evenly, index 4 included: 5 shards on 3 silos are 2 + 2 + 1, on 5 silos one each.
        int[] expected = silos == 3 ? [1, 2, 2] : [1, 1, 1, 1, 1];
        Assert.Equal(expected, placed.Values.GroupBy(s => s).Select(g => g.Count()).Order());
    }

    [Theory]
    [InlineData(64, 4, 2)]
    [InlineData(10, 4, 3)]
    [InlineData(24, 5, 4)]
    [InlineData(7, 7, 5)]
    public void Each_layer_spreads_its_shards_evenly_over_the_expert_silos(int experts, int shards, int silos)
    {
        for (int layer = 0; layer < 4; layer++)
        {
            var counts = Place(new ExpertRoutingTable("m", layer, experts, shards), Experts([.. Enumerable.Range(1, silos)]))
                .Values.GroupBy(s => s).Select(g => g.Count()).ToList();
            Assert.Equal(Math.Min(shards, silos), counts.Count);
            Assert.True(counts.Max() - counts.Min() <= 1, string.Join(", ", counts));
        }
    }

    [Fact]
    public void The_choice_does_not_depend_on_the_order_the_silos_are_listed_in()
    {
        var map = new ExpertRoutingTable("m", 2, 24, 5);
        Assert.Equal(Place(map, Experts(1, 2, 3, 4)), Place(map, Experts(3, 1, 4, 2)));
    }

    [Fact]
    public void An_alternate_sits_on_another_silo_than_its_shard_whenever_there_are_two()
    {
        for (int n = 1; n <= 4; n++)
        {
            var silos = Experts([.. Enumerable.Range(1, n)]);
            foreach (var shard in new ExpertRoutingTable("m", 1, 10, 4).Shards)
            {
                var own = _policy.Choose(new ShardIdentity(shard), silos, NoPins);
                var alternate = _policy.Choose(new ShardIdentity(shard, Alternate: true), silos, NoPins);
                Assert.NotNull(alternate);
                Assert.Equal(n == 1, own!.Equals(alternate));
            }
        }
    }

    [Fact]
    public void A_pinned_shard_goes_to_its_silo_and_its_alternate_to_another()
    {
        var silos = Experts(1, 2, 3);
        var map = new ExpertRoutingTable("m", 1, 10, 4);
        var pinned = map.Shards[0];
        var pins = new Dictionary<string, string> { [pinned.Key] = "expert-3" };
        var unpinned = Place(map, silos);
        var placed = Place(map, silos, pins);

        Assert.Equal(Silo(3), placed[pinned]);
        var alternate = _policy.Choose(new ShardIdentity(pinned, Alternate: true), silos, pins);
        Assert.NotNull(alternate);
        Assert.NotEqual(Silo(3), alternate);

        // The pin moves only its own shard.
        Assert.All(map.Shards.Skip(1), s => Assert.Equal(unpinned[s], placed[s]));
    }

    [Fact]
    public void A_shard_pinned_to_a_silo_that_is_not_an_active_expert_silo_is_placed_nowhere()
    {
        var shard = new ExpertRoutingTable("m", 1, 10, 4).Shards[1];
        var pins = new Dictionary<string, string> { [shard.Key] = "expert-9" };
        Assert.Null(_policy.Choose(new ShardIdentity(shard), Experts(1, 2, 3), pins));
        Assert.Null(_policy.Choose(new ShardIdentity(shard), [], NoPins));
    }

    [Fact]
    public void A_pinned_shard_stays_on_its_silo_while_other_silos_join_and_leave()
    {
        var shard = new ExpertRoutingTable("m", 1, 24, 5).Shards[3];
        var pins = new Dictionary<string, string> { [shard.Key] = "expert-2" };
        int[][] views = [[1, 2], [1, 2, 3], [2, 3], [2, 3, 4, 5], [2]];
        Assert.All(views, ids => Assert.Equal(Silo(2), _policy.Choose(new ShardIdentity(shard), Experts(ids), pins)));
    }

    [Fact]
    public void When_a_silo_leaves_its_shards_go_to_the_survivors_and_none_is_left_empty()
    {
        var map = new ExpertRoutingTable("m", 1, 10, 4);
        var before = Place(map, Experts(1, 2, 3));
        var after = Place(map, Experts(1, 3));
        Assert.DoesNotContain(Silo(2), after.Values);
        Assert.Equal([Silo(1), Silo(3)], after.Values.Distinct().Order());
        Assert.Contains(Silo(2), before.Values);
    }

    [Fact]
    public void When_a_silo_joins_it_gets_shards_and_when_it_leaves_again_every_shard_returns_where_it_was()
    {
        var map = new ExpertRoutingTable("m", 2, 24, 5);
        var before = Place(map, Experts(1, 2));
        var joined = Place(map, Experts(1, 2, 3));
        Assert.Contains(Silo(3), joined.Values);
        Assert.Equal(before, Place(map, Experts(1, 2)));
    }

    [Fact]
    public void A_shards_target_depends_on_its_own_identity_not_on_the_other_shards()
    {
        // The same shard (same index and layer) goes to the same silo whatever else is being placed.
        var silos = Experts(1, 2, 3);
        var shard = new ExpertRoutingTable("m", 4, 24, 5).Shards[2];
        Assert.Equal(_policy.Choose(new ShardIdentity(shard), silos, NoPins), _policy.Choose(ShardIdentity.Parse(shard.Key), silos, NoPins));
        Assert.Equal(Silo((2 + 4) % 3 + 1), _policy.Choose(new ShardIdentity(shard), silos, NoPins));
    }
}
