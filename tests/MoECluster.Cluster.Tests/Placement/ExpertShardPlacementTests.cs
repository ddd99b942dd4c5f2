using Microsoft.Extensions.Options;
using MoECluster.Cluster.Contracts;
using MoECluster.Cluster.Grains;
using MoECluster.Cluster.Hosting;
using MoECluster.Cluster.Placement;
using MoECluster.Model.Dispatch;
using Orleans.Runtime.Placement;
using static MoECluster.Cluster.Tests.Placement.PlacementFakes;

namespace MoECluster.Cluster.Tests.Placement;

/// <summary>
/// The Orleans side of placement, in process: the placement filter (expert silos only, pins honoured) and the
/// placement director, which places where the injected policy says.
/// </summary>
public sealed class ExpertShardPlacementTests
{
    private static PlacementTarget Target(string key) =>
        new(GrainId.Create("expertshard", key), [], new GrainInterfaceType("iexpertshard"), 0);

    private static FakeCluster Cluster() =>
        new FakeCluster().Add(0, SiloRoles.Frontend).Add(1, SiloRoles.Expert).Add(2, SiloRoles.Expert).Add(3, SiloRoles.Expert).Add(4, SiloRoles.Expert, SiloStatus.Dead);

    private static IOptions<MoeClusterOptions> Options(params (string Key, string Silo)[] pins)
    {
        var options = new MoeClusterOptions();
        foreach (var (key, silo) in pins)
        {
            options.Pins[key] = silo;
        }

        return Microsoft.Extensions.Options.Options.Create(options);
    }

    private static IEnumerable<SiloAddress> Filter(FakeCluster cluster, IOptions<MoeClusterOptions> options, string key, IEnumerable<SiloAddress> silos) =>
        new ExpertSilosPlacementFilterDirector(cluster, cluster, options).Filter(new ExpertSilosPlacementFilter(), Target(key), silos);

    private static Task<SiloAddress> Place(FakeCluster cluster, IShardPlacementPolicy policy, IOptions<MoeClusterOptions> options, string key) =>
        new ExpertShardPlacementDirector(cluster, cluster, policy, options)
            .OnAddActivation(ExpertShardPlacement.Instance, Target(key), cluster.Context(s => Filter(cluster, options, key, s)));

    [Fact]
    public void The_shard_grain_carries_the_expert_silos_placement_filter()
    {
        Assert.Single(typeof(ExpertShardGrain).GetCustomAttributes(typeof(ExpertSilosPlacementFilterAttribute), inherit: false));
    }

    [Fact]
    public void The_filter_keeps_expert_silos_only()
    {
        var cluster = Cluster();
        string key = new ExpertRoutingTable("m", 1, 10, 4).Shards[0].Key;
        Assert.Equal([Silo(1), Silo(2), Silo(3)], Filter(cluster, Options(), key, [Silo(0), Silo(1), Silo(2), Silo(3)]));
    }

    [Fact]
    public void The_filter_keeps_only_the_pinned_silo_of_a_pinned_shard_and_narrows_nothing_while_that_silo_is_absent()
    {
        var cluster = Cluster();
        string key = new ExpertRoutingTable("m", 1, 10, 4).Shards[0].Key;
        Assert.Equal([Silo(2)], Filter(cluster, Options((key, "expert-2")), key, [Silo(0), Silo(1), Silo(2), Silo(3)]));
        Assert.Equal([Silo(1), Silo(3)], Filter(cluster, Options((key, "expert-2")), key, [Silo(0), Silo(1), Silo(3)]));
    }

    [Fact]
    public async Task The_director_places_every_shard_of_an_uneven_split_where_the_default_policy_says()
    {
        var cluster = Cluster();
        var policy = new SpreadByIndexPlacementPolicy();
        var experts = Experts(1, 2, 3);
        var map = new ExpertRoutingTable("m", 1, 10, 4);
        List<SiloAddress> placed = [];
        foreach (var shard in map.Shards)
        {
            var silo = await Place(cluster, policy, Options(), shard.Key);
            Assert.Equal(policy.Choose(new ShardIdentity(shard), experts, NoPins), silo);
            placed.Add(silo);
        }

        Assert.Equal([Silo(1), Silo(2), Silo(3)], placed.Distinct().Order());
    }

    [Fact]
    public async Task The_director_asks_the_injected_policy()
    {
        var cluster = Cluster();
        var shard = new ExpertRoutingTable("m", 1, 10, 4).Shards[1];
        var policy = new ChosenSilo(Silo(3));
        Assert.Equal(Silo(3), await Place(cluster, policy, Options(), shard.Key));
        Assert.Equal(new ShardIdentity(shard), policy.Asked);
    }

    [Fact]
    public async Task The_director_places_a_pinned_shard_on_its_silo_and_refuses_it_naming_the_pin_while_that_silo_is_absent()
    {
        var cluster = Cluster();
        string key = new ExpertRoutingTable("m", 1, 10, 4).Shards[0].Key;
        Assert.Equal(Silo(3), await Place(cluster, new SpreadByIndexPlacementPolicy(), Options((key, "expert-3")), key));

        var e = await Assert.ThrowsAsync<OrleansException>(() => Place(cluster, new SpreadByIndexPlacementPolicy(), Options((key, "expert-4")), key));
        Assert.Contains($"shard {key} is pinned to silo 'expert-4'", e.Message, StringComparison.Ordinal);
        Assert.Contains("expert-1, expert-2, expert-3", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task The_director_refuses_a_shard_when_there_is_no_expert_silo_or_the_key_is_not_a_shard_key()
    {
        var frontendOnly = new FakeCluster().Add(0, SiloRoles.Frontend);
        string key = new ExpertRoutingTable("m", 1, 10, 4).Shards[0].Key;
        var none = await Assert.ThrowsAsync<OrleansException>(() => Place(frontendOnly, new SpreadByIndexPlacementPolicy(), Options(), key));
        Assert.Contains("no active expert silo", none.Message, StringComparison.Ordinal);

        var malformed = await Assert.ThrowsAsync<FormatException>(() => Place(Cluster(), new SpreadByIndexPlacementPolicy(), Options(), "m/1/0-3"));
        Assert.Contains("{model}/{layer}/s{index}/{ranges}", malformed.Message, StringComparison.Ordinal);
    }

    private sealed class ChosenSilo(SiloAddress silo) : IShardPlacementPolicy
    {
        public ShardIdentity? Asked { get; private set; }

        public SiloAddress? Choose(ShardIdentity shard, IReadOnlyList<ExpertSilo> activeExpertSilos, IReadOnlyDictionary<string, string> pins)
        {
            Asked = shard;
            return silo;
        }
    }
}
