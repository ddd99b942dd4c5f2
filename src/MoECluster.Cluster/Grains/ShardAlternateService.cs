using System.Diagnostics;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using MoECluster.Cluster.Contracts;
using MoECluster.Cluster.Dispatch;
using MoECluster.Cluster.Hosting;
using MoECluster.Cluster.Telemetry;
using MoECluster.Model.Dispatch;
using MoECluster.Model.Experts;
using Orleans.Runtime.Services;
using Orleans.Services;

namespace MoECluster.Cluster.Grains;

internal sealed class ShardAlternateClient(IServiceProvider services) : GrainServiceClient<IShardAlternateService>(services), IShardAlternateClient
{
    public IShardAlternateService On(SiloAddress silo) => GetGrainService(silo);
}

internal sealed partial class ShardAlternateService(
    GrainId grainId,
    Silo silo,
    ILoggerFactory loggerFactory,
    ModelCatalog catalog,
    IOptions<MoeClusterOptions> options,
    RoutingTables tables,
    TrafficLedger ledger,
    IGrainFactory grains,
    ILocalSiloDetails localSilo) : GrainService(grainId, silo, loggerFactory), IShardAlternateService
{
    private static readonly TimeSpan SweepPeriod = TimeSpan.FromSeconds(5);
    private readonly ILogger _logger = loggerFactory.CreateLogger<ShardAlternateService>();
    private readonly Dictionary<string, Alternate> _alternates = new(StringComparer.Ordinal);
    private Task _sweeper = Task.CompletedTask;

    public override Task Start()
    {
        _sweeper = SweepAsync(StoppedCancellationTokenSource.Token);
        return base.Start();
    }

    public override async Task Stop()
    {
        await base.Stop();
        try
        {
            await _sweeper;
        }
        catch (OperationCanceledException)
        {
        }
    }

    public async Task<WireBytes> Compute(string shardKey, WireBytes request, CancellationToken cancellationToken = default)
    {
        var shard = ExpertShard.ParseKey(shardKey);

        // Only the shards the routing tables name (the same sets the grains hold), never an arbitrary set.
        if (!await tables.AllowsAsync(grains, shard.Model, shard.Layer, shard.Key, cancellationToken))
        {
            throw new ArgumentException($"shard {shardKey} is not a shard of {shard.Model} layer {shard.Layer}");
        }

        Alternate alternate;
        lock (_alternates)
        {
            if (!_alternates.TryGetValue(shard.Key, out alternate!))
            {
                alternate = new Alternate(shard, Task.Run(() => Load(shard), CancellationToken.None));
                _alternates[shard.Key] = alternate;
            }

            alternate.LastUse = Stopwatch.GetTimestamp();
        }

        ShardBatcher experts;
        try
        {
            experts = await alternate.Experts.WaitAsync(cancellationToken);
        }
        catch (Exception) when (alternate.Experts.IsFaulted)
        {
            // A failed load is not kept: the next call tries again.
            lock (_alternates)
            {
                if (_alternates.TryGetValue(shard.Key, out var current) && current == alternate)
                {
                    _alternates.Remove(shard.Key);
                }
            }

            throw;
        }

        Interlocked.Increment(ref alternate.InFlight);
        try
        {
            // The same continuous batching as the shard's grain: calls that queue while a pass runs share the next pass.
            return await ShardComputation.ComputeAsync(shard, experts, request, options.Value.WireLimits, localSilo.SiloAddress.ToString(), cancellationToken);
        }
        finally
        {
            Interlocked.Decrement(ref alternate.InFlight);
            alternate.LastUse = Stopwatch.GetTimestamp();
        }
    }

    private ShardBatcher Load(ExpertShard shard)
    {
        var clock = Stopwatch.StartNew();
        var experts = catalog.Get(shard.Model).ShardExperts(shard.Layer, shard.Experts);
        string key = ShardKeys.Alternate(shard.Key);
        ledger.ShardActivated(new ShardDescription(key, localSilo.SiloAddress.ToString(), ledger.Identity.Role, shard.Experts.ToString(), shard.ExpertCount, experts.WeightBytes));
        LogLoaded(_logger, shard.Key, shard.ExpertCount, clock.Elapsed.TotalMilliseconds);
        return ShardComputation.Batcher(experts, options.Value.ShardBatching, batch => ledger.RecordShardBatch(key, shard.Model, shard.Layer, batch));
    }

    /// <summary>Drops the alternates nothing has called for a while (their weights with them).</summary>
    private async Task SweepAsync(CancellationToken stopped)
    {
        using var timer = new PeriodicTimer(SweepPeriod);
        while (await timer.WaitForNextTickAsync(stopped))
        {
            double idle = options.Value.ShardHedging.AlternateIdleSeconds;
            List<Alternate> dropped;
            lock (_alternates)
            {
                dropped = [.. _alternates.Values.Where(a => Volatile.Read(ref a.InFlight) == 0 && Stopwatch.GetElapsedTime(a.LastUse).TotalSeconds > idle)];
                dropped.ForEach(a => _alternates.Remove(a.Shard.Key));
            }

            foreach (var a in dropped)
            {
                ledger.ShardDeactivated(ShardKeys.Alternate(a.Shard.Key));
                LogDropped(_logger, a.Shard.Key, idle);
            }
        }
    }

    private sealed class Alternate(ExpertShard shard, Task<ShardBatcher> experts)
    {
        /// <summary>Calls in progress (an alternate with calls in progress is never dropped).</summary>
        public int InFlight;

        public ExpertShard Shard { get; } = shard;

        public Task<ShardBatcher> Experts { get; } = experts;

        public long LastUse { get; set; }
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Alternate of shard {Key} loaded {Experts} experts in {Milliseconds:F0} ms")]
    private static partial void LogLoaded(ILogger logger, string key, int experts, double milliseconds);

    [LoggerMessage(Level = LogLevel.Information, Message = "Alternate of shard {Key}: no call for {Seconds:F0} s; its experts are dropped")]
    private static partial void LogDropped(ILogger logger, string key, double seconds);
}

public static class ShardAlternateServiceExtensions
{
    /// <summary>The alternates' grain service on every silo, and the client routers reach it with.</summary>
    public static ISiloBuilder AddShardAlternates(this ISiloBuilder silo)
    {
        silo.AddGrainService<ShardAlternateService>();
        silo.Services.AddSingleton<IShardAlternateClient, ShardAlternateClient>();
        return silo;
    }
}
