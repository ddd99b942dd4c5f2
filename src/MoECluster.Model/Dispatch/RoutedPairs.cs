using MoECluster.Model.Routing;

namespace MoECluster.Model.Dispatch;

/// <summary>
/// The (expert, weight) pairs of a batch of rows, in the one shape they keep from the router to the shard and back:
/// row r owns <c>Experts/Weights[Offsets[r] .. Offsets[r+1])</c>, in the router's slot order. A routing plan is one
/// (every row K pairs), a shard's dispatch another (each row the pairs of its token that the shard holds); the wire
/// carries it (<c>WireFormat.BuildRequest</c>, <c>WireFormat.ReadPairs</c>) and the experts consume it
/// (<see cref="Experts.GroupedExperts.ComputePartials"/>).
/// </summary>
public sealed record RoutedPairs(int[] Offsets, int[] Experts, float[] Weights)
{
    public int Rows => Offsets.Length - 1;

    /// <summary>Pairs in all rows.</summary>
    public int Count => Experts.Length;

    public int CountOf(int row) => Offsets[row + 1] - Offsets[row];

    public ReadOnlySpan<int> ExpertsOf(int row) => Experts.AsSpan(Offsets[row], CountOf(row));

    public ReadOnlySpan<float> WeightsOf(int row) => Weights.AsSpan(Offsets[row], CountOf(row));

    /// <summary>A routing plan's pairs: row t holds its K slots t·K .. t·K + K − 1 (the plan's arrays, not copies).</summary>
    public static RoutedPairs Of(RoutingPlan plan)
    {
        ArgumentNullException.ThrowIfNull(plan);
        var offsets = new int[plan.Tokens + 1];
        for (int t = 0; t <= plan.Tokens; t++)
        {
            offsets[t] = t * plan.TopK;
        }

        return new RoutedPairs(offsets, plan.Experts, plan.Weights);
    }
}
