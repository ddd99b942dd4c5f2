using System.Diagnostics;
using System.Globalization;
using Microsoft.Extensions.Options;
using MoECluster.Cluster.Contracts;
using MoECluster.Cluster.Dispatch;
using MoECluster.Cluster.Hosting;
using MoECluster.Cluster.Telemetry;
using MoECluster.Model.Configuration;
using MoECluster.Model.Numerics;
using MoECluster.Wire;

namespace MoECluster.Cluster.Requests;

/// <summary>
/// The forward of a router's request, batched with the concurrent requests of the same model, layer (or stack) and wire
/// types (dispatch and combine) on this front-end silo (<see cref="ForwardBatcher{TKey, TTraffic}"/>, bounded by MoECluster:FrontEndBatching): one
/// <see cref="Model.Layers.MoeModel.ForwardLayerAsync"/> or <see cref="Model.Layers.MoeModel.ForwardStackAsync"/> with one
/// <see cref="OrleansExpertDispatcher"/> over all their tokens, so the gate, W_down, W_up and the shared expert are one GEMM
/// and each shard gets one message per layer for all of them. One per silo (a DI singleton); the router grain delegates to it.
/// A batch that overflows (<see cref="ForwardOverflowException"/>, the client's input) is run again one request at a time.
/// </summary>
public sealed class FrontEndBatcher
{
    private readonly ModelCatalog _catalog;
    private readonly ShardCalls _shards;
    private readonly TrafficLedger _ledger;
    private readonly bool _enabled;
    private readonly ForwardBatcher<ForwardBatchKey, IReadOnlyList<LayerTraffic>> _batcher;

    public FrontEndBatcher(ModelCatalog catalog, ShardCalls shards, TrafficLedger ledger, IOptions<MoeClusterOptions> options)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(ledger);
        _catalog = catalog;
        _shards = shards;
        _ledger = ledger;
        var batching = options.Value.FrontEndBatching;
        _enabled = batching.Enabled;
        _batcher = new(
            ForwardAsync,
            e => e is ForwardOverflowException,
            batching.EffectiveMaxTokens(options.Value.Gateway),
            (key, batch) => ledger.RecordFrontEndBatch(key.Model, key.Target, key.Wire, batch, MoeModes.Of(catalog.Get(key.Model).Config)),
            batching.MaxBatchesInFlight);
    }

    /// <summary>Requests waiting at this silo for the next forward of <paramref name="key"/>.</summary>
    public int Queued(ForwardBatchKey key) => _batcher.Queued(key);

    /// <summary>
    /// The answer to <paramref name="call"/> (already validated) on <paramref name="modelId"/>: its output rows and its
    /// layers' traffic (under batching the batch's shared out per token, see <see cref="LayerTraffic"/>).
    /// </summary>
    public async Task<ForwardReply> ForwardAsync(string modelId, ForwardCall call, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(call);
        var key = new ForwardBatchKey(modelId, call.Layer, call.WireDispatch, call.WireCombine);
        if (!_enabled)
        {
            // The math runs on the thread pool, off the caller's scheduler; the shard calls are made from there.
            long started = Stopwatch.GetTimestamp();
            var alone = await Task.Run(() => ForwardAsync(key, call.Hidden, call.Tokens, cancellationToken), cancellationToken);
            _ledger.RecordForward(modelId, MoeModes.Of(_catalog.Get(modelId).Config), key.Target, Stopwatch.GetElapsedTime(started).TotalSeconds);
            return new ForwardReply(alone.Hidden, alone.Traffic);
        }

        // The batcher runs every forward on the thread pool.
        var result = await _batcher.ForwardAsync(key, call.Hidden, call.Tokens, cancellationToken);
        return new ForwardReply(result.Hidden, Share(result.Traffic, call.Tokens, result.Batch));
    }

    /// <summary>
    /// One caller's part of a batch's traffic: the byte counts and routed rows shared out per token (batch × tokens /
    /// batch tokens, rounded), messages and time the batch's, the batch's size beside them. A lone request's is its own.
    /// </summary>
    public static IReadOnlyList<LayerTraffic> Share(IReadOnlyList<LayerTraffic> batch, int tokens, FrontEndBatch forward)
    {
        ArgumentNullException.ThrowIfNull(batch);
        if (forward.Requests == 1)
        {
            return batch;
        }

        return [.. batch.Select(l => ShareLayer(l, tokens, forward))];
    }

    /// <summary>
    /// One layer's share. Routed rows go by tokens; payload bytes (fixed bytes per routed row for a wire type) go by the
    /// shared rows, so a share keeps the batch's bytes per row exactly (rounding rows and bytes apart broke
    /// bytes = rows × row bytes, and with it the standard / latent byte ratio, by a few parts in 10⁵).
    /// </summary>
    private static LayerTraffic ShareLayer(LayerTraffic l, int tokens, FrontEndBatch forward)
    {
        long total = forward.Tokens;
        long ByTokens(long value) => ((value * tokens) + (total / 2)) / total;
        long rows = ByTokens(l.RoutedRows);
        long ByRows(long value) => l.RoutedRows == 0 ? ByTokens(value) : ((value * rows) + (l.RoutedRows / 2)) / l.RoutedRows;
        return l with
        {
            Tokens = tokens,
            RoutedRows = (int)rows,
            DispatchPayloadBytes = ByRows(l.DispatchPayloadBytes),
            CombinePayloadBytes = ByRows(l.CombinePayloadBytes),
            DispatchMessageBytes = ByTokens(l.DispatchMessageBytes),
            CombineMessageBytes = ByTokens(l.CombineMessageBytes),
            PredictedPayloadBytes = ByRows(l.PredictedPayloadBytes),
            BatchRequests = forward.Requests,
            BatchTokens = forward.Tokens,
        };
    }

    private async Task<ForwardBatchOutput<IReadOnlyList<LayerTraffic>>> ForwardAsync(ForwardBatchKey key, float[] hidden, int tokens, CancellationToken cancellationToken)
    {
        var model = _catalog.Get(key.Model);
        var dispatcher = _shards.Dispatcher(key.Model, key.Wire);
        float[] y = key.Layer is int layer
            ? await model.ForwardLayerAsync(layer, hidden, tokens, dispatcher, cancellationToken)
            : await model.ForwardStackAsync(hidden, tokens, dispatcher, cancellationToken: cancellationToken);
        return new ForwardBatchOutput<IReadOnlyList<LayerTraffic>>(y, dispatcher.Traffic);
    }
}

/// <summary>
/// What requests share to be batched at the front-end: the model, the layer (null: the whole stack), the wire type of each
/// direction (requests that differ in either are not merged: their messages would not be the same bytes).
/// </summary>
public readonly record struct ForwardBatchKey(string Model, int? Layer, WireDType WireDispatch, WireDType WireCombine)
{
    /// <summary>Both directions' wire types.</summary>
    public WirePair Wire => WirePair.Of(WireDispatch, WireCombine);

    /// <summary>The layer index, or "stack".</summary>
    public string Target => Layer is int l ? l.ToString(CultureInfo.InvariantCulture) : "stack";
}
