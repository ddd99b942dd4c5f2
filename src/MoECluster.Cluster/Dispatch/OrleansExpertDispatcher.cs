using System.Diagnostics;
using System.Globalization;
using MoECluster.Cluster.Contracts;
using MoECluster.Cluster.Grains;
using MoECluster.Cluster.Telemetry;
using MoECluster.Model.Configuration;
using MoECluster.Model.Dispatch;
using MoECluster.Model.Numerics;
using MoECluster.Wire;

namespace MoECluster.Cluster.Dispatch;

/// <summary>
/// The cluster's <see cref="IExpertDispatcher"/>, for one request of one model in one <see cref="WirePair"/> (the routed
/// rows in its dispatch type, the partial sums asked for in its combine type): per layer, group the
/// plan's rows by shard (<see cref="ShardDispatchPlan"/> on the layer's <see cref="ExpertRoutingTable"/> of the moment: one row per
/// token and shard, an expert with replicas split among them by the pairs this silo has in flight at each), send one ℓ-wide MessagePack payload per shard to its <see cref="IExpertShardGrain"/> in parallel
/// (retried and hedged by <see cref="ShardCalls"/>), sum the returned ℓ-wide partials in fp32 in shard order, record
/// the batch in the <see cref="TrafficLedger"/> and the layer's <see cref="LayerTraffic"/> in <see cref="Traffic"/>.
/// Make one with <see cref="ShardCalls.Dispatcher"/>.
/// <para>
/// Numbers stay numbers: a routed row that does not fit the dispatch element type (fp16 holds ±65504), a partial sum
/// that does not fit the combine element type (the shard refuses to encode it), or a shard's step
/// that leaves the float32 range, throws <see cref="ForwardOverflowException"/> naming the client's input magnitude
/// (the client's to fix). A shard that refuses a call, or answers what does not decode or is not finite, is the
/// cluster's fault: <see cref="ShardFailureException"/>. A shard whose queue is full (<see cref="ShardBusyException"/>)
/// is back-pressure: passed through as it is, not retried, for the gateway's 429.
/// </para>
/// </summary>
public sealed class OrleansExpertDispatcher : IExpertDispatcher
{
    private readonly ShardCalls _shards;
    private readonly List<LayerTraffic> _traffic = [];
    private readonly Dictionary<ExpertDispatchRequest, LayerTraffic> _dispatched = new(ReferenceEqualityComparer.Instance);

    internal OrleansExpertDispatcher(ShardCalls shards, string modelId, WirePair wire)
    {
        _shards = shards;
        ModelId = modelId;
        Wire = wire;
    }

    public string ModelId { get; }

    /// <summary>The element type of each direction.</summary>
    public WirePair Wire { get; }

    /// <summary>What each finished layer moved, in layer order; its time runs from the layer's start to its output.</summary>
    public IReadOnlyList<LayerTraffic> Traffic
    {
        get
        {
            lock (_traffic)
            {
                return [.. _traffic];
            }
        }
    }

    public async ValueTask<float[]> DispatchAsync(ExpertDispatchRequest request, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        var config = _shards.Catalog.Get(ModelId).Config;
        string mode = MoeModes.Of(config);
        int layer = request.Layer;
        int width = request.Width;
        int tokens = request.Tokens;
        var plan = request.Plan;
        var table = _shards.Tables.For(ModelId, layer);
        long[] outstanding = _shards.Outstanding(table);
        var dispatches = ShardDispatchPlan.Build(plan, table, outstanding);
        int routedRows = dispatches.Sum(d => d.Rows);
        // One block per shard message each way: per-message parts (NVFP4's fp32 scale) count once per message.
        long predicted = dispatches.Sum(d => WireSize.ActivationBytes(d.Rows, width, Wire.Dispatch.Id) + WireSize.ActivationBytes(d.Rows, width, Wire.Combine.Id));
        var results = await Task.WhenAll(dispatches.Select(d => CallShardAsync(request, d, outstanding, cancellationToken)));
        _shards.Ledger.RecordBatch(
            new LayerBatch(ModelId, mode, layer, config.HiddenSize, width, plan.TopK, config.NRoutedExperts, tokens, predicted, Wire),
            plan.Experts,
            [.. results.Select(r => r.Traffic)]);

        var u = new float[tokens * width];
        long dispatchPayload = 0, combinePayload = 0, dispatchMessage = 0, combineMessage = 0;
        foreach (var (dispatch, partials, r) in results)
        {
            for (int i = 0; i < dispatch.Rows; i++)
            {
                var target = u.AsSpan(dispatch.Tokens[i] * width, width);
                var source = partials.AsSpan(i * width, width);
                for (int j = 0; j < width; j++)
                {
                    target[j] += source[j];
                }
            }

            dispatchPayload += r.DispatchPayloadBytes;
            combinePayload += r.CombinePayloadBytes;
            dispatchMessage += r.DispatchMessageBytes;
            combineMessage += r.CombineMessageBytes;
        }

        ForwardOverflowException.ThrowIfNonFinite(u, layer, "the sum of the expert shards' partial sums", request.Input.Span);
        var traffic = new LayerTraffic(layer, mode, Wire.Text, tokens, width, routedRows,
            dispatchPayload, combinePayload, dispatchMessage, combineMessage, predicted, results.Length,
            Stopwatch.GetElapsedTime(request.StartedTimestamp).TotalMilliseconds, BatchRequests: 1, BatchTokens: tokens,
            WireDispatch: Wire.Dispatch.Name, WireCombine: Wire.Combine.Name);
        lock (_traffic)
        {
            _dispatched[request] = traffic;
        }

        return u;
    }

