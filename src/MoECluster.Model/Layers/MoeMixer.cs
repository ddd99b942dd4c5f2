using System.Buffers;
using System.Diagnostics;
using System.Numerics;
using MoECluster.Model.Compute;
using MoECluster.Model.Configuration;
using MoECluster.Model.Dispatch;
using MoECluster.Model.Experts;
using MoECluster.Model.Numerics;
using MoECluster.Model.Routing;

namespace MoECluster.Model.Layers;

/// <summary>
/// One MoE mixer, wired from Megatron-Core's four parts: router (gate logits in d → top-K), W_down to ℓ, a token
/// dispatcher with the experts and the combine behind it (<see cref="IExpertDispatcher"/>: this process's grouped
/// experts, or the cluster's shards), W_up back to d, plus the shared expert on the full-width x.
/// y = W_up Σ_k w_k E_k(W_down x) + S2 relu(S1 x)² (standard MoE: W_down = W_up = identity).
/// </summary>
public sealed class MoeMixer
{
    private readonly MoeLayerWeights _weights;
    private readonly GroupedExperts _experts;
    private readonly IComputeBackend _backend;
    private readonly IPreparedLinear _gate;
    private readonly IPreparedLinear? _latentDown;
    private readonly IPreparedLinear? _latentUp;
    private readonly IPreparedLinear? _sharedUp;
    private readonly IPreparedLinear? _sharedDown;

    public MoeMixer(MoeLayerWeights weights, IComputeBackend? backend = null)
    {
        _weights = weights;
        _backend = backend ?? new ReferenceBackend();
        Router = new TopKRouter(weights.Config, weights.GateBias);
        _gate = _backend.Prepare(weights.Gate);
        _latentDown = weights.LatentDown is { } down ? _backend.Prepare(down) : null;
        _latentUp = weights.LatentUp is { } up ? _backend.Prepare(up) : null;
        _sharedUp = weights.SharedUp is { } s1 ? _backend.Prepare(s1) : null;
        _sharedDown = weights.SharedDown is { } s2 ? _backend.Prepare(s2) : null;
        _experts = new GroupedExperts(weights.Experts, weights.Config.RoutedWidth, weights.Config.MoeIntermediateSize, _backend, weights.Layer);
        LocalDispatcher = new LocalExpertDispatcher(_experts);
    }

    public IComputeBackend Backend => _backend;

    public GroupedExperts Experts => _experts;

    public MoeModelConfig Config => _weights.Config;

    public int Layer => _weights.Layer;

    public MoeLayerWeights Weights => _weights;

    public TopKRouter Router { get; }

    /// <summary>Gate logits [tokens, N] in fp32 from the full-width input.</summary>
    public float[] GateLogits(ReadOnlySpan<float> x, int tokens)
    {
        var logits = new float[tokens * Config.NRoutedExperts];
        _backend.Linear(_gate, x, tokens, logits);
        return logits;
    }

    /// <summary>The routing decision for <paramref name="x"/> ([tokens, d], already normed).</summary>
    public RoutingPlan Route(ReadOnlySpan<float> x, int tokens) => Router.Route(GateLogits(x, tokens), tokens);

    /// <summary>The dispatcher over this mixer's own experts (all of them for a full mixer, none for a router's).</summary>
    public LocalExpertDispatcher LocalDispatcher { get; }

    /// <summary>
    /// The mixer output y [tokens, d] for an already-normed input x [tokens, d]: <see cref="Prepare"/>, then
    /// <paramref name="dispatcher"/> (this mixer's own experts when null) for the combined sums u, then
    /// <see cref="Finish"/>. The one MoE pipeline, in process and on the cluster.
    /// <para>
    /// The shared expert overlaps the dispatch (as Megatron-Core's shared-expert overlap): when the dispatcher has sent its
    /// rows and not yet answered (the cluster's shards), S2 relu(S1 x)² is computed here while the shards compute, and the
    /// finish only adds it. The values are the same bits either way (the same products, added in the same order). If the
    /// shared expert fails (its output out of range), the dispatch is still awaited and its error, earlier in the
    /// pipeline, wins, as when the two ran one after the other.
    /// </para>
    /// </summary>
    public async Task ForwardAsync(ReadOnlyMemory<float> x, int tokens, Memory<float> y, IExpertDispatcher? dispatcher = null, CancellationToken cancellationToken = default)
    {
        CheckShape(x.Span, tokens, y.Span);
        long started = Stopwatch.GetTimestamp();
        var (plan, z) = Prepare(x.Span, tokens);
        var request = new ExpertDispatchRequest(Layer, plan, z, Config.RoutedWidth, x, started);
        IExpertDispatcher experts = dispatcher ?? LocalDispatcher;
        ValueTask<float[]> dispatched = experts.DispatchAsync(request, cancellationToken);
        float[]? shared = null;
        try
        {
            if (!dispatched.IsCompleted && _sharedUp is not null)
            {
                try
                {
                    shared = SharedExpert(x.Span, tokens);
                }
                catch (ForwardOverflowException)
                {
                    await dispatched;
                    throw;
                }
            }

            float[] u = await dispatched;
            if (u.Length != z.Length)
            {
                throw new InvalidOperationException($"layer {Layer}: the dispatcher answered {u.Length} values for [{tokens}, {Config.RoutedWidth}]");
            }

            Finish(u, x.Span, tokens, y.Span, shared);
        }
        finally
        {
            if (shared is not null)
            {
                ArrayPool<float>.Shared.Return(shared);
            }
        }

        experts.LayerFinished(request);
    }

