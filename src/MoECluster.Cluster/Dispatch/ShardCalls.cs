using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using MoECluster.Cluster.Contracts;
using MoECluster.Cluster.Grains;
using MoECluster.Cluster.Hosting;
using MoECluster.Cluster.Telemetry;
using MoECluster.Wire;

namespace MoECluster.Cluster.Dispatch;

/// <summary>
/// What every <see cref="OrleansExpertDispatcher"/> of a silo shares: the routing tables, the ledger, and the shard
/// call itself (to the shard's grain, retried on a lost silo by <see cref="ShardCallRetry"/>, hedged to its alternate by
/// <see cref="ShardCallHedging"/>). One instance per silo.
/// </summary>
public sealed class ShardCalls(
    ModelCatalog catalog,
    IOptions<MoeClusterOptions> options,
    RoutingTables tables,
    TrafficLedger ledger,
    IGrainFactory grains,
    ShardCallHedging hedging,
    IShardAlternateClient alternates,
    ILocalSiloDetails silo,
    ILogger<ShardCalls> logger)
{
    private readonly ShardCallRetry _retry = new(options.Value.ShardRetry, logger);
    private readonly System.Runtime.CompilerServices.ConditionalWeakTable<Model.Dispatch.ExpertRoutingTable, long[]> _outstanding = [];
    private long _requests;

    internal ModelCatalog Catalog => catalog;

    internal RoutingTables Tables => tables;

    internal WireLimits WireLimits => options.Value.WireLimits;

    internal TrafficLedger Ledger => ledger;

    internal string LocalSilo { get; } = silo.SiloAddress.ToString();

    /// <summary>A dispatcher for one request to <paramref name="modelId"/> in <paramref name="wire"/> both ways: it collects the request's traffic.</summary>
    public OrleansExpertDispatcher Dispatcher(string modelId, WireDType wire) => new(this, modelId, WirePair.Of(wire, wire));

    /// <summary>A dispatcher for one request to <paramref name="modelId"/>, rows in <paramref name="wire"/>'s dispatch type, partial sums in its combine type.</summary>
    public OrleansExpertDispatcher Dispatcher(string modelId, WirePair wire) => new(this, modelId, wire);

    internal long NextRequestId() => Interlocked.Increment(ref _requests);

    /// <summary>
    /// The (token, expert) pairs this silo's routers have in flight at each shard of <paramref name="table"/> (by shard
    /// index; add before a call, subtract after): the outstanding work by which an expert's rows are split among its
    /// replicas. Kept per table, and dropped with it.
    /// </summary>
    internal long[] Outstanding(Model.Dispatch.ExpertRoutingTable table) => _outstanding.GetValue(table, t => new long[t.Shards.Count]);

    /// <summary>Sends an encoded ShardRequest to the shard <paramref name="key"/> names; returns its encoded ShardResponse.</summary>
    internal async Task<WireBytes> CallAsync(string key, int rows, WireBytes request, CancellationToken cancellationToken)
    {
        var shard = grains.GetGrain<IExpertShardGrain>(key);
        return await _retry.ExecuteAsync(
            async cancel => await hedging.CallAsync(
                key,
                rows,
                c => shard.Compute(request, c),
                (silo, c) => alternates.On(silo).Compute(key, request, c),
                cancel),
            cancellationToken);
    }
}
