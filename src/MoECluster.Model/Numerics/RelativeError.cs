namespace MoECluster.Model.Numerics;

public static class RelativeError
{
    /// <summary>‖actual − expected‖ / ‖expected‖ in fp64 (NaN when expected is all zeros; ∞ when actual has a non-finite value).</summary>
    public static double Of(ReadOnlySpan<float> actual, ReadOnlySpan<float> expected)
    {
        if (actual.Length != expected.Length)
        {
            throw new ArgumentException($"{actual.Length} values vs {expected.Length} expected", nameof(actual));
        }

        double num = 0, den = 0;
        for (int i = 0; i < expected.Length; i++)
        {
            if (!float.IsFinite(actual[i]))
            {
                return double.PositiveInfinity;
            }

            double diff = (double)actual[i] - expected[i];
            num += diff * diff;
            den += (double)expected[i] * expected[i];
        }

        return den > 0 ? Math.Sqrt(num / den) : double.NaN;
    }
}
