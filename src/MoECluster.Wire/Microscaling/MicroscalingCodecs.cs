using System.Globalization;

namespace MoECluster.Wire.Microscaling;

/// <summary>
/// An OCP MX v1.0 format (docs/MICROSCALING.md): blocks of 32 elements along the row share one E8M0 scale
/// 2^(x − 127) (0xFF is NaN); the shared exponent is ⌊log2 amax⌋ − emax of the element type, clamped below at −127,
/// and the elements are v / 2^shared rounded to the element type (nearest, ties to even, saturating). Every finite
/// float32 is encodable; a block with an Inf or NaN is refused at encode.
/// </summary>
internal sealed class MxWireCodec(WireDType id, string name, IReadOnlyList<string> aliases, ElementFormat element, double parityTolerance)
    : BlockScaledWireCodec(Block, element.Bits, 0)
{
    /// <summary>Elements that share one scale.</summary>
    public const int Block = 32;

    /// <summary>The E8M0 scale byte that means NaN.</summary>
    public const byte NaNScale = 0xFF;

    private const int ScaleBias = 127;

    public override WireDType Id => id;

    public override string Name => name;

    public override IReadOnlyList<string> Aliases => aliases;

    public ElementFormat Element => element;

    public override string Range => string.Create(CultureInfo.InvariantCulture,
        $"{name} holds every finite fp32 value, as {element.Name} elements (±{element.MaxNormal:G}) times a power of two per {Block}");

    public override double ParityTolerance => parityTolerance;

    /// <summary>The E8M0 scale byte of a block whose largest magnitude is <paramref name="amax"/> (finite).</summary>
    public byte ScaleOf(float amax) => (byte)(SharedExponent(amax) + ScaleBias);

    public override void DecodeRow(ReadOnlySpan<byte> data, int row, int width, byte[] codes, Span<float> values)
    {
        var (scales, elements) = Layout.Row(row, width);
        ReadOnlySpan<byte> scaleBytes = data[scales];
        Layout.Unpack(data[elements], codes.AsSpan(0, width));
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

    protected override byte EncodeBlock(ReadOnlySpan<float> block, int row, int column, double messageScale, Span<byte> codes)
    {
        int shared = SharedExponent(MicroscalingChecks.FiniteMaxAbs(block, row, column));
        double inverseScale = Math.ScaleB(1.0, -shared); // exact: a power of two within double's range
        for (int i = 0; i < block.Length; i++)
        {
            codes[i] = (byte)element.Encode(block[i] * inverseScale);
        }

        return (byte)(shared + ScaleBias);
    }

    /// <summary>⌊log2 amax⌋ − emax of the element type (exact: the binary exponent), −127 for a zero block, clamped below.</summary>
    private int SharedExponent(float amax) => amax == 0 ? -ScaleBias : Math.Max(-ScaleBias, Math.ILogB((double)amax) - element.MaxExponent);
}
