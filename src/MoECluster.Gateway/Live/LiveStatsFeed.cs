using System.Text.Json;
using System.Text.Json.Nodes;
using MoECluster.Cluster.Telemetry;
using MoECluster.Gateway.Limits;

namespace MoECluster.Gateway.Live;

/// <summary>
/// The document of <c>GET /stats</c> and of every event of <c>GET /v1/stats/stream</c>: the cluster's routed
/// traffic (<see cref="StatsReport"/>, collected from every silo) plus this gateway's request figures under
/// <c>gateway</c> (and what its limits hold now under <c>gateway.limits</c>). Collections are shared: however many
/// pages are open, the silos are asked at most once per <see cref="MinimumInterval"/>.
/// </summary>
public sealed class LiveStatsFeed(
    ClusterStatistics cluster,
    GatewayRequestStatistics requests,
    GatewayAdmission admission,
    TimeProvider clock,
    IGrainFactory grains,
    Microsoft.Extensions.Options.IOptions<MoECluster.Cluster.Hosting.MoeClusterOptions> options) : IDisposable
{
    public static readonly TimeSpan MinimumInterval = TimeSpan.FromMilliseconds(500);

    private readonly SemaphoreSlim _gate = new(1, 1);
    private (DateTimeOffset At, JsonObject Document)? _last;

    /// <summary>A fresh document (used by <c>/stats</c>: always collected now).</summary>
    public async Task<JsonObject> CollectAsync(CancellationToken cancel)
    {
        var report = await cluster.ReportAsync().WaitAsync(cancel);
        var document = (JsonObject)JsonSerializer.SerializeToNode(report, GatewayEndpoints.Json)!;
        var gateway = (JsonObject)JsonSerializer.SerializeToNode(requests.Snapshot(), GatewayEndpoints.Json)!;
        gateway["limits"] = JsonSerializer.SerializeToNode(admission.Report(), GatewayEndpoints.Json);
        document["gateway"] = gateway;
        document["placement"] = await PlacementAsync(cancel);
        return document;
    }

    /// <summary>The latest document, collected again when older than <see cref="MinimumInterval"/>.</summary>
    public async Task<JsonObject> LatestAsync(CancellationToken cancel)
    {
        await _gate.WaitAsync(cancel);
        try
        {
            var now = clock.GetUtcNow();
            if (_last is { } last && now - last.At < MinimumInterval)
            {
                return last.Document;
            }

            var document = await CollectAsync(cancel);
            _last = (now, document);
            return document;
        }
        finally
        {
            _gate.Release();
        }
    }

    public void Dispose() => _gate.Dispose();

    /// <summary>
    /// Each model's expert placement: its epoch (0: the default contiguous shards), each re-planned layer's shards
    /// (expert sets) and extra replicas, and the history of re-plans. A model whose placement does not answer in time is
    /// left out of this document.
    /// </summary>
    private async Task<JsonArray> PlacementAsync(CancellationToken cancel)
    {
        var placements = await Task.WhenAll(options.Value.Models.Keys.Select(async model =>
        {
            try
            {
                return await grains.GetGrain<MoECluster.Cluster.Contracts.IExpertPlacementGrain>(model).Get().WaitAsync(ClusterStatistics.SiloAnswerTimeout, cancel);
            }
            catch (Exception e) when (e is TimeoutException or OrleansException)
            {
                return null;
            }
        }));
        var array = new JsonArray();
        foreach (var p in placements.OfType<MoECluster.Cluster.Contracts.ModelPlacement>())
        {
            array.Add(JsonSerializer.SerializeToNode(new
            {
                p.Model,
                p.Epoch,
                Layers = p.Layers.Select(l => new { l.Layer, l.Shards }),
                p.History,
            }, GatewayEndpoints.Json));
        }

        return array;
    }
}
