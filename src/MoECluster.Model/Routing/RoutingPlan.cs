namespace MoECluster.Model.Routing;

/// <summary>
/// The router's decision for a batch: for token t and slot k (0 ≤ k &lt; K), the expert
/// <c>Experts[t*K + k]</c> and its combine weight <c>Weights[t*K + k]</c>. Slots are ordered by selection
/// score, highest first (ties: lower expert index first).
/// </summary>
public sealed class RoutingPlan
{
    public RoutingPlan(int tokens, int topK)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(tokens);
        ArgumentOutOfRangeException.ThrowIfLessThan(topK, 1);
        Tokens = tokens;
        TopK = topK;
        Experts = new int[tokens * topK];
        Weights = new float[tokens * topK];
    }

    public int Tokens { get; }

    public int TopK { get; }

    public int[] Experts { get; }

    public float[] Weights { get; }

    public ReadOnlySpan<int> ExpertsOf(int token) => Experts.AsSpan(token * TopK, TopK);

    public ReadOnlySpan<float> WeightsOf(int token) => Weights.AsSpan(token * TopK, TopK);
}
