using Microsoft.Extensions.Logging.Abstractions;
using MoECluster.Cluster.Hosting;
using MoECluster.Cluster.Placement;
using MoECluster.Cluster.Dispatch;
using MoECluster.Model.Dispatch;

namespace MoECluster.Cluster.Tests.Placement;

/// <summary>Routers hedge an overdue shard call to the shard's alternate on the silo the injected placement policy gives it.</summary>
public sealed class AlternatePlacementTests
{
    private sealed class AlternatesOn(SiloAddress silo) : IShardPlacementPolicy
    {
        public List<ShardIdentity> Asked { get; } = [];

        public SiloAddress? Choose(ShardIdentity shard, IReadOnlyList<ExpertSilo> activeExpertSilos, IReadOnlyDictionary<string, string> pins)
        {
            lock (Asked)
            {
                Asked.Add(shard);
            }

            return shard.Alternate ? silo : activeExpertSilos[0].Address;
        }
    }

    [Fact]
    public async Task An_overdue_call_goes_to_the_alternate_on_the_silo_the_injected_policy_chooses()
    {
        var cluster = new FakeCluster().Add(0, SiloRoles.Frontend).Add(1, SiloRoles.Expert).Add(2, SiloRoles.Expert).Add(3, SiloRoles.Expert);
        var options = new MoeClusterOptions();
        options.ShardHedging.MinDelayMilliseconds = 20;
        options.ShardHedging.MaxDelayMilliseconds = 50;
        var policy = new AlternatesOn(PlacementFakes.Silo(3));
        var hedging = new ShardCallHedging(Microsoft.Extensions.Options.Options.Create(options), cluster, cluster, policy, NullLogger<ShardCallHedging>.Instance);
        var shard = new ExpertRoutingTable("m", 1, 10, 4).Shards[2];
        SiloAddress? calledOn = null;
        Task<int> Alternate(SiloAddress silo, CancellationToken cancel)
        {
            calledOn = silo;
            return Task.FromResult(2);
        }

        // Two answered calls give the shard a latency; the third hangs and is hedged.
        for (int i = 0; i < 2; i++)
        {
            Assert.Equal(1, await hedging.CallAsync(shard.Key, 1, _ => Task.FromResult(1), Alternate, CancellationToken.None));
        }

        Assert.Equal(2, await hedging.CallAsync(shard.Key, 1, c => Task.Delay(Timeout.Infinite, c).ContinueWith(_ => 1, TaskScheduler.Default), Alternate, CancellationToken.None));
        Assert.Equal(PlacementFakes.Silo(3), calledOn);
        Assert.Contains(new ShardIdentity(shard, Alternate: true), policy.Asked);
    }
}
