namespace MoECluster.Model.Numerics;

/// <summary>
/// The reference Linear: Y[t, o] = Σ_i W[o, i] · X[t, i] for row-major X [tokens, in] and W [out, in], fp32
/// inputs, fp64 accumulation, rounded once to fp32. Each weight row is widened once and used for every token;
/// rows are split across cores. Clear rather than fast: the fast kernels are measured against it.
/// </summary>
public static class ReferenceLinear
{
    private const int RowsPerTask = 16;

    public static void Apply(WeightMatrix weight, ReadOnlySpan<float> x, int tokens, Span<float> y, bool parallel = true)
    {
        int cols = weight.Cols;
        int rows = weight.Rows;
        if (x.Length != (long)tokens * cols)
        {
            throw new ArgumentException($"input has {x.Length} values, expected {tokens} x {cols} for {weight.Name}", nameof(x));
        }

        if (y.Length != (long)tokens * rows)
        {
            throw new ArgumentException($"output has {y.Length} values, expected {tokens} x {rows} for {weight.Name}", nameof(y));
        }

        if (tokens == 0)
        {
            return;
        }

        int blocks = (rows + RowsPerTask - 1) / RowsPerTask;
        unsafe
        {
            fixed (float* px = x)
            fixed (float* py = y)
            {
                nint xa = (nint)px;
                nint ya = (nint)py;
                if (parallel && blocks > 1 && (long)rows * cols * tokens > 1 << 16)
                {
                    Parallel.For(0, blocks, () => new float[cols], (b, _, row) =>
                    {
                        RowBlock(weight, (float*)xa, (float*)ya, tokens, b, row);
                        return row;
                    }, _ => { });
                }
                else
                {
                    var row = new float[cols];
                    for (int b = 0; b < blocks; b++)
                    {
                        RowBlock(weight, px, py, tokens, b, row);
                    }
                }
            }
        }
    }

    private static unsafe void RowBlock(WeightMatrix weight, float* x, float* y, int tokens, int block, float[] row)
    {
        int cols = weight.Cols;
        int rows = weight.Rows;
        int end = Math.Min(rows, (block + 1) * RowsPerTask);
        for (int o = block * RowsPerTask; o < end; o++)
        {
            weight.ReadRow(o, row);
            for (int t = 0; t < tokens; t++)
            {
                y[((long)t * rows) + o] = (float)Float64Dot.Dot(row, new ReadOnlySpan<float>(x + ((long)t * cols), cols));
            }
        }
    }
}
