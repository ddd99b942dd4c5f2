using System.Diagnostics;
using System.Globalization;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using MoECluster.Cluster.Contracts;
using MoECluster.Cluster.Dispatch;
using MoECluster.Cluster.Hosting;
using MoECluster.Cluster.Placement;
using MoECluster.Cluster.Telemetry;
using MoECluster.Model.Dispatch;
using MoECluster.Model.Experts;
using MoECluster.Model.Numerics;
using MoECluster.Wire;
using Orleans.Runtime.MembershipService.SiloMetadata;

namespace MoECluster.Cluster.Grains;

/// <summary>
/// An expert shard: identity (its key names model, layer, shard index and expert range) and placement (expert silos only).
/// The work is the model library's: <see cref="GroupedExperts.ComputePartials"/> on its own experts' weights.
/// <para>
/// Concurrency: Compute interleaves (<see cref="IExpertShardGrain.Compute"/> is <c>[AlwaysInterleave]</c>) and hands each
/// request to the shard's <see cref="ShardBatcher"/>: requests that arrive while a pass runs are merged into the next
/// one, so the cost that dominates — streaming the shard's weights through the cores — is paid once per pass, not once
/// per request. One pass runs at a time (a second in parallel would compete for the same cores and memory bandwidth);
/// an idle shard starts a lone request at once. Decoding and checks stay per request, on the grain.
/// </para>
/// </summary>
[ExpertShardPlacement]
[ExpertSilosPlacementFilter]
public sealed partial class ExpertShardGrain(
    ModelCatalog catalog,
    IOptions<MoeClusterOptions> options,
    RoutingTables tables,
    TrafficLedger ledger,
    ILocalSiloDetails silo,
    IClusterMembershipService membership,
    ISiloMetadataCache metadata,
    IShardPlacementPolicy placement,
    ILogger<ExpertShardGrain> logger) : Grain, IExpertShardGrain
{
    /// <summary>How often a shard checks that it sits where placement would put it now.</summary>
    public static readonly TimeSpan PlacementCheckPeriod = TimeSpan.FromSeconds(2);

    private ExpertShard _shard = null!;
    private ShardRebalanceCheck _rebalance = null!;
    private ShardBatcher _batcher = null!;
    private long _weightBytes;

    public override async Task OnActivateAsync(CancellationToken cancellationToken)
    {
        string key = this.GetPrimaryKeyString();
        _shard = ExpertShard.ParseKey(key);
        var clock = Stopwatch.StartNew();
        var model = catalog.Get(_shard.Model);

        // Only the shards the routing table names may activate: a caller cannot make a silo load an expert range of
        // its choosing (a whole layer in one shard, say). Checked before any weight is touched.
        if (!model.Config.MoeLayers.Contains(_shard.Layer))
        {
            throw new ArgumentException($"shard {_shard.Key}: layer {_shard.Layer} is not an MoE layer of {_shard.Model}; MoE layers: {string.Join(", ", model.Config.MoeLayers)}");
        }

        if (!await tables.AllowsAsync(GrainFactory, _shard.Model, _shard.Layer, key, cancellationToken))
        {
            throw new ArgumentException(
                $"shard {(key.Length <= 100 ? key : key[..100] + "...")} is not in the routing table of {_shard.Model} layer {_shard.Layer} (MoECluster:ShardsPerLayer = {tables.ShardsPerLayer}, placement epoch {tables.Epoch(_shard.Model)}: {tables.Describe(_shard.Model, _shard.Layer)})");
        }

        var experts = await Task.Run(() => model.ShardExperts(_shard.Layer, _shard.Experts), cancellationToken);
        _weightBytes = experts.WeightBytes;
        var shard = _shard;
        _batcher = ShardComputation.Batcher(experts, options.Value.ShardBatching, batch => ledger.RecordShardBatch(shard.Key, shard.Model, shard.Layer, batch));
        ledger.ShardActivated(Description());
        LogActivated(logger, _shard.Key, _shard.ExpertCount, clock.Elapsed.TotalMilliseconds);
        // A pinned shard stays on its pinned silo (the placement filter puts it only there), whatever the policy says.
        if (!options.Value.Pins.ContainsKey(_shard.Key))
        {
            _rebalance = new ShardRebalanceCheck(placement, new ShardIdentity(_shard));
            this.RegisterGrainTimer(CheckPlacement, new GrainTimerCreationOptions(PlacementCheckPeriod, PlacementCheckPeriod));
        }
    }

    /// <summary>
    /// Rebalancing when expert silos join (or leave): the injected placement policy — the one the placement director
    /// asks — is a function of the active expert silos, so when it would now put this shard elsewhere (on two checks in
    /// a row: <see cref="ShardRebalanceCheck"/>) the shard migrates there once idle (the batch in progress finishes
    /// first; calls that arrive meanwhile follow it to the new activation, which reloads the experts' weights on its silo).
    /// </summary>
    private Task CheckPlacement(CancellationToken cancellationToken)
    {
        var target = _rebalance.Check(silo.SiloAddress, ExpertSilos.Active(membership.CurrentSnapshot, metadata), options.Value.Pins);
        if (target is not null)
        {
            LogMigrating(logger, _shard.Key, target);
            this.MigrateOnIdle();
        }

        return Task.CompletedTask;
    }

    public override Task OnDeactivateAsync(DeactivationReason reason, CancellationToken cancellationToken)
    {
        ledger.ShardDeactivated(_shard.Key);
        return Task.CompletedTask;
    }

    public Task<ShardDescription> Describe() => Task.FromResult(Description());

    public Task Retire()
    {
        LogRetired(logger, _shard.Key);
        this.DeactivateOnIdle();
        return Task.CompletedTask;
    }

    public async Task<WireBytes> Compute(WireBytes request, CancellationToken cancellationToken = default)
    {
        return await ShardComputation.ComputeAsync(_shard, _batcher, request, options.Value.WireLimits, silo.SiloAddress.ToString(), cancellationToken);
    }

    private ShardDescription Description() =>
        new(_shard.Key, silo.SiloAddress.ToString(), ledger.Identity.Role, _shard.Experts.ToString(), _shard.ExpertCount, _weightBytes);

    [LoggerMessage(Level = LogLevel.Information, Message = "Shard {Key} loaded {Experts} experts in {Milliseconds:F0} ms")]
    private static partial void LogActivated(ILogger logger, string key, int experts, double milliseconds);

    [LoggerMessage(Level = LogLevel.Information, Message = "Shard {Key} retired: it left the placement")]
    private static partial void LogRetired(ILogger logger, string key);

    [LoggerMessage(Level = LogLevel.Information, Message = "Shard {Shard} moves to {Silo}: placement puts it there now")]
    private static partial void LogMigrating(ILogger logger, string shard, SiloAddress silo);
}
