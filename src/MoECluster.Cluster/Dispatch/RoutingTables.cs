using System.Collections.Concurrent;
using Microsoft.Extensions.Options;
using MoECluster.Cluster.Contracts;
using MoECluster.Cluster.Hosting;
using MoECluster.Model.Dispatch;

namespace MoECluster.Cluster.Dispatch;

/// <summary>
/// The routing tables of this silo's models, one per (model, MoE layer), built on first use from the model's config
/// and MoECluster:ShardsPerLayer and kept: the one component that says which shard serves an expert. Routers dispatch
/// by it; expert shards and their alternates refuse any key it does not name. One instance per silo.
/// </summary>
public sealed class RoutingTables(ModelCatalog catalog, IOptions<MoeClusterOptions> options)
{
    private readonly ConcurrentDictionary<(string Model, int Layer), ExpertRoutingTable> _tables = new();

    /// <summary>MoECluster:ShardsPerLayer (a layer with fewer experts has one shard per expert).</summary>
    public int ShardsPerLayer => options.Value.ShardsPerLayer;

    /// <summary>The table of <paramref name="layer"/> of <paramref name="model"/>.</summary>
    /// <exception cref="ArgumentException">The model is not served, or the layer is not one of its MoE layers.</exception>
    public ExpertRoutingTable For(string model, int layer)
    {
        if (_tables.TryGetValue((model, layer), out var table))
        {
            return table;
        }

        // Only the layers a model declares get a table: the cache stays bounded whatever keys callers make up.
        var config = catalog.Get(model).Config;
        if (!config.MoeLayers.Contains(layer))
        {
            throw new ArgumentException($"layer {layer} is not an MoE layer of {model}; MoE layers: {string.Join(", ", config.MoeLayers)}");
        }

        return _tables.GetOrAdd((model, layer), key => new ExpertRoutingTable(key.Model, key.Layer, config.NRoutedExperts, Math.Min(ShardsPerLayer, config.NRoutedExperts)));
    }
}
