using MoECluster.Model.Configuration;
using MoECluster.Model.Dispatch;
using MoECluster.Model.Experts;
using MoECluster.Model.Numerics;
using MoECluster.Model.Routing;

namespace MoECluster.Model.Layers;

/// <summary>
/// One MoE mixer on the in-process reference path, wired from Megatron-Core's four parts:
/// router (gate logits in d → top-K), dispatcher (W_down to ℓ, permute by expert), experts (grouped FFN),
/// combine (weighted sum of slot outputs in ℓ, W_up back to d) plus the shared expert on the full-width x.
/// y = W_up Σ_k w_k E_k(W_down x) + S2 relu(S1 x)² (standard MoE: W_down = W_up = identity).
/// </summary>
public sealed class MoeMixer
{
    private readonly MoeLayerWeights _weights;
    private readonly ReferenceExperts _experts;

    public MoeMixer(MoeLayerWeights weights)
    {
        _weights = weights;
        Router = new TopKRouter(weights.Config, weights.GateBias);
        _experts = new ReferenceExperts(weights.Experts, weights.Config.RoutedWidth, weights.Config.MoeIntermediateSize);
    }

    public MoeModelConfig Config => _weights.Config;

    public int Layer => _weights.Layer;

    public MoeLayerWeights Weights => _weights;

    public TopKRouter Router { get; }

    /// <summary>Gate logits [tokens, N] in fp32 from the full-width input.</summary>
    public float[] GateLogits(ReadOnlySpan<float> x, int tokens)
    {
        var logits = new float[tokens * Config.NRoutedExperts];
        ReferenceLinear.Apply(_weights.Gate, x, tokens, logits);
        return logits;
    }

    /// <summary>The routing decision for <paramref name="x"/> ([tokens, d], already normed).</summary>
    public RoutingPlan Route(ReadOnlySpan<float> x, int tokens) => Router.Route(GateLogits(x, tokens), tokens);

    /// <summary>Computes the mixer output y [tokens, d] for an already-normed input x [tokens, d].</summary>
    public void Forward(ReadOnlySpan<float> x, int tokens, Span<float> y)
    {
        int d = Config.HiddenSize;
        int w = Config.RoutedWidth;
        if (x.Length != (long)tokens * d || y.Length != x.Length)
        {
            throw new ArgumentException($"layer {Layer}: input/output must be [{tokens}, {d}]");
        }

        RoutingPlan plan = Route(x, tokens);

        float[] z = new float[tokens * w];
        if (_weights.LatentDown is { } down)
        {
            ReferenceLinear.Apply(down, x, tokens, z);
        }
        else
        {
            x.CopyTo(z);
        }

        var permutation = new TokenPermutation(plan, Config.NRoutedExperts);
        float[] slotOutputs = new float[plan.Experts.Length * w];
        _experts.Compute(z, plan.TopK, permutation, slotOutputs);

        float[] u = Combine(plan, slotOutputs, w);

        if (_weights.LatentUp is { } up)
        {
            ReferenceLinear.Apply(up, u, tokens, y);
        }
        else
        {
            u.CopyTo(y);
        }

        if (_weights.SharedUp is { } s1 && _weights.SharedDown is { } s2)
        {
            var hidden = new float[tokens * s1.Rows];
            ReferenceLinear.Apply(s1, x, tokens, hidden);
            Activations.Relu2(hidden);
            var shared = new float[tokens * d];
            ReferenceLinear.Apply(s2, hidden, tokens, shared);
            for (int i = 0; i < shared.Length; i++)
            {
                y[i] += shared[i];
            }
        }
    }

    /// <summary>u[t] = Σ_k w[t,k] · out[t·K + k], accumulated in fp64 in slot order.</summary>
    internal static float[] Combine(RoutingPlan plan, ReadOnlySpan<float> slotOutputs, int width)
    {
        var u = new float[plan.Tokens * width];
        var acc = new double[width];
        for (int t = 0; t < plan.Tokens; t++)
        {
            Array.Clear(acc);
            for (int k = 0; k < plan.TopK; k++)
            {
                int slot = (t * plan.TopK) + k;
                double weight = plan.Weights[slot];
                var row = slotOutputs.Slice(slot * width, width);
                for (int i = 0; i < width; i++)
                {
                    acc[i] += weight * row[i];
                }
            }

            for (int i = 0; i < width; i++)
            {
                u[(t * width) + i] = (float)acc[i];
            }
        }

        return u;
    }
}
