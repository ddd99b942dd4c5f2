using MoECluster.Model.Numerics;
using MoECluster.Model.Routing;

namespace MoECluster.Model.Dispatch;

/// <summary>
/// The token dispatcher of an MoE layer (Megatron-Core's dispatcher strategy), with the experts and the combine behind
/// it: takes the routing plan and the routed rows z, returns the combined ℓ-wide sums u[t] = Σ_k w_tk · E_tk(z[t]).
/// What runs before (gate, top-K, W_down) and after (W_up, shared expert) is the mixer's
/// (<see cref="Layers.MoeMixer.ForwardAsync"/>). Implementations: <see cref="LocalExpertDispatcher"/> (the experts in
/// this process) and the cluster's (the experts in expert-shard grains).
/// <para>
/// Contract: u is [tokens, ℓ], every element written (zero only where a token's experts sum to zero); a step that
/// leaves the float32 range (or the range of the transport's element type) throws <see cref="ForwardOverflowException"/>
/// naming the layer and the largest magnitude of the layer's input (<see cref="ExpertDispatchRequest.Input"/>).
/// </para>
/// </summary>
public interface IExpertDispatcher
{
    /// <summary>The combined sums u [tokens, ℓ] for <paramref name="request"/>.</summary>
    ValueTask<float[]> DispatchAsync(ExpertDispatchRequest request, CancellationToken cancellationToken = default);

    /// <summary>
    /// Called by the mixer once the layer of <paramref name="request"/> has its output (after W_up and the shared
    /// expert), for a dispatcher that times whole layers; not called when the layer failed.
    /// </summary>
    void LayerFinished(ExpertDispatchRequest request)
    {
    }
}

/// <summary>
/// One layer's dispatch: the plan, the routed rows z ([Plan.Tokens, Width]), and for error messages and timing the
/// layer's input x (its largest magnitude is what a client can act on) and when the layer began
/// (<see cref="System.Diagnostics.Stopwatch.GetTimestamp"/>).
/// </summary>
public sealed record ExpertDispatchRequest(int Layer, RoutingPlan Plan, float[] Rows, int Width, ReadOnlyMemory<float> Input, long StartedTimestamp)
{
    public int Tokens => Plan.Tokens;

    /// <summary>The largest magnitude of the layer's input x (what overflow messages name).</summary>
    public float InputMaxAbs() => FloatRange.MaxAbs(Input.Span);
}
