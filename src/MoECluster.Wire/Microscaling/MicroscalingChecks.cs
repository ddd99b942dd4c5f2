using System.Buffers;
using System.Globalization;

namespace MoECluster.Wire.Microscaling;

/// <summary>A block-scaled codec that widens one row at a time (its rows are self-contained).</summary>
internal interface IRowDecoder
{
    /// <summary>Widens row <paramref name="row"/> of <paramref name="data"/> into <paramref name="values"/>; <paramref name="codes"/> is scratch of at least width bytes.</summary>
    void DecodeRow(ReadOnlySpan<byte> data, int row, int width, byte[] codes, Span<float> values);
}

/// <summary>The loops and checks the block-scaled codecs share.</summary>
internal static class MicroscalingChecks
{
    /// <summary>Widens every row (lengths checked by the caller).</summary>
    public static void Decode(IRowDecoder codec, ReadOnlySpan<byte> data, int rows, int width, Span<float> destination)
    {
        if (rows == 0 || width == 0)
        {
            return;
        }

        byte[] codes = ArrayPool<byte>.Shared.Rent(width);
        try
        {
            for (int row = 0; row < rows; row++)
            {
                codec.DecodeRow(data, row, width, codes, destination.Slice(row * width, width));
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(codes);
        }
    }

    /// <summary>
    /// Row-major index of the first value that decodes to NaN or ±Inf (a NaN scale, a NaN or Inf element, a finite
    /// element whose product with a hostile scale overflows), or -1 (lengths checked by the caller).
    /// </summary>
    public static int FindNonFinite(IRowDecoder codec, ReadOnlySpan<byte> data, int rows, int width)
    {
        if (rows == 0 || width == 0)
        {
            return -1;
        }

        byte[] codes = ArrayPool<byte>.Shared.Rent(width);
        float[] values = ArrayPool<float>.Shared.Rent(width);
        try
        {
            for (int row = 0; row < rows; row++)
            {
                codec.DecodeRow(data, row, width, codes, values.AsSpan(0, width));
                int column = FirstNonFinite(values.AsSpan(0, width));
                if (column >= 0)
                {
                    return row * width + column;
                }
            }

            return -1;
        }
        finally
        {
            ArrayPool<float>.Shared.Return(values);
            ArrayPool<byte>.Shared.Return(codes);
        }
    }

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
    private static int FirstNonFinite(ReadOnlySpan<float> values)
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
