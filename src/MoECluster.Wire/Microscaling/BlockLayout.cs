using System.Globalization;

namespace MoECluster.Wire.Microscaling;

/// <summary>
/// Where the bytes of a block-scaled matrix lie (docs/MICROSCALING.md): an optional per-message prefix, then each row
/// self-contained — its block scales (one byte each), then its elements bit-packed least significant bit first, the
/// last byte padded with zero bits. The last block of a row holds what remains of the row.
/// </summary>
internal sealed class BlockLayout(int blockSize, int elementBits, int prefixBytes)
{
    public int BlockSize => blockSize;

    public int ElementBits => elementBits;

    public int PrefixBytes => prefixBytes;

    public int BlocksPerRow(int width) => (width + blockSize - 1) / blockSize;

    public long ElementBytesPerRow(long width) => (width * elementBits + 7) / 8;

    public long RowBytes(long width) => (width + blockSize - 1) / blockSize + ElementBytesPerRow(width);

    /// <summary>Bytes of a [rows, width] matrix; zero for an empty one (no prefix either).</summary>
    public long PayloadBytes(long rows, long width)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(rows);
        ArgumentOutOfRangeException.ThrowIfNegative(width);
        return rows == 0 || width == 0 ? 0 : checked(prefixBytes + rows * RowBytes(width));
    }

    /// <summary>The bytes of row <paramref name="row"/>: its scales, then its packed elements.</summary>
    public (Range Scales, Range Elements) Row(int row, int width)
    {
        long rowBytes = RowBytes(width);
        int start = checked((int)(prefixBytes + row * rowBytes));
        int scales = BlocksPerRow(width);
        return (new Range(start, start + scales), new Range(start + scales, checked((int)(start + rowBytes))));
    }

    /// <summary>Throws unless <paramref name="actual"/> is the length [rows, width] needs.</summary>
    public void CheckLength(int rows, int width, long actual, string unit, string parameter, bool elements)
    {
        long expected = elements ? (long)rows * width : PayloadBytes(rows, width);
        if (actual != expected)
        {
            throw new ArgumentException(string.Create(CultureInfo.InvariantCulture,
                $"A [{rows}, {width}] block needs {expected} {unit}; got {actual}."), parameter);
        }
    }

    /// <summary>Packs <paramref name="codes"/> (each below 2^ElementBits), LSB first, zero-padded.</summary>
    public void Pack(ReadOnlySpan<byte> codes, Span<byte> destination)
    {
        if (elementBits == 8)
        {
            codes.CopyTo(destination);
            return;
        }

        ulong accumulator = 0;
        int held = 0;
        int at = 0;
        foreach (byte code in codes)
        {
            accumulator |= (ulong)code << held;
            held += elementBits;
            while (held >= 8)
            {
                destination[at++] = (byte)accumulator;
                accumulator >>= 8;
                held -= 8;
            }
        }

        if (held > 0)
        {
            destination[at] = (byte)accumulator;
        }
    }

    /// <summary>Unpacks <paramref name="codes"/>.Length codes from <paramref name="source"/>; padding bits are ignored.</summary>
    public void Unpack(ReadOnlySpan<byte> source, Span<byte> codes)
    {
        if (elementBits == 8)
        {
            source[..codes.Length].CopyTo(codes);
            return;
        }

        int mask = (1 << elementBits) - 1;
        ulong accumulator = 0;
        int held = 0;
        int at = 0;
        for (int i = 0; i < codes.Length; i++)
        {
            while (held < elementBits)
            {
                accumulator |= (ulong)source[at++] << held;
                held += 8;
            }

            codes[i] = (byte)(accumulator & (ulong)mask);
            accumulator >>= elementBits;
            held -= elementBits;
        }
    }
}
