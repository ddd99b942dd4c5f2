using System.Diagnostics;
using System.Globalization;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using MoECluster.Cluster.Contracts;
using MoECluster.Cluster.Dispatch;
using MoECluster.Cluster.Hosting;
using MoECluster.Cluster.Placement;
using MoECluster.Cluster.Telemetry;
using MoECluster.Model.Balancing;
using MoECluster.Model.Dispatch;
using Orleans.Runtime.MembershipService.SiloMetadata;

namespace MoECluster.Cluster.Balancing;

/// <summary>
/// The placement of one model's experts (key = model id), and the one place that changes it: a re-plan reads every
/// silo's tokens per expert over the window (<see cref="Telemetry.TrafficLedger"/>), asks the model library's
/// <see cref="ReplicaPlanner"/> for each MoE layer (groups of shards = expert silos: shard i is in group i mod
/// min(shards, expert silos), which the placement policy puts on one silo, different groups on different silos), and
/// applies the result in three steps so that no request fails or sees a wrong answer:
/// <list type="number">
/// <item><b>Load</b>: the new tables are staged (shards of a staged table may activate: <see cref="Get"/> lists them as
/// recent) and every shard that is new is activated — its experts loaded and packed — before any router knows of it.
/// A shard that fails to load abandons the re-plan; nothing has switched.</item>
/// <item><b>Switch</b>: the epoch advances and every active silo is told at once (<see cref="ISiloRoutingGrain"/>); each
/// swaps all the model's tables in one reference, so a dispatch reads one epoch's table. A silo that misses the call
/// gets the placement from its refresher within MoECluster:Balancing:RefreshSeconds; meanwhile it still routes by the
/// previous tables, whose shards stay allowed.</item>
/// <item><b>Drain</b>: shards that left the plan get no new rows; a few refresh periods later they are retired
/// (deactivated once idle, their in-flight passes finished). A late request that reaches one reactivates it: its key
/// stays allowed while its epoch is recent.</item>
/// </list>
/// </summary>
public sealed partial class ExpertPlacementGrain(
    ModelCatalog catalog,
    IOptions<MoeClusterOptions> options,
    RoutingTables tables,
    IClusterMembershipService membership,
    ISiloMetadataCache metadata,
    ILogger<ExpertPlacementGrain> logger) : Grain, IExpertPlacementGrain
{
    /// <summary>Epochs whose tables stay allowed after they are replaced (routers may still be sending to them).</summary>
    public const int RecentEpochs = 4;

    /// <summary>Re-plans kept in the history.</summary>
    public const int HistoryLength = 64;

    private static readonly TimeSpan SiloAnswerTimeout = TimeSpan.FromSeconds(5);

    private readonly Guid _instance = Guid.NewGuid();
    private readonly List<Dictionary<int, ExpertRoutingTable>> _recent = [];
    private readonly List<PlacementChange> _history = [];
    private Dictionary<int, ExpertRoutingTable> _current = [];
    private Dictionary<int, ExpertRoutingTable>? _staged;
    private long _epoch;
    private long _version;

    private string ModelId => this.GetPrimaryKeyString();

    public Task<ModelPlacement> Get() => Task.FromResult(Placement());

    public async Task<RebalanceReport> Rebalance(RebalanceRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        var clock = Stopwatch.StartNew();
        string model = ModelId;
        var config = catalog.Get(model).Config;
        int experts = config.NRoutedExperts;
        var balancing = options.Value.Balancing;
        string? pinned = options.Value.Pins.Keys.FirstOrDefault(k => k.StartsWith(model + "/", StringComparison.Ordinal));
        if (pinned is not null)
        {
            throw new InvalidOperationException($"{model} has pinned shards (MoECluster:Pins names {pinned}): a re-plan would move the experts of a pinned shard; remove the pins of {model} to rebalance it");
        }

        var silos = ExpertSilos.Active(membership.CurrentSnapshot, metadata);
        if (silos.Count == 0)
        {
            throw new InvalidOperationException("no expert silo is active: nothing to place experts on");
        }

        if (request.RedundantExperts is int asked && (asked < 0 || asked > experts * (silos.Count - 1)))
        {
            throw new ArgumentException(string.Create(CultureInfo.InvariantCulture,
                $"redundant_experts {asked}: expected 0 to {experts * (silos.Count - 1)} ({experts} experts, at most one replica per expert silo, {silos.Count} expert silos)"));
        }

        var loads = await CollectLoadsAsync(model, config.MoeLayers);
        long epoch = _epoch + 1;
        var next = new Dictionary<int, ExpertRoutingTable>();
        var changes = new List<PlacementChange>();
        var now = DateTimeOffset.UtcNow;
        foreach (int layer in config.MoeLayers)
        {
            var current = TableOf(_current, layer);
            int groups = Math.Min(current.Shards.Count, silos.Count);
            var assignment = new ExpertAssignment(experts, current.Groups(groups));
            long[] window = loads[layer];

            // The request's count, or the silo's budget: in experts, or in bytes per silo (one expert's bytes at the
            // checkpoint's precision; the replicas a silo may hold, over the groups this layer spreads over).
            int redundant = request.RedundantExperts
                ?? balancing.EffectiveRedundantExperts(experts, groups, config.MoeLayers.Count, () => catalog.Get(model).ExpertBytes(layer));
            var plan = ReplicaPlanner.Plan([.. window.Select(t => (double)t)], assignment, new ReplicaPlanOptions(redundant, balancing.LeaveAloneBelow));
            var table = plan.Changed
                ? ExpertRoutingTable.FromGroups(model, layer, experts, current.Shards.Count, [.. Enumerable.Range(0, groups).Select(plan.Assignment.ExpertsOf)], epoch)
                : new ExpertRoutingTable(model, layer, experts, [.. current.Shards.Select(s => s.Experts)], epoch);
            next[layer] = table;
            changes.Add(new PlacementChange(epoch, now, layer, plan.Changed, plan.ImbalanceBefore, plan.ImbalanceAfter, table.ExtraReplicas,
                table.Shards.Count(s => !current.Contains(s.Key)), window.Sum(), plan.Reason));
        }

        bool changed = changes.Any(c => c.Changed);
        if (!changed || request.DryRun)
        {
            Remember(changes.Select(c => c with { Epoch = _epoch }));
            return new RebalanceReport(model, _epoch, false, request.DryRun, changes, silos.Count, 0, 0, clock.Elapsed.TotalSeconds);
        }

        // 1. Load: the staged shards may activate (Get lists them); each new one loads its experts now.
        _staged = next;
        _version++;
        var loadClock = Stopwatch.StartNew();
        try
        {
            var fresh = next.Values.SelectMany(t => t.Shards.Where(s => !TableOf(_current, t.Layer).Contains(s.Key))).ToList();
            LogLoading(logger, model, epoch, fresh.Count);
            await Task.WhenAll(fresh.Select(s => GrainFactory.GetGrain<IExpertShardGrain>(s.Key).Describe()));
        }
        catch (Exception e)
        {
            _staged = null;
            _version++;
            LogAbandoned(logger, model, epoch, e.Message);
            throw new InvalidOperationException($"re-plan {epoch} of {model} abandoned, nothing switched: a new shard failed to load: {e.Message}", e);
        }

        double loadSeconds = loadClock.Elapsed.TotalSeconds;

        // 2. Switch: the new epoch, told to every silo at once.
        var previous = _current;
        _recent.Insert(0, previous);
        if (_recent.Count > RecentEpochs)
        {
            _recent.RemoveAt(_recent.Count - 1);
        }

        _current = next;
        _staged = null;
        _epoch = epoch;
        _version++;
        Remember(changes);
        int applied = await TellSilosAsync(Placement());
        LogSwitched(logger, model, epoch, applied, loadSeconds);

        // 3. Drain: shards that left the plan are retired once every router has had time to switch.
        var left = config.MoeLayers.SelectMany(l => TableOf(previous, l).Shards).Select(s => s.Key).ToHashSet(StringComparer.Ordinal);
        left.ExceptWith(next.Values.SelectMany(t => t.Shards).Select(s => s.Key));
        var drain = TimeSpan.FromSeconds(Math.Max(5, 3 * balancing.RefreshSeconds));
        this.RegisterGrainTimer(RetireAsync, left, new GrainTimerCreationOptions(drain, Timeout.InfiniteTimeSpan));
        return new RebalanceReport(model, epoch, true, false, changes, silos.Count, applied, loadSeconds, clock.Elapsed.TotalSeconds);
    }

    /// <summary>Every active silo at once (<see cref="EverySilo"/>); one that does not answer in time is logged and counts as <paramref name="unanswered"/>.</summary>
    private Task<T[]> AskEverySiloAsync<T>(Func<string, Task<T>> ask, T unanswered, CancellationToken cancellationToken) =>
        EverySilo.AskAsync(GrainFactory, ask, unanswered, SiloAnswerTimeout, (silo, e) => LogUnanswered(logger, silo.ToString(), e.Message), cancellationToken);

    /// <summary>The table of <paramref name="layer"/> in <paramref name="placed"/> (a layer it does not name is on its default table).</summary>
    private ExpertRoutingTable TableOf(Dictionary<int, ExpertRoutingTable> placed, int layer) =>
        placed.TryGetValue(layer, out var t) ? t : tables.Default(ModelId, layer);

    private ModelPlacement Placement()
    {
        var recent = _recent.SelectMany(r => r.Values);
        if (_staged is not null)
        {
            recent = _staged.Values.Concat(recent);
        }

        return new ModelPlacement(ModelId, _epoch, [.. _current.Values.OrderBy(t => t.Layer).Select(LayerPlacement.Of)], [.. recent.Select(LayerPlacement.Of)],
            [.. _history], _instance, _version);
    }

    private void Remember(IEnumerable<PlacementChange> changes)
    {
        _history.AddRange(changes);
        if (_history.Count > HistoryLength)
        {
            _history.RemoveRange(0, _history.Count - HistoryLength);
        }
    }

    /// <summary>Every active silo's tokens per expert over the window, summed per layer (a silo that does not answer in time is left out).</summary>
    private async Task<Dictionary<int, long[]>> CollectLoadsAsync(string model, IReadOnlyList<int> layers)
    {
        int experts = catalog.Get(model).Config.NRoutedExperts;
        var totals = layers.ToDictionary(l => l, _ => new long[experts]);
        var answers = await AskEverySiloAsync<IReadOnlyList<LayerExpertLoad>>(
            silo => GrainFactory.GetGrain<ISiloTelemetryGrain>(silo).GetExpertLoads(model), [], CancellationToken.None);
        foreach (var load in answers.SelectMany(a => a))
        {
            if (totals.TryGetValue(load.Layer, out long[]? total) && load.Tokens.Count == experts)
            {
                for (int e = 0; e < experts; e++)
                {
                    total[e] += load.Tokens[e];
                }
            }
        }

        return totals;
    }

    private async Task<int> TellSilosAsync(ModelPlacement placement)
    {
        // A silo that does not answer in time catches up through its refresher.
        var told = await AskEverySiloAsync(
            async silo =>
            {
                await GrainFactory.GetGrain<ISiloRoutingGrain>(silo).Apply(placement);
                return true;
            },
            false,
            CancellationToken.None);
        return told.Count(t => t);
    }

    private async Task RetireAsync(HashSet<string> keys, CancellationToken cancellationToken)
    {
        // A later plan may have taken a key back: retire only what no current table names (after a switch every MoE
        // layer has a table in _current).
        keys.ExceptWith(_current.Values.SelectMany(t => t.Shards).Select(s => s.Key));

        string[] retiring = [.. keys];
        var retired = await AskEverySiloAsync(silo => GrainFactory.GetGrain<ISiloRoutingGrain>(silo).Retire(retiring), 0, cancellationToken);
        int count = retired.Sum();
        LogRetired(logger, ModelId, count);
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Placement {Model} epoch {Epoch}: loading {Shards} new shards")]
    private static partial void LogLoading(ILogger logger, string model, long epoch, int shards);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Placement {Model} epoch {Epoch} abandoned, nothing switched: {Reason}")]
    private static partial void LogAbandoned(ILogger logger, string model, long epoch, string reason);

    [LoggerMessage(Level = LogLevel.Information, Message = "Placement {Model} switched to epoch {Epoch} on {Silos} silos ({LoadSeconds:F2} s loading new shards)")]
    private static partial void LogSwitched(ILogger logger, string model, long epoch, int silos, double loadSeconds);

    [LoggerMessage(Level = LogLevel.Information, Message = "Placement {Model}: {Shards} drained shards retired")]
    private static partial void LogRetired(ILogger logger, string model, int shards);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Silo {Silo} did not answer the placement: {Reason}")]
    private static partial void LogUnanswered(ILogger logger, string silo, string reason);
}

/// <summary>Applies a placement to its silo's routing tables, and retires the drained shards active here (key = the silo's parsable address).</summary>
[SiloPinnedPlacement]
public sealed class SiloRoutingGrain(RoutingTables tables, Telemetry.TrafficLedger ledger) : Grain, ISiloRoutingGrain
{
    public Task Apply(ModelPlacement placement)
    {
        tables.Apply(placement);
        return Task.CompletedTask;
    }

    public async Task<int> Retire(IReadOnlyList<string> keys)
    {
        ArgumentNullException.ThrowIfNull(keys);

        // Only shards active here: calling one that is not would activate it (and load its experts) to retire it.
        string[] active = [.. ledger.ActiveShards().Intersect(keys, StringComparer.Ordinal).Where(k => !ShardKeys.IsAlternate(k))];
        await Task.WhenAll(active.Select(k => GrainFactory.GetGrain<IExpertShardGrain>(k).Retire()));
        return active.Length;
    }
}
