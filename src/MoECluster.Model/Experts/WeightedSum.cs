using MoECluster.Model.Dispatch;

namespace MoECluster.Model.Experts;

/// <summary>The combine step: each row's slot outputs, weighted, summed in fp64 in slot order, rounded once.</summary>
public static class WeightedSum
{
    /// <summary>u[r] = Σ_{s ∈ row r's pairs} weight[s] · slotOutputs[s] for the rows of <paramref name="pairs"/> × width (slot s = pair s).</summary>
    public static float[] OverSlots(RoutedPairs pairs, ReadOnlySpan<float> slotOutputs, int width)
    {
        ArgumentNullException.ThrowIfNull(pairs);
        return OverSlots(pairs.Rows, pairs.Offsets, pairs.Weights, slotOutputs, width);
    }

    /// <summary>u[r] = Σ_{s ∈ [offsets[r], offsets[r+1])} weights[s] · slotOutputs[s] for rows × width.</summary>
    public static float[] OverSlots(int rows, ReadOnlySpan<int> offsets, ReadOnlySpan<float> weights, ReadOnlySpan<float> slotOutputs, int width)
    {
        var u = new float[rows * width];
        var acc = new double[width];
        for (int r = 0; r < rows; r++)
        {
            Array.Clear(acc);
            for (int s = offsets[r]; s < offsets[r + 1]; s++)
            {
                double weight = weights[s];
                var row = slotOutputs.Slice(s * width, width);
                for (int i = 0; i < width; i++)
                {
                    acc[i] += weight * row[i];
                }
            }

            for (int i = 0; i < width; i++)
            {
                u[(r * width) + i] = (float)acc[i];
            }
        }

        return u;
    }
}
