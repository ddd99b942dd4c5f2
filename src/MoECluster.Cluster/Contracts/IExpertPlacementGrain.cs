using MoECluster.Model.Dispatch;
using Orleans.Concurrency;

namespace MoECluster.Cluster.Contracts;

/// <summary>
/// The placement of one model's experts (key = model id): the current routing tables of its MoE layers (epoch 0: the
/// default contiguous shards), the recent ones (still served while routers switch), and the history of re-plans. One
/// activation in the cluster; its state is in memory (a lost activation starts again at the default placement, which
/// every silo then switches back to: answers stay right, the balance is lost until the next re-plan).
/// </summary>
[Alias("moecluster.expert-placement")]
public interface IExpertPlacementGrain : IGrainWithStringKey
{
    /// <summary>The placement now (answers while a re-plan runs: new shards ask it whether their key is planned).</summary>
    [Alias("get")]
    [AlwaysInterleave]
    Task<ModelPlacement> Get();

    /// <summary>
    /// Re-plans every MoE layer from the expert loads of the last window: new shards load before the routers get the
    /// new tables, which every reachable silo applies before this returns; shards that left the plan are retired once
    /// drained. One re-plan at a time.
    /// </summary>
    [Alias("rebalance")]
    Task<RebalanceReport> Rebalance(RebalanceRequest request);
}

/// <summary>What one re-plan may do: extra replicas per layer (null: MoECluster:Balancing:RedundantExperts); a dry run plans without applying.</summary>
[GenerateSerializer]
[Immutable]
[Alias("moecluster.rebalance-request")]
public sealed record RebalanceRequest(
    [property: Id(0)] int? RedundantExperts = null,
    [property: Id(1)] bool DryRun = false);

/// <summary>One layer's routing table as the placement states it: its shards' expert sets (ExpertSet text) by shard index.</summary>
[GenerateSerializer]
[Immutable]
[Alias("moecluster.layer-placement")]
public sealed record LayerPlacement(
    [property: Id(0)] int Layer,
    [property: Id(1)] IReadOnlyList<string> Shards)
{
    /// <summary>The placement of <paramref name="table"/>.</summary>
    public static LayerPlacement Of(ExpertRoutingTable table)
    {
        ArgumentNullException.ThrowIfNull(table);
        return new(table.Layer, [.. table.Shards.Select(s => s.Experts.ToString())]);
    }

    /// <summary>The routing table this placement states, for a layer of <paramref name="experts"/> experts.</summary>
    /// <exception cref="ArgumentException">A shard's text is not an expert set, or the sets do not form a table of the layer.</exception>
    public ExpertRoutingTable ToTable(string model, int experts, long epoch) =>
        new(model, Layer, experts, [.. Shards.Select(text => ExpertSet.TryParse(text, out var set)
            ? set
            : throw new ArgumentException($"placement {epoch} of {model} layer {Layer}: '{text}' is not an expert set"))], epoch);
}

/// <summary>
/// A model's placement: <see cref="Epoch"/> and its layers (empty: every layer on the default table), the recent epochs'
/// layers, and the history. <see cref="Instance"/> names the placement grain's activation; <see cref="Version"/> grows
/// within one at every change (a staged plan, its switch, its abandonment), epochs only at a switch.
/// </summary>
[GenerateSerializer]
[Immutable]
[Alias("moecluster.model-placement")]
public sealed record ModelPlacement(
    [property: Id(0)] string Model,
    [property: Id(1)] long Epoch,
    [property: Id(2)] IReadOnlyList<LayerPlacement> Layers,
    [property: Id(3)] IReadOnlyList<LayerPlacement> Recent,
    [property: Id(4)] IReadOnlyList<PlacementChange> History,
    [property: Id(5)] Guid Instance,
    [property: Id(6)] long Version);

/// <summary>One layer's outcome of one re-plan: the silo imbalance (most loaded expert silo ÷ mean, predicted from the window's loads) before and after.</summary>
[GenerateSerializer]
[Immutable]
[Alias("moecluster.placement-change")]
public sealed record PlacementChange(
    [property: Id(0)] long Epoch,
    [property: Id(1)] DateTimeOffset At,
    [property: Id(2)] int Layer,
    [property: Id(3)] bool Changed,
    [property: Id(4)] double ImbalanceBefore,
    [property: Id(5)] double ImbalanceAfter,
    [property: Id(6)] int ExtraReplicas,
    [property: Id(7)] int NewShards,
    [property: Id(8)] long WindowTokens,
    [property: Id(9)] string Reason);

/// <summary>
/// What a re-plan did: the epoch now in force, whether it changed, each layer's change, the silos that applied the new
/// tables, how long loading and switching took.
/// </summary>
[GenerateSerializer]
[Immutable]
[Alias("moecluster.rebalance-report")]
public sealed record RebalanceReport(
    [property: Id(0)] string Model,
    [property: Id(1)] long Epoch,
    [property: Id(2)] bool Changed,
    [property: Id(3)] bool DryRun,
    [property: Id(4)] IReadOnlyList<PlacementChange> Layers,
    [property: Id(5)] int ExpertSilos,
    [property: Id(6)] int SilosApplied,
    [property: Id(7)] double LoadSeconds,
    [property: Id(8)] double Seconds);

/// <summary>One per silo (key = the silo's parsable address): applies a placement to that silo's routing tables at once.</summary>
[Alias("moecluster.silo-routing")]
public interface ISiloRoutingGrain : IGrainWithStringKey
{
    [Alias("apply")]
    Task Apply(ModelPlacement placement);

    /// <summary>Retires those of <paramref name="keys"/> that are active on this silo (deactivated once idle); returns how many.</summary>
    [Alias("retire")]
    Task<int> Retire(IReadOnlyList<string> keys);
}
