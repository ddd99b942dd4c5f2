namespace MoECluster.Testing;

/// <summary>The one error measure the numerical tests use.</summary>
public static class Metrics
{
    /// <summary>
    /// ‖actual − expected‖₂ / ‖expected‖₂ in fp64. Throws on a length mismatch or a non-finite element of
    /// <paramref name="actual"/> (an element never written shows up here), and on an all-zero reference, so a test
    /// comparing against it cannot pass by accident.
    /// </summary>
    public static double RelativeError(ReadOnlySpan<float> actual, ReadOnlySpan<double> expected)
    {
        if (actual.Length != expected.Length)
        {
            throw new InvalidDataException($"{actual.Length} values, expected {expected.Length}");
        }

        double num = 0, den = 0;
        for (int i = 0; i < expected.Length; i++)
        {
            if (!float.IsFinite(actual[i]))
            {
                throw new InvalidDataException($"element {i} is {actual[i]} (not written?)");
            }

            double d = actual[i] - expected[i];
            num += d * d;
            den += expected[i] * expected[i];
        }

        return den > 0 ? Math.Sqrt(num / den) : throw new InvalidDataException("the reference is all zeros");
    }

    public static double RelativeError(ReadOnlySpan<float> actual, ReadOnlySpan<float> expected)
    {
        var wide = new double[expected.Length];
        for (int i = 0; i < wide.Length; i++)
        {
            wide[i] = expected[i];
        }

        return RelativeError(actual, wide);
    }
}