    /// <summary>
    /// <see cref="ForwardAsync"/> with this mixer's own experts, on the calling thread (the local dispatcher completes
    /// synchronously).
    /// </summary>
    public void Forward(float[] x, int tokens, float[] y) => ForwardAsync(x, tokens, y).GetAwaiter().GetResult();

    /// <summary>
    /// The part before dispatch: gate logits in d (fp32), top-K routing, and the routed rows z = W_down x
    /// ([tokens, w]; z = x for a standard MoE). Logits or rows outside the float32 range (the input is too large for
    /// the model) throw <see cref="ForwardOverflowException"/>.
    /// </summary>
    public (RoutingPlan Plan, float[] Z) Prepare(ReadOnlySpan<float> x, int tokens)
    {
        float[] logits = GateLogits(x, tokens);
        ForwardOverflowException.ThrowIfNonFinite(logits, Layer, "the gate logits W_g x", x);
        RoutingPlan plan = Router.Route(logits, tokens);
        float[] z = new float[tokens * Config.RoutedWidth];
        if (_latentDown is { } down)
        {
            _backend.Linear(down, x, tokens, z);
            ForwardOverflowException.ThrowIfNonFinite(z, Layer, "the latent projection W_down x", x);
        }
        else
        {
            x.CopyTo(z);
        }

        return (plan, z);
    }

    /// <summary>
    /// The part after combine: y = W_up u (u for a standard MoE) + S2 relu(S1 x)². A y outside the float32 range
    /// throws <see cref="ForwardOverflowException"/>.
    /// </summary>
    public void Finish(ReadOnlySpan<float> u, ReadOnlySpan<float> x, int tokens, Span<float> y) => Finish(u, x, tokens, y, null);

    /// <summary>
    /// <see cref="Finish(ReadOnlySpan{float}, ReadOnlySpan{float}, int, Span{float})"/> with the shared expert's output
    /// already computed (<paramref name="shared"/>, at least [tokens, d], from <see cref="SharedExpert"/>), or computed
    /// here when null.
    /// </summary>
    private void Finish(ReadOnlySpan<float> u, ReadOnlySpan<float> x, int tokens, Span<float> y, float[]? shared)
    {
        CheckShape(x, tokens, y);
        if (_latentUp is { } up)
        {
            _backend.Linear(up, u, tokens, y);
        }
        else
        {
            u.CopyTo(y);
        }

        if (_sharedUp is not null)
        {
            float[] rented = shared ?? SharedExpert(x, tokens);
            try
            {
                Span<float> s = rented.AsSpan(0, y.Length);
                int i = 0;
                for (; i <= s.Length - Vector<float>.Count; i += Vector<float>.Count)
                {
                    (new Vector<float>(y[i..]) + new Vector<float>(s[i..])).CopyTo(y[i..]);
                }

                for (; i < s.Length; i++)
                {
                    y[i] += s[i];
                }
            }
            finally
            {
                if (shared is null)
                {
                    ArrayPool<float>.Shared.Return(rented);
                }
            }
        }

        ForwardOverflowException.ThrowIfNonFinite(y, Layer, _latentUp is null ? "the mixer output y" : "the mixer output y = W_up u + shared expert", x);
    }

    /// <summary>S2 relu(S1 x)² over [tokens, d] into a buffer rented from the shared pool (the caller returns it); out of range throws.</summary>
    private float[] SharedExpert(ReadOnlySpan<float> x, int tokens)
    {
        int length = tokens * Config.HiddenSize;
        float[] rented = ArrayPool<float>.Shared.Rent(length);
        try
        {
            Span<float> shared = rented.AsSpan(0, length);
            _backend.ExpertFfn(_sharedUp!, _sharedDown!, x, tokens, shared);
            ForwardOverflowException.ThrowIfNonFinite(shared, Layer, "the shared expert S2 relu(S1 x)²", x);
            return rented;
        }
        catch
        {
            ArrayPool<float>.Shared.Return(rented);
            throw;
        }
    }

    private void CheckShape(ReadOnlySpan<float> x, int tokens, Span<float> y)
    {
        int d = Config.HiddenSize;
        if (x.Length != (long)tokens * d || y.Length != x.Length)
        {
            throw new ArgumentException($"layer {Layer}: input/output must be [{tokens}, {d}]");
        }
    }
}
