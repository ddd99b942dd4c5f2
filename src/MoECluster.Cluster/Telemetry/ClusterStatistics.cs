using MoECluster.Cluster.Contracts;
using MoECluster.Cluster.Hosting;
using MoECluster.Model.Balancing;
using MoECluster.Model.Configuration;

namespace MoECluster.Cluster.Telemetry;

/// <summary>
/// The cluster-wide picture behind the gateway's <c>/stats</c>: every active silo's ledger (routers' payload
/// accounting, Orleans socket bytes, shard placement) merged, with measured figures beside the predictions.
/// </summary>
public sealed class ClusterStatistics(IGrainFactory grains)
{
    /// <summary>How long one silo may take to answer before the report goes on without it (a silo that just died).</summary>
    public static readonly TimeSpan SiloAnswerTimeout = TimeSpan.FromSeconds(2);

    /// <summary>Every active silo's traffic; a silo that doesn't answer in time or can't be reached yet is left out.</summary>
    public async Task<IReadOnlyList<SiloTraffic>> CollectAsync() =>
        [.. (await EverySilo.AskAsync<SiloTraffic?>(grains, async silo => await grains.GetGrain<ISiloTelemetryGrain>(silo).GetTraffic(), null, SiloAnswerTimeout))
            .OfType<SiloTraffic>()];

    public async Task<StatsReport> ReportAsync() => StatsReport.From(await CollectAsync());
}

/// <summary>
/// The JSON document of <c>/stats</c>. <see cref="ShardBatches"/>: continuous batching per expert shard (and alternate) —
/// grouped passes, requests and rows merged, the largest pass. <see cref="FrontEndBatches"/>: batching at the front-end per
/// (model, layer or stack, wire, front-end silo) — forwards, requests and tokens merged, the largest forward.
/// </summary>
public sealed record StatsReport(
    IReadOnlyList<SiloSummary> Silos,
    IReadOnlyList<ModelSummary> Models,
    IReadOnlyList<PayloadTraffic> SiloPairs,
    IReadOnlyList<SocketTraffic> Socket,
    IReadOnlyList<TcpTraffic> Tcp,
    TrafficTotals Totals,
    double? StandardOverLatentBytesPerToken,
    IReadOnlyList<ShardBatchTotals> ShardBatches,
    IReadOnlyList<FrontEndBatchTotals> FrontEndBatches,
    IReadOnlyList<LayerBalance> Balance)
{
    public static StatsReport From(IReadOnlyList<SiloTraffic> silos)
    {
        var names = silos.ToDictionary(s => s.Silo, s => s.Name);
        string Name(string silo) => names.TryGetValue(silo, out string? n) ? n : silo;
        var payload = silos.SelectMany(s => s.Payload).ToList();
        var models = silos.SelectMany(s => s.Layers)
            .GroupBy(l => (l.Model, l.Layer))
            .Select(g => g.Aggregate((a, b) => a with
            {
                Tokens = a.Tokens + b.Tokens,
                Batches = a.Batches + b.Batches,
                PredictedPayloadBytes = a.PredictedPayloadBytes + b.PredictedPayloadBytes,
                ExpertTokens = [.. a.ExpertTokens.Zip(b.ExpertTokens, (x, y) => x + y)],
            }))
            .GroupBy(l => l.Model)
            .Select(g => ModelSummary.From(g.Key, [.. g.OrderBy(l => l.Layer)], payload.Where(p => p.Model == g.Key).ToList()))
            .OrderBy(m => m.Model, StringComparer.Ordinal)
            .ToList();
        var socket = silos.SelectMany(s => s.Socket).Select(s => s with { FromSilo = Name(s.FromSilo), ToSilo = Name(s.ToSilo) }).ToList();
        var tcp = silos.SelectMany(s => s.Tcp).Select(t => t with { FromSilo = Name(t.FromSilo) }).ToList();
        var siloTcp = tcp.Where(t => t.Kind == TcpByteCounting.Silo).ToList();
        var totals = new TrafficTotals(
            payload.Sum(p => p.PayloadBytes),
            payload.Sum(p => p.MessageBytes),
            payload.Sum(p => p.Messages),
            socket.Sum(s => s.MessageBytes + s.FrameBytes),
            socket.Sum(s => s.Messages),
            siloTcp.Sum(t => t.BytesWritten),
            siloTcp.Sum(t => t.Connections),
            silos.Count > 0 && silos.All(s => s.Tcp.Count == 0 || s.Tcp.All(t => t.Tls)) && silos.Any(s => s.Tcp.Any(t => t.Tls)));
        var standard = models.FirstOrDefault(m => m.Mode == MoeModes.Standard);
        var latent = models.FirstOrDefault(m => m.Mode == MoeModes.Latent);
        double? ratio = standard is { MeasuredPayloadBytesPerToken: > 0 } && latent is { MeasuredPayloadBytesPerToken: > 0 }
            ? standard.MeasuredPayloadBytesPerToken / latent.MeasuredPayloadBytesPerToken
            : null;
        return new StatsReport(
            [.. silos.Select(s => new SiloSummary(s.Silo, s.Name, s.Role,
                [.. s.Shards.Select(x => x.Key).Where(k => !Dispatch.ShardKeys.IsAlternate(k)).Order(StringComparer.Ordinal)],
                [.. s.Shards.Select(x => x.Key).Where(Dispatch.ShardKeys.IsAlternate).Order(StringComparer.Ordinal)]))],
            models,
            [.. payload.Select(p => p with { FromSilo = Name(p.FromSilo), ToSilo = Name(p.ToSilo) })],
            socket,
            tcp,
            totals,
            ratio,
            [.. silos.SelectMany(s => s.ShardBatches).Select(b => b with { Silo = Name(b.Silo) }).OrderBy(b => b.Shard, StringComparer.Ordinal)],
            [.. silos.SelectMany(s => s.FrontEndBatches).Select(b => b with { Silo = Name(b.Silo) })
                .OrderBy(b => b.Model, StringComparer.Ordinal).ThenBy(b => b.Target, StringComparer.Ordinal).ThenBy(b => b.Wire, StringComparer.Ordinal).ThenBy(b => b.Silo, StringComparer.Ordinal)],
            LayerBalance.From(silos.SelectMany(s => s.ShardBatches).Select(b => b with { Silo = Name(b.Silo) })));
    }
}