    /// <summary>The layer has its output: its traffic, timed to now, joins <see cref="Traffic"/>.</summary>
    public void LayerFinished(ExpertDispatchRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        lock (_traffic)
        {
            if (_dispatched.Remove(request, out var traffic))
            {
                _traffic.Add(traffic with { Milliseconds = Stopwatch.GetElapsedTime(request.StartedTimestamp).TotalMilliseconds });
            }
        }
    }

    private async Task<(ShardDispatch Dispatch, float[] Partials, ShardCallTraffic Traffic)> CallShardAsync(
        ExpertDispatchRequest layer, ShardDispatch dispatch, long[] outstanding, CancellationToken cancellationToken)
    {
        Interlocked.Add(ref outstanding[dispatch.Shard.Index], dispatch.Pairs.Count);
        try
        {
            return await CallShardAsync(layer, dispatch, cancellationToken);
        }
        finally
        {
            Interlocked.Add(ref outstanding[dispatch.Shard.Index], -dispatch.Pairs.Count);
        }
    }

    private async Task<(ShardDispatch Dispatch, float[] Partials, ShardCallTraffic Traffic)> CallShardAsync(
        ExpertDispatchRequest layer, ShardDispatch dispatch, CancellationToken cancellationToken)
    {
        int width = layer.Width;
        float[] rows = ShardDispatchPlan.GatherRows(layer.Rows, dispatch.Tokens, width);
        var request = WireFormat.BuildRequest(ModelId, layer.Layer, dispatch.Shard.Experts,
            rows, width, Wire.Dispatch.Id, dispatch.Pairs, Wire.Combine.Id, _shards.NextRequestId());
        if (request.Rows.FindNonFinite() >= 0)
        {
            // z is finite (Prepare checked it): its values do not fit the dispatch element type.
            throw new ForwardOverflowException(string.Create(CultureInfo.InvariantCulture,
                $"layer {layer.Layer}: the routed rows reach {FloatRange.MaxAbs(rows):G3}, beyond the range of the {Wire.Dispatch.Name} wire ({Wire.Dispatch.Range}), for this input, whose largest magnitude is {layer.InputMaxAbs():G3}: {Wire.DispatchOverflowAdvice}"));
        }

        byte[] bytes = WireFormat.Serialize(request);
        WireBytes reply;
        ShardResponse response;
        long started = Stopwatch.GetTimestamp();
        try
        {
            reply = await _shards.CallAsync(dispatch.Shard.Key, dispatch.Rows, new WireBytes(bytes), cancellationToken);
            response = WireFormat.DecodeResponse(reply.Bytes, _shards.WireLimits, dispatch.Rows, width);
        }
        catch (ForwardOverflowException e)
        {
            // The shard names the step in terms of its rows z; the client knows its input x.
            throw e.Stage is string stage
                ? ForwardOverflowException.At(layer.Layer, stage, layer.InputMaxAbs(), e)
                : new ForwardOverflowException(string.Create(CultureInfo.InvariantCulture,
                    $"{e.Message}, for this input, whose largest magnitude is {layer.InputMaxAbs():G3}: {Wire.CombineOverflowAdvice}"), null, e);
        }
        catch (Exception e) when (!ShardCallRetry.IsCancellationOrClusterState(e) && e is not ShardBusyException)
        {
            throw new ShardFailureException($"expert shard {dispatch.Shard.Key} failed: {e.Message}", e);
        }

        int bad = response.Partials.FindNonFinite();
        if (bad >= 0)
        {
            throw new ShardFailureException(string.Create(CultureInfo.InvariantCulture,
                $"expert shard {dispatch.Shard.Key} on {response.Silo} answered a non-finite partial sum (row {bad / width}, column {bad % width}) for finite rows"));
        }

        float[] partials = response.Partials.Decode();
        return (dispatch, partials, new ShardCallTraffic(
            _shards.LocalSilo, response.Silo, request.Rows.PayloadBytes, bytes.Length, response.Partials.PayloadBytes, reply.Bytes.Length, dispatch.Rows,
            Stopwatch.GetElapsedTime(started).TotalSeconds));
    }
}
