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
public sealed class LiveStatsFeed(ClusterStatistics cluster, GatewayRequestStatistics requests, GatewayAdmission admission, TimeProvider clock) : IDisposable
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
}