/// <summary>One expert silo's share of a layer's work since it started: the shards it computed, their rows, (row, expert) pairs and compute time.</summary>
public sealed record SiloWork(string Silo, int Shards, long Rows, long Pairs, long ComputeMicroseconds);

/// <summary>
/// How evenly a layer's work is spread over the expert silos that computed it: per silo (<see cref="SiloWork"/>), and the
/// imbalance — the busiest silo over the mean — of rows, of (row, expert) pairs and of compute time. 1 is balanced; the
/// slowest silo sets the pace of every forward of the layer.
/// </summary>
public sealed record LayerBalance(string Model, int Layer, IReadOnlyList<SiloWork> Silos, double RowsImbalance, double PairsImbalance, double ComputeImbalance)
{
    public static IReadOnlyList<LayerBalance> From(IEnumerable<ShardBatchTotals> batches) =>
        [.. batches
            .Select(b => (Batch: b, Shard: Dispatch.ShardKeys.TryParse(b.Shard, out var shard) ? shard : null))
            .Where(x => x.Shard is not null)
            .GroupBy(x => (x.Shard!.Model, x.Shard.Layer))
            .Select(layer =>
            {
                SiloWork[] work = [.. layer.GroupBy(x => x.Batch.Silo)
                    .Select(g => new SiloWork(g.Key, g.Count(), g.Sum(x => x.Batch.Rows), g.Sum(x => x.Batch.Pairs), g.Sum(x => x.Batch.ComputeMicroseconds)))
                    .OrderBy(w => w.Silo, StringComparer.Ordinal)];
                return new LayerBalance(layer.Key.Model, layer.Key.Layer, work,
                    ExpertLoad.Imbalance(work.Select(w => (double)w.Rows)), ExpertLoad.Imbalance(work.Select(w => (double)w.Pairs)), ExpertLoad.Imbalance(work.Select(w => (double)w.ComputeMicroseconds)));
            })
            .OrderBy(b => b.Model, StringComparer.Ordinal).ThenBy(b => b.Layer)];
}

/// <summary>A silo in <c>/stats</c>: the shards it holds, and the alternates (hedge targets of shards whose silo was overdue) it holds now.</summary>
public sealed record SiloSummary(string Address, string Name, string Role, IReadOnlyList<string> Shards, IReadOnlyList<string> Alternates);

/// <summary>
/// Cluster-wide sums. <see cref="SocketBytes"/>: what Orleans handed its connections silo to silo (messages + frames,
/// above TLS); <see cref="TcpBytes"/>: what those connections wrote to TCP (beneath TLS: records, handshakes and
/// connection preambles included); <see cref="Tls"/>: every silo's Orleans connections use TLS.
/// </summary>
public sealed record TrafficTotals(long PayloadBytes, long MessageBytes, long Messages, long SocketBytes, long SocketMessages, long TcpBytes, long TcpConnections, bool Tls);

/// <summary>
/// One model's routed traffic. Bytes per token are per token and per MoE layer, dispatch + combine:
/// measured = encoded activation blocks; predicted = rows the routing plans sent × width × element size.
/// </summary>
public sealed record ModelSummary(
    string Model,
    string Mode,
    int HiddenSize,
    int RoutedWidth,
    long Tokens,
    long MeasuredPayloadBytes,
    long MeasuredMessageBytes,
    long PredictedPayloadBytes,
    double MeasuredPayloadBytesPerToken,
    double PredictedPayloadBytesPerToken,
    double MeasuredMessageBytesPerToken,
    IReadOnlyList<LayerTotals> Layers)
{
    public static ModelSummary From(string model, IReadOnlyList<LayerTotals> layers, IReadOnlyList<PayloadTraffic> payload)
    {
        long tokens = layers.Sum(l => l.Tokens);
        long measured = payload.Sum(p => p.PayloadBytes);
        long messages = payload.Sum(p => p.MessageBytes);
        long predicted = layers.Sum(l => l.PredictedPayloadBytes);
        double perToken(long bytes) => tokens == 0 ? 0 : (double)bytes / tokens;
        return new ModelSummary(model, layers[0].Mode, layers[0].HiddenSize, layers[0].RoutedWidth, tokens,
            measured, messages, predicted, perToken(measured), perToken(predicted), perToken(messages), layers);
    }
}
