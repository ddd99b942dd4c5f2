using MoECluster.Cluster.Dispatch;

namespace MoECluster.Cluster.Tests;

/// <summary>One routing table per (model, layer), built once and shared by the silo's routers and shards.</summary>
[Collection(InProcessMoeClusterGroup.Name)]
public sealed class RoutingTablesTests(InProcessMoeCluster cluster)
{
    [Fact]
    public void A_layers_table_is_built_once_and_names_ShardsPerLayer_shards()
    {
        var tables = cluster.Service<RoutingTables>(cluster.Frontend);
        var model = cluster.Reference(InProcessMoeCluster.Latent);
        foreach (int layer in model.Config.MoeLayers)
        {
            var table = tables.For(InProcessMoeCluster.Latent, layer);
            Assert.Same(table, tables.For(InProcessMoeCluster.Latent, layer));
            Assert.Equal(cluster.Setup.ShardsPerLayer, table.Shards.Count);
            Assert.Equal((InProcessMoeCluster.Latent, layer, model.Config.NRoutedExperts), (table.Model, table.Layer, table.Experts));
        }

        Assert.NotSame(tables.For(InProcessMoeCluster.Latent, model.FirstMoeLayer), tables.For(InProcessMoeCluster.Standard, cluster.Reference(InProcessMoeCluster.Standard).FirstMoeLayer));
    }

    [Fact]
    public void Layers_that_are_not_MoE_layers_and_unknown_models_get_no_table()
    {
        var tables = cluster.Service<RoutingTables>(cluster.Frontend);
        var config = cluster.Reference(InProcessMoeCluster.Latent).Config;
        int other = Enumerable.Range(0, config.NumHiddenLayers + 1).First(l => !config.MoeLayers.Contains(l));
        var e = Assert.Throws<ArgumentException>(() => tables.For(InProcessMoeCluster.Latent, other));
        Assert.Contains("not an MoE layer", e.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentException>(() => tables.For("no-such-model", config.MoeLayers[0]));
    }
}
