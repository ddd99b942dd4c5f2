using System.Globalization;

namespace MoECluster.Wire.Microscaling;

/// <summary>The checks the block-scaled codecs share.</summary>
internal static class MicroscalingChecks
{
    /// <summary>
    /// The largest magnitude of <paramref name="block"/>; throws for an Inf or NaN, naming its row and column (the
    /// block starts at <paramref name="column"/> of <paramref name="row"/>): no block-scaled type can carry one.
    /// </summary>
    public static float FiniteMaxAbs(ReadOnlySpan<float> block, int row, int column)
    {
        float amax = 0;
        for (int i = 0; i < block.Length; i++)
        {
            float v = block[i];
            if (!float.IsFinite(v))
            {
                throw new ArgumentException(string.Create(CultureInfo.InvariantCulture,
                    $"row {row}, column {column + i} is {v}: a block-scaled wire type carries finite values only."), nameof(block));
            }

            amax = Math.Max(amax, Math.Abs(v));
        }

        return amax;
    }

    /// <summary>Index of the first NaN or infinite value, or -1.</summary>
    public static int FirstNonFinite(ReadOnlySpan<float> values)
    {
        for (int i = 0; i < values.Length; i++)
        {
            if (!float.IsFinite(values[i]))
            {
                return i;
            }
        }

        return -1;
    }
}
