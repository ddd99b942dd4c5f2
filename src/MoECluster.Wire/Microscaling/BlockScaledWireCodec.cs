using System.Buffers;

namespace MoECluster.Wire.Microscaling;

/// <summary>
/// What the block-scaled wire types share (docs/MICROSCALING.md): the layout (an optional per-message prefix, then
/// self-contained rows of block scales and bit-packed elements), the row-by-row encode and decode loops, and the
/// non-finite check that decodes what a sender wrote. A type supplies its message prefix, how one block is scaled and
/// rounded, and how one row is widened.
/// </summary>
internal abstract class BlockScaledWireCodec(int blockSize, int elementBits, int prefixBytes) : IWireCodec
{
    protected BlockLayout Layout { get; } = new(blockSize, elementBits, prefixBytes);

    public abstract WireDType Id { get; }

    public abstract string Name { get; }

    public abstract IReadOnlyList<string> Aliases { get; }

    public int BlockSize => blockSize;

    /// <summary>Every finite float32: the scales cover fp32's whole range.</summary>
    public double MaxMagnitude => float.MaxValue;

    public abstract string Range { get; }

    public abstract double ParityTolerance { get; }

    public long PayloadBytes(long rows, long width) => Layout.PayloadBytes(rows, width);

    public void Encode(ReadOnlySpan<float> values, int rows, int width, Span<byte> destination)
    {
        Layout.CheckLength(rows, width, values.Length, "values", nameof(values), elements: true);
        Layout.CheckLength(rows, width, destination.Length, "bytes", nameof(destination), elements: false);
        if (rows == 0 || width == 0)
        {
            return;
        }

        double messageScale = BeginMessage(values, rows, width, destination);
        byte[] codes = ArrayPool<byte>.Shared.Rent(width);
        try
        {
            for (int row = 0; row < rows; row++)
            {
                ReadOnlySpan<float> v = values.Slice(row * width, width);
                var (scales, elements) = Layout.Row(row, width);
                Span<byte> scaleBytes = destination[scales];
                for (int b = 0, start = 0; start < width; b++, start += blockSize)
                {
                    int length = Math.Min(blockSize, width - start);
                    scaleBytes[b] = EncodeBlock(v.Slice(start, length), row, start, messageScale, codes.AsSpan(start, length));
                }

                Layout.Pack(codes.AsSpan(0, width), destination[elements]);
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(codes);
        }
    }

    public void Decode(ReadOnlySpan<byte> data, int rows, int width, Span<float> destination)
    {
        Layout.CheckLength(rows, width, data.Length, "bytes", nameof(data), elements: false);
        Layout.CheckLength(rows, width, destination.Length, "values", nameof(destination), elements: true);
        if (rows == 0 || width == 0)
        {
            return;
        }

        byte[] codes = ArrayPool<byte>.Shared.Rent(width);
        try
        {
            for (int row = 0; row < rows; row++)
            {
                DecodeRow(data, row, width, codes, destination.Slice(row * width, width));
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(codes);
        }
    }

    /// <summary>
    /// Row-major index of the first value that decodes to NaN or ±Inf (a NaN scale, a NaN or Inf element, a finite
    /// element whose product with a hostile scale overflows), or -1: what the sender wrote, decoded row by row.
    /// </summary>
    public int FindNonFinite(ReadOnlySpan<byte> data, int rows, int width)
    {
        Layout.CheckLength(rows, width, data.Length, "bytes", nameof(data), elements: false);
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
                DecodeRow(data, row, width, codes, values.AsSpan(0, width));
                int column = MicroscalingChecks.FirstNonFinite(values.AsSpan(0, width));
                if (column >= 0)
                {
                    return (row * width) + column;
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

    /// <summary>Widens row <paramref name="row"/> of <paramref name="data"/> into <paramref name="values"/>; <paramref name="codes"/> is scratch of at least width bytes.</summary>
    public abstract void DecodeRow(ReadOnlySpan<byte> data, int row, int width, byte[] codes, Span<float> values);

    /// <summary>
    /// Checks the whole message and writes its prefix, if the type has one; returns what every block needs from it
    /// (NVFP4's message scale; 0 for none).
    /// </summary>
    protected virtual double BeginMessage(ReadOnlySpan<float> values, int rows, int width, Span<byte> destination) => 0;

    /// <summary>
    /// Encodes one block (the elements of row <paramref name="row"/> from column <paramref name="column"/>) into
    /// <paramref name="codes"/> and returns its scale byte; refuses an Inf or NaN naming row and column.
    /// </summary>
    protected abstract byte EncodeBlock(ReadOnlySpan<float> block, int row, int column, double messageScale, Span<byte> codes);
}
