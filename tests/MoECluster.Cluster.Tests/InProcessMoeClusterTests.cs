using MoECluster.Cluster.Contracts;
using MoECluster.Cluster.Hosting;

namespace MoECluster.Cluster.Tests;

/// <summary>The fixture is the cluster it claims to be: one front-end, expert silos holding every shard of the map, none on the front-end.</summary>
[Collection(InProcessMoeClusterGroup.Name)]
public sealed class InProcessMoeClusterTests(InProcessMoeCluster cluster)
{
    [Fact]
    public async Task Shards_of_the_map_activate_on_expert_silos_only_and_every_expert_silo_holds_some()
    {
        var model = cluster.Reference(InProcessMoeCluster.Latent);
        var keys = cluster.ShardKeys(InProcessMoeCluster.Latent, model.FirstMoeLayer);
        var descriptions = await Task.WhenAll(keys.Select(k => cluster.Client.GetGrain<IExpertShardGrain>(k).Describe()));
        Assert.All(descriptions, d => Assert.Equal(SiloRoles.Expert, d.SiloRole));
        Assert.Equal(
            cluster.Experts.Select(e => e.Name).Order(),
            descriptions.Select(d => cluster.NameOf(d.Silo)).Distinct().Order());
        Assert.Equal(keys, descriptions.Select(d => d.Key));
        Assert.Equal(model.Config.NRoutedExperts, descriptions.Sum(d => d.ExpertCount));
    }
}
