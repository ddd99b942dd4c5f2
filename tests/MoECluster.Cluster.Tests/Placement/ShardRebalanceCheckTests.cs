using Microsoft.Extensions.DependencyInjection;
using MoECluster.Cluster.Hosting;
using MoECluster.Cluster.Placement;
using MoECluster.Model.Dispatch;
using static MoECluster.Cluster.Tests.Placement.PlacementFakes;

namespace MoECluster.Cluster.Tests.Placement;

/// <summary>
/// A shard's periodic rebalance check asks the injected policy — the one the placement director asks — so a policy
/// registered in place of the default is not undone by the default's rule.
/// </summary>
public sealed class ShardRebalanceCheckTests
{
    /// <summary>Another policy: every shard on the last expert silo by address.</summary>
    private sealed class LastSiloPolicy : IShardPlacementPolicy
    {
        public SiloAddress? Choose(ShardIdentity shard, IReadOnlyList<ExpertSilo> activeExpertSilos, IReadOnlyDictionary<string, string> pins) =>
            activeExpertSilos.Count == 0 ? null : activeExpertSilos.MaxBy(s => s.Address.ToParsableString(), StringComparer.Ordinal)!.Address;
    }

    private sealed class FixedPolicy(SiloAddress? silo) : IShardPlacementPolicy
    {
        public SiloAddress? Target { get; set; } = silo;

        public SiloAddress? Choose(ShardIdentity shard, IReadOnlyList<ExpertSilo> activeExpertSilos, IReadOnlyDictionary<string, string> pins) => Target;
    }

    private static readonly ShardIdentity Shard = new(new ExpertRoutingTable("m", 1, 10, 4).Shards[0]);

    [Fact]
    public void A_shard_moves_only_when_the_policy_names_the_same_other_silo_on_two_checks_in_a_row()
    {
        var policy = new FixedPolicy(Silo(2));
        var check = new ShardRebalanceCheck(policy, Shard);
        var silos = Experts(1, 2, 3);
        Assert.Null(check.Check(Silo(1), silos, NoPins));
        policy.Target = Silo(3);
        Assert.Null(check.Check(Silo(1), silos, NoPins));
        Assert.Equal(Silo(3), check.Check(Silo(1), silos, NoPins));
    }

    [Fact]
    public void A_shard_where_the_policy_puts_it_or_that_the_policy_places_nowhere_stays()
    {
        var policy = new FixedPolicy(Silo(1));
        var check = new ShardRebalanceCheck(policy, Shard);
        Assert.All(Enumerable.Range(0, 3), _ => Assert.Null(check.Check(Silo(1), Experts(1, 2), NoPins)));

        // A view in flight names another silo once, then nothing: the shard stays, and the earlier sighting is forgotten.
        policy.Target = Silo(2);
        Assert.Null(check.Check(Silo(1), Experts(1, 2), NoPins));
        policy.Target = null;
        Assert.Null(check.Check(Silo(1), [], NoPins));
        policy.Target = Silo(2);
        Assert.Null(check.Check(Silo(1), Experts(1, 2), NoPins));
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void A_registered_policy_replaces_the_default_before_or_after_the_clusters_registration(bool before)
    {
        var services = new ServiceCollection();
        if (before)
        {
            services.AddSingleton<IShardPlacementPolicy, LastSiloPolicy>();
        }

        services.AddShardPlacementPolicy();
        if (!before)
        {
            services.AddSingleton<IShardPlacementPolicy, LastSiloPolicy>();
        }

        using var provider = services.BuildServiceProvider();
        Assert.IsType<LastSiloPolicy>(provider.GetRequiredService<IShardPlacementPolicy>());
    }

    [Fact]
    public void The_default_policy_is_registered_when_no_other_is()
    {
        using var provider = new ServiceCollection().AddShardPlacementPolicy().BuildServiceProvider();
        Assert.IsType<SpreadByIndexPlacementPolicy>(provider.GetRequiredService<IShardPlacementPolicy>());
    }

    [Fact]
    public void Shards_placed_by_a_swapped_policy_do_not_migrate_back_to_the_default_rule()
    {
        var services = new ServiceCollection().AddShardPlacementPolicy();
        services.AddSingleton<IShardPlacementPolicy, LastSiloPolicy>();
        using var provider = services.BuildServiceProvider();
        var policy = provider.GetRequiredService<IShardPlacementPolicy>();
        var silos = Experts(1, 2, 3);
        var map = new ExpertRoutingTable("m", 1, 10, 4);

        foreach (var shard in map.Shards)
        {
            // Where the new policy placed the shard; the rebalance check, asked many times, keeps it there.
            var identity = new ShardIdentity(shard);
            var placed = policy.Choose(identity, silos, NoPins)!;
            var check = new ShardRebalanceCheck(policy, identity);
            Assert.All(Enumerable.Range(0, 5), _ => Assert.Null(check.Check(placed, silos, NoPins)));
        }

        // The default rule would have moved most of them (so the checks above could have failed).
        var old = new ShardRebalanceCheck(new SpreadByIndexPlacementPolicy(), new ShardIdentity(map.Shards[0]));
        old.Check(Silo(3), silos, NoPins);
        Assert.Equal(Silo(2), old.Check(Silo(3), silos, NoPins));
    }
}
