using MoECluster.Model.Experts;
using MoECluster.Model.Numerics;

namespace MoECluster.Model.Dispatch;

/// <summary>
/// The in-process dispatcher: permute the plan's slots by expert, run the grouped experts of the layer held in this
/// process, combine each token's K slot outputs with its weights in fp64 in slot order (<see cref="WeightedSum"/>).
/// Completes synchronously.
/// </summary>
public sealed class LocalExpertDispatcher(Func<int, GroupedExperts> expertsOf) : IExpertDispatcher
{
    /// <summary>A dispatcher for the one layer <paramref name="experts"/> belongs to.</summary>
    public LocalExpertDispatcher(GroupedExperts experts)
        : this(layer => layer == experts.Layer ? experts : throw new ArgumentException($"these experts are layer {experts.Layer}'s, not layer {layer}'s", nameof(layer)))
    {
    }

    public ValueTask<float[]> DispatchAsync(ExpertDispatchRequest request, CancellationToken cancellationToken = default)
    {
        cancellationToken.ThrowIfCancellationRequested();
        return ValueTask.FromResult(Dispatch(request));
    }

    /// <summary>The combined sums u [tokens, ℓ], computed on the calling thread.</summary>
    public float[] Dispatch(ExpertDispatchRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        var experts = expertsOf(request.Layer);
        var plan = request.Plan;
        int w = request.Width;
        if (experts.Width != w || request.Rows.Length != (long)plan.Tokens * w)
        {
            throw new ArgumentException($"layer {request.Layer}: routed rows must be [{plan.Tokens}, {experts.Width}]; got {request.Rows.Length} values of width {w}", nameof(request));
        }

        // Slot t·K + k reads row t.
        float[] u;
        try
        {
            u = experts.ComputeCombined(request.Rows, RoutedPairs.Of(plan));
        }
        catch (ForwardOverflowException e) when (e.Stage is string stage)
        {
            // The experts see the routed rows z; the caller knows its input x.
            throw ForwardOverflowException.At(request.Layer, stage, request.InputMaxAbs(), e);
        }

        ForwardOverflowException.ThrowIfNonFinite(u, request.Layer, "the weighted sum of the routed experts' outputs", request.Input.Span);
        return u;
    }
}
