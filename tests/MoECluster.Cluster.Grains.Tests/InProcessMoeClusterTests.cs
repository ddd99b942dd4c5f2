using MoECluster.Cluster.Hosting;
using MoECluster.Model.Dispatch;

namespace MoECluster.Cluster.Grains.Tests;

/// <summary>The fixture is the cluster it claims to be: one front-end, expert silos holding every shard of the map, none on the front-end.</summary>
public sealed class InProcessMoeClusterTests(InProcessMoeCluster cluster) : IClassFixture<InProcessMoeCluster>
{
    [Fact]
    public async Task Shards_of_the_map_activate_on_expert_silos_only_and_every_expert_silo_holds_some()
    {
        var model = cluster.Reference(InProcessMoeCluster.Latent);
        var map = new ExpertRoutingTable(InProcessMoeCluster.Latent, model.FirstMoeLayer, model.Config.NRoutedExperts, cluster.Setup.ShardsPerLayer);
        var descriptions = await Task.WhenAll(map.Shards.Select(s => cluster.Client.GetGrain<IExpertShardGrain>(s.Key).Describe()));
        Assert.All(descriptions, d => Assert.Equal(SiloRoles.Expert, d.SiloRole));
        Assert.Equal(
            cluster.Experts.Select(e => e.Name).Order(),
            descriptions.Select(d => cluster.NameOf(d.Silo)).Distinct().Order());
        Assert.Equal(map.Shards.Select(s => (s.Key, s.FirstExpert, s.ExpertCount)), descriptions.Select(d => (d.Key, d.FirstExpert, d.ExpertCount)));
    }
}
