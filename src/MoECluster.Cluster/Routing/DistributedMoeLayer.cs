using System.Diagnostics;
using System.Globalization;
using MoECluster.Cluster.Grains;
using MoECluster.Cluster.Hosting;
using MoECluster.Cluster.Telemetry;
using MoECluster.Model.Configuration;
using MoECluster.Model.Dispatch;
using MoECluster.Model.Layers;
using MoECluster.Model.Numerics;
using MoECluster.Wire;

namespace MoECluster.Cluster.Routing;

/// <summary>
/// One model's MoE layers run across the cluster: the router half (gate, W_down; W_up and the shared expert) runs
/// here on the model library, the experts run in <see cref="IExpertShardGrain"/>s. Per layer and batch: route in
/// d, project to ℓ, group rows by shard (one row per token and shard), send one ℓ-wide MessagePack payload per
/// shard in parallel, sum the returned ℓ-wide partials in fp32 in shard order, project back to d.
/// <para>
/// Numbers stay numbers: the model library throws <see cref="ForwardOverflowException"/> where a step leaves the
/// float32 range (the input is too large: the client's to fix), and so does this class where the rows do not fit the
/// wire's element type (fp16 holds ±65504). A shard that refuses a call, or answers what does not decode or is not
/// finite, is the cluster's fault: <see cref="ShardFailureException"/>.
/// </para>
/// </summary>
public sealed class DistributedMoeLayer(string modelId, ModelCatalog catalog, IGrainFactory grains, TrafficLedger ledger, string localSilo, ShardCallRetry retry, ShardCallHedging hedging, IShardAlternateClient alternates, WireLimits wireLimits)
{
    private long _requests;

    private MoeModel Model => catalog.Get(modelId);

    public string Mode => MoeModes.Of(Model.Config);

