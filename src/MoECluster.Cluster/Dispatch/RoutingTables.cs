using System.Collections.Concurrent;
using System.Collections.Frozen;
using Microsoft.Extensions.Options;
using MoECluster.Cluster.Contracts;
using MoECluster.Cluster.Hosting;
using MoECluster.Model.Dispatch;

namespace MoECluster.Cluster.Dispatch;

/// <summary>
/// The routing tables of this silo's models, one per (model, MoE layer): the one component that says which shards serve
/// an expert. The default table of a layer (MoECluster:ShardsPerLayer contiguous ranges) is built on first use; a
/// placement of the model's <see cref="IExpertPlacementGrain"/> (<see cref="Apply"/>) replaces the tables of all its
/// layers at once — one reference swapped, so a dispatch reads one epoch's table, never a mix. Routers dispatch by
/// <see cref="For"/>; expert shards and their alternates activate only for a key that <see cref="Allows"/> (the default
/// table's, the current placement's and the recent placements' that routers may still be sending to). One instance per silo.
/// </summary>
public sealed class RoutingTables(ModelCatalog catalog, IOptions<MoeClusterOptions> options)
{
    private readonly ConcurrentDictionary<(string Model, int Layer), ExpertRoutingTable> _defaults = new();
    private readonly ConcurrentDictionary<string, AppliedPlacement> _placements = new(StringComparer.Ordinal);

    /// <summary>MoECluster:ShardsPerLayer (a layer with fewer experts has one shard per expert).</summary>
    public int ShardsPerLayer => options.Value.ShardsPerLayer;

    /// <summary>The table routers use now for <paramref name="layer"/> of <paramref name="model"/>.</summary>
    /// <exception cref="ArgumentException">The model is not served, or the layer is not one of its MoE layers.</exception>
    public ExpertRoutingTable For(string model, int layer)
    {
        if (_placements.TryGetValue(model, out var placement) && placement.Current.TryGetValue(layer, out var planned))
        {
            return planned;
        }

        return Default(model, layer);
    }

    /// <summary>The epoch of the placement this silo applies for <paramref name="model"/> (0: the default tables).</summary>
    public long Epoch(string model) => _placements.TryGetValue(model, out var p) ? p.Epoch : 0;

    /// <summary>The default table of <paramref name="layer"/> of <paramref name="model"/>: MoECluster:ShardsPerLayer contiguous ranges.</summary>
    /// <exception cref="ArgumentException">The model is not served, or the layer is not one of its MoE layers.</exception>
    public ExpertRoutingTable Default(string model, int layer)
    {
        if (_defaults.TryGetValue((model, layer), out var table))
        {
            return table;
        }

        // Only the layers a model declares get a table: the cache stays bounded whatever keys callers make up.
        var config = catalog.Get(model).Config;
        if (!config.MoeLayers.Contains(layer))
        {
            throw new ArgumentException($"layer {layer} is not an MoE layer of {model}; MoE layers: {string.Join(", ", config.MoeLayers)}");
        }

        return _defaults.GetOrAdd((model, layer), key => new ExpertRoutingTable(key.Model, key.Layer, config.NRoutedExperts, Math.Min(ShardsPerLayer, config.NRoutedExperts)));
    }

    /// <summary>Whether a shard with grain key <paramref name="key"/> may activate: a key of the layer's default table or of a current or recent placement.</summary>
    public bool Allows(string model, int layer, string key) =>
        Default(model, layer).Contains(key) || (_placements.TryGetValue(model, out var p) && p.Allowed.Contains(key));

    /// <summary>
    /// <see cref="Allows"/>, asking the model's placement grain first when this silo does not know the key: a shard of a
    /// placement this silo has not applied yet (being loaded for a re-plan, or switched to a moment ago).
    /// </summary>
    public async Task<bool> AllowsAsync(IGrainFactory grains, string model, int layer, string key, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(grains);
        if (Allows(model, layer, key))
        {
            return true;
        }

        Apply(await grains.GetGrain<IExpertPlacementGrain>(model).Get().WaitAsync(cancellationToken));
        return Allows(model, layer, key);
    }

    /// <summary>The shard keys routers may address for <paramref name="layer"/> of <paramref name="model"/>, for messages that refuse a key.</summary>
    public string Describe(string model, int layer) => string.Join(", ", For(model, layer).Shards.Select(s => s.Key));

    /// <summary>
    /// Makes <paramref name="placement"/> this silo's tables of its model (all layers in one swap), unless this silo already
    /// applies that version or a later one of the same placement grain (a slow answer never takes a silo back; a new
    /// activation of the grain, after its silo was lost, is followed whatever its epoch). A placement whose shard sets do
    /// not form a table of the model is refused.
    /// </summary>
    /// <returns>Whether the tables changed.</returns>
    public bool Apply(ModelPlacement placement)
    {
        ArgumentNullException.ThrowIfNull(placement);
        var config = catalog.Get(placement.Model).Config;
        bool Newer() => !_placements.TryGetValue(placement.Model, out var applied) || applied.Instance != placement.Instance || applied.Version < placement.Version;
        if (!Newer())
        {
            return false;
        }

        ExpertRoutingTable Table(LayerPlacement layer) =>
            config.MoeLayers.Contains(layer.Layer)
                ? layer.ToTable(placement.Model, config.NRoutedExperts, placement.Epoch)
                : throw new ArgumentException($"placement {placement.Epoch} of {placement.Model} names layer {layer.Layer}, not an MoE layer");

        var current = placement.Layers.ToFrozenDictionary(l => l.Layer, Table);
        var allowed = current.Values.Concat(placement.Recent.Select(Table))
            .SelectMany(t => t.Shards.Select(s => s.Key))
            .ToFrozenSet(StringComparer.Ordinal);
        var next = new AppliedPlacement(placement.Instance, placement.Version, placement.Epoch, current, allowed);
        lock (_placements)
        {
            // Checked again under the lock: another answer may have been applied while this one was parsed.
            if (!Newer())
            {
                return false;
            }

            _placements[placement.Model] = next;
        }

        return true;
    }

    private sealed record AppliedPlacement(Guid Instance, long Version, long Epoch, FrozenDictionary<int, ExpertRoutingTable> Current, FrozenSet<string> Allowed);
}
