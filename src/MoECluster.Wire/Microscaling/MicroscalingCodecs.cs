using System.Buffers;
using System.Buffers.Binary;
using System.Globalization;

namespace MoECluster.Wire.Microscaling;

/// <summary>
/// An OCP MX v1.0 format (docs/MICROSCALING.md): blocks of 32 elements along the row share one E8M0 scale
/// 2^(x − 127) (0xFF is NaN); the shared exponent is ⌊log2 amax⌋ − emax of the element type, clamped below at −127,
/// and the elements are v / 2^shared rounded to the element type (nearest, ties to even, saturating). Every finite
/// float32 is encodable; a block with an Inf or NaN is refused at encode.
/// </summary>
internal sealed class MxWireCodec(WireDType id, string name, IReadOnlyList<string> aliases, ElementFormat element, double parityTolerance)
    : IWireCodec, IRowDecoder
{
    /// <summary>Elements that share one scale.</summary>
    public const int Block = 32;

    /// <summary>The E8M0 scale byte that means NaN.</summary>
    public const byte NaNScale = 0xFF;

    private const int ScaleBias = 127;

    private readonly BlockLayout _layout = new(Block, element.Bits, 0);

    public WireDType Id => id;

    public string Name => name;

    public IReadOnlyList<string> Aliases => aliases;

    public ElementFormat Element => element;

    public int BlockSize => Block;

    public double MaxMagnitude => float.MaxValue;

    public string Range => string.Create(CultureInfo.InvariantCulture,
        $"{name} holds every finite fp32 value, as {element.Name} elements (±{element.MaxNormal:G}) times a power of two per {Block}");

    public double ParityTolerance => parityTolerance;

    public long PayloadBytes(long rows, long width) => _layout.PayloadBytes(rows, width);

    /// <summary>The E8M0 scale byte of a block whose largest magnitude is <paramref name="amax"/> (finite).</summary>
    public byte ScaleOf(float amax) => (byte)(SharedExponent(amax) + ScaleBias);

    public void Encode(ReadOnlySpan<float> values, int rows, int width, Span<byte> destination)
    {
        _layout.CheckLength(rows, width, values.Length, "values", nameof(values), elements: true);
        _layout.CheckLength(rows, width, destination.Length, "bytes", nameof(destination), elements: false);
        byte[] codes = ArrayPool<byte>.Shared.Rent(width);
        try
        {
            for (int row = 0; row < rows; row++)
            {
                ReadOnlySpan<float> v = values.Slice(row * width, width);
                var (scales, elements) = _layout.Row(row, width);
                Span<byte> scaleBytes = destination[scales];
                for (int b = 0, start = 0; start < width; b++, start += Block)
                {
                    ReadOnlySpan<float> block = v.Slice(start, Math.Min(Block, width - start));
                    int shared = SharedExponent(MicroscalingChecks.FiniteMaxAbs(block, row, start));
                    scaleBytes[b] = (byte)(shared + ScaleBias);
                    double inverseScale = Math.ScaleB(1.0, -shared); // exact: a power of two within double's range
                    for (int i = 0; i < block.Length; i++)
                    {
                        codes[start + i] = (byte)element.Encode(block[i] * inverseScale);
                    }
                }

                _layout.Pack(codes.AsSpan(0, width), destination[elements]);
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(codes);
        }
    }

    public void Decode(ReadOnlySpan<byte> data, int rows, int width, Span<float> destination)
    {
        _layout.CheckLength(rows, width, data.Length, "bytes", nameof(data), elements: false);
        _layout.CheckLength(rows, width, destination.Length, "values", nameof(destination), elements: true);
        MicroscalingChecks.Decode(this, data, rows, width, destination);
    }

    public int FindNonFinite(ReadOnlySpan<byte> data, int rows, int width)
    {
        _layout.CheckLength(rows, width, data.Length, "bytes", nameof(data), elements: false);
        return MicroscalingChecks.FindNonFinite(this, data, rows, width);
    }

    /// <summary>⌊log2 amax⌋ − emax of the element type (exact: the binary exponent), −127 for a zero block, clamped below.</summary>
    private int SharedExponent(float amax) => amax == 0 ? -ScaleBias : Math.Max(-ScaleBias, Math.ILogB((double)amax) - element.MaxExponent);

    public void DecodeRow(ReadOnlySpan<byte> data, int row, int width, byte[] codes, Span<float> values)
    {
        var (scales, elements) = _layout.Row(row, width);
        ReadOnlySpan<byte> scaleBytes = data[scales];
        _layout.Unpack(data[elements], codes.AsSpan(0, width));
        ReadOnlySpan<float> table = element.Values;
        for (int b = 0, start = 0; start < width; b++, start += Block)
        {
            byte x = scaleBytes[b];
            float scale = x == NaNScale ? float.NaN : MathF.ScaleB(1f, x - ScaleBias);
            int end = Math.Min(start + Block, width);
            for (int i = start; i < end; i++)
            {
                values[i] = table[codes[i]] * scale;
            }
        }
    }
}