    /// <summary>The mixer output y of one MoE layer for an already-normed x [tokens, d].</summary>
    public async Task<(float[] Y, LayerTraffic Traffic)> ForwardLayerAsync(int layer, float[] x, int tokens, WireDType wire, CancellationToken cancellationToken)
    {
        var clock = Stopwatch.StartNew();
        var model = Model;
        var mixer = model.RouterMixer(layer);
        int width = model.Config.RoutedWidth;
        var (plan, z) = await Task.Run(() => mixer.Prepare(x, tokens), cancellationToken);
        var map = catalog.ShardMap(modelId, layer);
        var dispatches = ShardDispatchPlan.Build(plan, map);
        int routedRows = dispatches.Sum(d => d.Rows);
        long predicted = 2 * WireSize.ActivationBytes(routedRows, width, wire);
        var calls = dispatches.Select(d => CallShardAsync(layer, d, z, x, width, wire, cancellationToken)).ToArray();
        var results = await Task.WhenAll(calls);
        ledger.RecordBatch(
            new LayerBatch(modelId, Mode, layer, model.Config.HiddenSize, width, plan.TopK, model.Config.NRoutedExperts, tokens, predicted),
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

        ForwardOverflowException.ThrowIfNonFinite(u, layer, "the sum of the expert shards' partial sums", x);
        var y = new float[x.Length];
        await Task.Run(() => mixer.Finish(u, x, tokens, y), cancellationToken);
        var traffic = new LayerTraffic(layer, Mode, WireDTypes.Name(wire), tokens, width, routedRows,
            dispatchPayload, combinePayload, dispatchMessage, combineMessage, predicted, results.Length, clock.Elapsed.TotalMilliseconds);
        return (y, traffic);
    }

    /// <summary>x ← x + mixer_l(RMSNorm_l(x)) over every MoE layer in order.</summary>
    public async Task<(float[] Y, IReadOnlyList<LayerTraffic> Traffic)> ForwardStackAsync(float[] x, int tokens, WireDType wire, CancellationToken cancellationToken)
    {
        var model = Model;
        float[] state = (float[])x.Clone();
        var traffic = new List<LayerTraffic>();
        foreach (int layer in model.Config.MoeLayers)
        {
            var normed = new float[state.Length];
            RmsNorm.Apply(state, model.RouterMixer(layer).Weights.NormWeight, model.Config.LayerNormEpsilon, normed);
            var (y, t) = await ForwardLayerAsync(layer, normed, tokens, wire, cancellationToken);
            for (int i = 0; i < state.Length; i++)
            {
                state[i] += y[i];
            }

            ForwardOverflowException.ThrowIfNonFinite(state, layer, "the residual sum x + mixer(RMSNorm(x))", x);
            traffic.Add(t);
        }

        return (state, traffic);
    }

    private async Task<(ShardDispatch Dispatch, float[] Partials, ShardCallTraffic Traffic)> CallShardAsync(
        int layer, ShardDispatch dispatch, float[] z, float[] x, int width, WireDType wire, CancellationToken cancellationToken)
    {
        float[] rows = ShardDispatchPlan.GatherRows(z, dispatch.Tokens, width);
        var counts = new byte[dispatch.Rows];
        for (int i = 0; i < dispatch.Rows; i++)
        {
            counts[i] = checked((byte)dispatch.PairCount(i));
        }

        ushort[] experts = [.. dispatch.Experts.Select(e => checked((ushort)e))];
        var request = WireFormat.BuildRequest(modelId, layer, dispatch.Shard.FirstExpert, dispatch.Shard.ExpertCount,
            rows, dispatch.Rows, width, wire, counts, experts, dispatch.Weights, wire, Interlocked.Increment(ref _requests));
        if (request.Rows.FindNonFinite() >= 0)
        {
            // z is finite (Prepare checked it): its values do not fit the wire's element type.
            throw new ForwardOverflowException(string.Create(CultureInfo.InvariantCulture,
                $"layer {layer}: the routed rows reach {FloatRange.MaxAbs(rows):G3}, beyond the range of the {WireCodecs.Get(wire).Name} wire ({WireCodecs.Get(wire).Range}), for this input, whose largest magnitude is {FloatRange.MaxAbs(x):G3}: {WireCodecs.OverflowAdvice(WireCodecs.Get(wire))}"));
        }

        byte[] bytes = WireFormat.Serialize(request);
        var shard = grains.GetGrain<IExpertShardGrain>(dispatch.Shard.Key);
        WireBytes reply;
        ShardResponse response;
        try
        {
            reply = await retry.ExecuteAsync(
                async cancel => await hedging.CallAsync(
                    dispatch.Shard.Key,
                    dispatch.Rows,
                    c => shard.Compute(new WireBytes(bytes), c),
                    (silo, c) => alternates.On(silo).Compute(dispatch.Shard.Key, new WireBytes(bytes), c),
                    cancel),
                cancellationToken);
            response = WireFormat.DecodeResponse(reply.Bytes, wireLimits, dispatch.Rows, width);
        }
        catch (ForwardOverflowException e)
        {
            // The shard names the step in terms of its rows z; the client knows its input x.
            throw e.Stage is string stage
                ? ForwardOverflowException.At(layer, stage, FloatRange.MaxAbs(x), e)
                : new ForwardOverflowException(string.Create(CultureInfo.InvariantCulture,
                    $"{e.Message}, for this input, whose largest magnitude is {FloatRange.MaxAbs(x):G3}: {WireCodecs.OverflowAdvice(WireCodecs.Get(wire))}"), null, e);
        }
        catch (Exception e) when (!IsPassThrough(e))
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
            localSilo, response.Silo, request.Rows.PayloadBytes, bytes.Length, response.Partials.PayloadBytes, reply.Bytes.Length, dispatch.Rows));
    }

    /// <summary>What a shard call may throw that is not the shard's failure: cancellation, the deadline, a silo lost for good (Orleans' own).</summary>
    private static bool IsPassThrough(Exception e) => e is OperationCanceledException or TimeoutException or OrleansException || ShardCallRetry.IsSiloLoss(e);
}
