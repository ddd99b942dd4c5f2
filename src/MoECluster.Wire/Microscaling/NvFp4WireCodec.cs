using System.Buffers.Binary;

namespace MoECluster.Wire.Microscaling;

/// <summary>
/// NVIDIA's NVFP4 (docs/MICROSCALING.md): FP4 E2M1 elements, an FP8 E4M3 scale per 16 elements, and one fp32 decode
/// scale S per message (little-endian, before the rows) — S = A / (448 · 6) for the message's largest magnitude A, so
/// every block scale fits E4M3. A value decodes as E2M1 · E4M3 · S. Every finite float32 is encodable; an Inf or NaN
/// is refused at encode.
/// </summary>
internal sealed class NvFp4WireCodec(double parityTolerance) : BlockScaledWireCodec(Block, 4, sizeof(float))
{
    /// <summary>Elements that share one E4M3 scale.</summary>
    public const int Block = 16;

    /// <summary>448 · 6: the largest block scale times the largest element.</summary>
    public const double ScaleRange = 448.0 * 6.0;

    public override WireDType Id => WireDType.NvFp4;

    public override string Name => "nvfp4";

    public override IReadOnlyList<string> Aliases { get; } = [];

    public override string Range => "nvfp4 holds every finite fp32 value, as e2m1 elements (±6) times an e4m3 scale per 16 and an fp32 scale per message";

    public override double ParityTolerance => parityTolerance;

    /// <summary>The message's decode scale S for largest magnitude <paramref name="amax"/> (finite).</summary>
    public static float MessageScale(float amax)
    {
        if (amax == 0)
        {
            return 1f;
        }

        float scale = (float)(amax / ScaleRange);
        return scale == 0 ? float.Epsilon : scale;
    }

    public override void DecodeRow(ReadOnlySpan<byte> data, int row, int width, byte[] codes, Span<float> values)
    {
        // A non-finite message scale (never written: S is finite for finite input) makes every value NaN.
        double messageScale = BinaryPrimitives.ReadSingleLittleEndian(data);
        messageScale = double.IsFinite(messageScale) ? messageScale : double.NaN;
        var (scales, elements) = Layout.Row(row, width);
        ReadOnlySpan<byte> scaleBytes = data[scales];
        Layout.Unpack(data[elements], codes.AsSpan(0, width));
        ReadOnlySpan<float> table = ElementFormat.E2M1.Values;
        for (int b = 0, start = 0; start < width; b++, start += Block)
        {
            double scale = ElementFormat.E4M3.Value(scaleBytes[b]) * messageScale;
            int end = Math.Min(start + Block, width);
            for (int i = start; i < end; i++)
            {
                values[i] = (float)(table[codes[i]] * scale);
            }
        }
    }

    /// <summary>The whole message's largest magnitude (refusing Inf and NaN) gives S, written before the rows.</summary>
    protected override double BeginMessage(ReadOnlySpan<float> values, int rows, int width, Span<byte> destination)
    {
        float amax = 0;
        for (int row = 0; row < rows; row++)
        {
            amax = Math.Max(amax, MicroscalingChecks.FiniteMaxAbs(values.Slice(row * width, width), row, 0));
        }

        float messageScale = MessageScale(amax);
        BinaryPrimitives.WriteSingleLittleEndian(destination, messageScale);
        return messageScale;
    }

    protected override byte EncodeBlock(ReadOnlySpan<float> block, int row, int column, double messageScale, Span<byte> codes)
    {
        float blockMax = 0;
        foreach (float x in block)
        {
            blockMax = Math.Max(blockMax, Math.Abs(x));
        }

        int scaleCode = ElementFormat.E4M3.Encode(blockMax / 6.0 / messageScale);
        double scale = messageScale * (double)ElementFormat.E4M3.Value(scaleCode);
        for (int i = 0; i < block.Length; i++)
        {
            codes[i] = scale == 0 ? (byte)0 : (byte)ElementFormat.E2M1.Encode(block[i] / scale);
        }

        return (byte)scaleCode;
    }
}
