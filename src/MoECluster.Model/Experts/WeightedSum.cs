using System.Buffers;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using MoECluster.Model.Dispatch;

namespace MoECluster.Model.Experts;

/// <summary>
/// The combine step: each row's slot outputs, weighted, summed in fp64 in slot order, rounded once. Each slot output
/// is read once; rows are independent, so large combines are split by rows over the cores and the result does not
/// depend on the split.
/// </summary>
public static class WeightedSum
{
    /// <summary>Below this many slot values (slots × width) the combine runs on the calling thread alone.</summary>
    private const long ParallelMinValues = 1L << 18;

    /// <summary>u[r] = Σ_{s ∈ row r's pairs} weight[s] · slotOutputs[s] for the rows of <paramref name="pairs"/> × width (slot s = pair s).</summary>
    public static float[] OverSlots(RoutedPairs pairs, ReadOnlySpan<float> slotOutputs, int width)
    {
        ArgumentNullException.ThrowIfNull(pairs);
        return OverSlots(pairs.Rows, pairs.Offsets, pairs.Weights, slotOutputs, width);
    }

    /// <summary>u[r] = Σ_{s ∈ [offsets[r], offsets[r+1])} weights[s] · slotOutputs[s] for rows × width.</summary>
    public static float[] OverSlots(int rows, ReadOnlySpan<int> offsets, ReadOnlySpan<float> weights, ReadOnlySpan<float> slotOutputs, int width) =>
        OverSlots(rows, offsets, weights, slotOutputs, [], width);

    /// <summary>
    /// u[r] = Σ_{s ∈ [offsets[r], offsets[r+1])} weights[s] · outputs[outputRows[s]] for rows × width: the slot outputs
    /// read where the experts wrote them (grouped by expert), with no scatter into slot order first. An empty
    /// <paramref name="outputRows"/> means slot s is row s.
    /// </summary>
    internal static unsafe float[] OverSlots(int rows, ReadOnlySpan<int> offsets, ReadOnlySpan<float> weights, ReadOnlySpan<float> outputs, ReadOnlySpan<int> outputRows, int width)
    {
        var u = new float[rows * width];
        if (rows == 0)
        {
            return u;
        }

        long values = (long)(offsets[rows] - offsets[0]) * width;
        int chunks = values < ParallelMinValues ? 1 : Math.Min(Environment.ProcessorCount, rows);
        if (chunks <= 1)
        {
            Rows(0, rows, offsets, weights, outputs, outputRows, width, u);
            return u;
        }

        fixed (int* po = offsets)
        fixed (float* pw = weights)
        fixed (float* ps = outputs)
        fixed (int* pr = outputRows)
        {
            nint oa = (nint)po, wa = (nint)pw, sa = (nint)ps, ra = (nint)pr;
            int offsetCount = offsets.Length, weightCount = weights.Length, outputValues = outputs.Length, outputRowCount = outputRows.Length;
            Parallel.For(0, chunks, new ParallelOptions { MaxDegreeOfParallelism = chunks }, chunk =>
            {
                int r0 = (int)((long)rows * chunk / chunks);
                int r1 = (int)((long)rows * (chunk + 1) / chunks);
                Rows(
                    r0,
                    r1,
                    new ReadOnlySpan<int>((int*)oa, offsetCount),
                    new ReadOnlySpan<float>((float*)wa, weightCount),
                    new ReadOnlySpan<float>((float*)sa, outputValues),
                    new ReadOnlySpan<int>((int*)ra, outputRowCount),
                    width,
                    u);
            });
        }

        return u;
    }

    /// <summary>Rows [r0, r1): the fp64 sums of one row in a pooled accumulator (vectorized; the order of each element's sum is the slot order).</summary>
    private static void Rows(int r0, int r1, ReadOnlySpan<int> offsets, ReadOnlySpan<float> weights, ReadOnlySpan<float> outputs, ReadOnlySpan<int> outputRows, int width, float[] u)
    {
        double[] rented = ArrayPool<double>.Shared.Rent(width);
        try
        {
            Span<double> acc = rented.AsSpan(0, width);
            ref double a = ref MemoryMarshal.GetReference(acc);
            int vectorEnd = width - (width % Vector256<float>.Count);
            for (int r = r0; r < r1; r++)
            {
                acc.Clear();
                for (int s = offsets[r]; s < offsets[r + 1]; s++)
                {
                    double weight = weights[s];
                    var row = outputs.Slice((outputRows.IsEmpty ? s : outputRows[s]) * width, width);
                    ref float x = ref MemoryMarshal.GetReference(row);
                    var wv = Vector256.Create(weight);
                    int i = 0;
                    for (; i < vectorEnd; i += Vector256<float>.Count)
                    {
                        var (lower, upper) = Vector256.Widen(Vector256.LoadUnsafe(ref x, (nuint)i));
                        (Vector256.LoadUnsafe(ref a, (nuint)i) + (wv * lower)).StoreUnsafe(ref a, (nuint)i);
                        (Vector256.LoadUnsafe(ref a, (nuint)(i + 4)) + (wv * upper)).StoreUnsafe(ref a, (nuint)(i + 4));
                    }

                    for (; i < width; i++)
                    {
                        acc[i] += weight * row[i];
                    }
                }

                var destination = u.AsSpan(r * width, width);
                for (int i = 0; i < width; i++)
                {
                    destination[i] = (float)acc[i];
                }
            }
        }
        finally
        {
            ArrayPool<double>.Shared.Return(rented);
        }
    }
}
