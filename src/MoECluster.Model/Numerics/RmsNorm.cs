namespace MoECluster.Model.Numerics;

public static class RmsNorm
{
    /// <summary>y = x / sqrt(mean(x²) + eps) · weight per row of [tokens, d], fp32 with an fp64 mean.</summary>
    public static void Apply(ReadOnlySpan<float> x, ReadOnlySpan<float> weight, double epsilon, Span<float> y)
    {
        int d = weight.Length;
        if (d == 0 || x.Length % d != 0 || y.Length != x.Length)
        {
            throw new ArgumentException($"RMSNorm: input of {x.Length} values is not whole rows of {d}, or output size differs");
        }

        for (int r = 0; r < x.Length / d; r++)
        {
            var row = x.Slice(r * d, d);
            double ms = Float64Dot.Dot(row, row) / d;
            float inv = (float)(1.0 / Math.Sqrt(ms + epsilon));
            var dst = y.Slice(r * d, d);
            for (int i = 0; i < d; i++)
            {
                dst[i] = row[i] * inv * weight[i];
            }
        }
    }
}
