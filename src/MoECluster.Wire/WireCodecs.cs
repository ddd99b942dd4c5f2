using System.Buffers.Binary;
using System.Collections.Frozen;
using System.Globalization;
using System.Runtime.InteropServices;
using MoECluster.Model.Numerics;
using MoECluster.Wire.Microscaling;
using ModelDType = MoECluster.Model.Checkpoints.DType;

namespace MoECluster.Wire;

/// <summary>
/// The closed set of wire element types, defined once: every CLI option list, every "is not one of" message, every
/// range message and every parity tolerance reads from here. Adding a codec is a new <see cref="WireDType"/> value, an
/// <see cref="IWireCodec"/> and one entry in <see cref="All"/>.
/// </summary>
public static class WireCodecs
{
    private static readonly IWireCodec[] Codecs =
    [
        new Fp32WireCodec(),
        SixteenBitWireCodec.BFloat16,
        SixteenBitWireCodec.Half,
        new MxWireCodec(WireDType.MxFp8E4M3, "mxfp8-e4m3", ["mxfp8"], ElementFormat.E4M3, 0.1),
        new MxWireCodec(WireDType.MxFp8E5M2, "mxfp8-e5m2", [], ElementFormat.E5M2, 0.2),
        new MxWireCodec(WireDType.MxFp6E3M2, "mxfp6-e3m2", [], ElementFormat.E3M2, 0.2),
        new MxWireCodec(WireDType.MxFp6E2M3, "mxfp6-e2m3", ["mxfp6"], ElementFormat.E2M3, 0.1),
        new MxWireCodec(WireDType.MxFp4, "mxfp4", ["mxfp4-e2m1"], ElementFormat.E2M1, 0.4),
        new NvFp4WireCodec(0.3),
    ];

    private static readonly FrozenDictionary<WireDType, IWireCodec> ById = Codecs.ToFrozenDictionary(c => c.Id);

    private static readonly FrozenDictionary<string, IWireCodec> ByName = Codecs
        .SelectMany(c => c.Aliases.Prepend(c.Name).Select(name => (name, c)))
        .ToFrozenDictionary(p => p.name, p => p.c, StringComparer.OrdinalIgnoreCase);

    /// <summary>The cluster's default wire (bf16: half the bytes of fp32, the range of fp32, within 1e-2).</summary>
    public static IWireCodec Default => Get(WireDType.BF16);

    /// <summary>Every codec, in id order.</summary>
    public static IReadOnlyList<IWireCodec> All { get; } = Array.AsReadOnly(Codecs);

    /// <summary>The canonical names, in id order (what CLI options accept).</summary>
    public static IReadOnlyList<string> Names { get; } = Array.AsReadOnly(Codecs.Select(c => c.Name).ToArray());

    /// <summary>"fp32, bf16, fp16, mxfp8-e4m3, …": the names for messages.</summary>
    public static string NameList { get; } = string.Join(", ", Codecs.Select(c => c.Name));

    /// <summary>"0=fp32, 1=bf16 or 2=fp16": the ids for wire validation messages.</summary>
    public static string IdList { get; } = JoinOr(Codecs.Select(c => string.Create(CultureInfo.InvariantCulture, $"{(byte)c.Id}={c.Name}")));

    /// <summary>Whether <paramref name="id"/> names a codec (an enum read off the wire may not).</summary>
    public static bool IsDefined(WireDType id) => ById.ContainsKey(id);

    /// <summary>The codec of <paramref name="id"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="id"/> is not a defined wire type.</exception>
    public static IWireCodec Get(WireDType id) => ById.TryGetValue(id, out var codec)
        ? codec
        : throw new ArgumentOutOfRangeException(nameof(id), id, string.Create(CultureInfo.InvariantCulture, $"Unknown wire dtype {(byte)id} (expected {IdList})."));

    /// <summary>The codec of <paramref name="id"/>, or false for an undefined id.</summary>
    public static bool TryGet(WireDType id, [System.Diagnostics.CodeAnalysis.MaybeNullWhen(false)] out IWireCodec codec) => ById.TryGetValue(id, out codec);

    /// <summary>Parses a canonical name or alias, case-insensitive, surrounding white space ignored.</summary>
    public static bool TryParse(string? text, [System.Diagnostics.CodeAnalysis.MaybeNullWhen(false)] out IWireCodec codec)
    {
        codec = null;
        return text is not null && ByName.TryGetValue(text.Trim(), out codec);
    }

    /// <summary>Parses a name or alias into its codec.</summary>
    /// <exception cref="FormatException">Not a wire type; the message is <see cref="NotAWire"/>'s.</exception>
    public static IWireCodec Parse(string? text) => TryParse(text, out var codec) ? codec : throw new FormatException(NotAWire(text));

    /// <summary>The refusal of a wire name: "wire 'fp8' is not one of fp32, bf16, fp16" (long text cut at 32 characters).</summary>
    public static string NotAWire(string? text)
    {
        string shown = text is null ? "(none)" : text.Length <= 32 ? text : text[..32] + "...";
        return $"wire '{shown}' is not one of {NameList}";
    }

    /// <summary>The canonical name of a defined id, "undefined dtype N" for any other byte (for messages about wire bytes).</summary>
    public static string Describe(WireDType id) => TryGet(id, out var codec) ? codec.Name : string.Create(CultureInfo.InvariantCulture, $"undefined dtype {(byte)id}");

    /// <summary>
    /// The other element-wise codecs that hold larger magnitudes than <paramref name="codec"/>, as "fp32 or bf16" (for
    /// "send it with wire … or scale it down"); empty when none does. Block-scaled types (which hold every finite
    /// float32, at a few bits of precision) are not offered as the cure for a range problem.
    /// </summary>
    public static string Wider(IWireCodec codec)
    {
        ArgumentNullException.ThrowIfNull(codec);
        return JoinOr(Codecs.Where(c => c.BlockSize == 1 && c.MaxMagnitude > codec.MaxMagnitude).Select(c => c.Name));
    }

    /// <summary>
    /// What to tell a client whose input leaves <paramref name="codec"/>'s range: "send it with wire fp32 or bf16, or
    /// scale it down" (just "scale it down" when no codec holds more).
    /// </summary>
    public static string OverflowAdvice(IWireCodec codec)
    {
        string wider = Wider(codec);
        return wider.Length == 0 ? "scale it down" : $"send it with wire {wider}, or scale it down";
    }

    private static string JoinOr(IEnumerable<string> items)
    {
        string[] all = [.. items];
        return all.Length <= 1 ? string.Concat(all) : string.Join(", ", all[..^1]) + " or " + all[^1];
    }
}

/// <summary>Elements of a fixed size, rows·width·size bytes, little-endian: the shared checks of the IEEE-style codecs.</summary>
internal static class FixedWidthElements
{
    public static long PayloadBytes(long rows, long width, int size)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(rows);
        ArgumentOutOfRangeException.ThrowIfNegative(width);
        return checked(rows * width * size);
    }

    /// <summary>Throws unless a span of <paramref name="actual"/> <paramref name="unit"/> is what [rows, width] needs.</summary>
    public static void CheckLength(int rows, int width, long expected, int actual, string unit, string parameter)
    {
        if (actual != expected)
        {
            throw new ArgumentException(string.Create(CultureInfo.InvariantCulture,
                $"A [{rows}, {width}] block needs {expected} {unit}; got {actual}."), parameter);
        }
    }

    public static void ToLittleEndian(Span<byte> data)
    {
        if (!BitConverter.IsLittleEndian)
        {
            Span<ushort> elements = MemoryMarshal.Cast<byte, ushort>(data);
            BinaryPrimitives.ReverseEndianness(elements, elements);
        }
    }

    public static int FindNonFinite16(ReadOnlySpan<byte> data, ushort exponentMask)
    {
        for (int i = 0; i < data.Length / 2; i++)
        {
            if ((BinaryPrimitives.ReadUInt16LittleEndian(data[(i * 2)..]) & exponentMask) == exponentMask)
            {
                return i;
            }
        }

        return -1;
    }
}

/// <summary>IEEE binary32, 4 bytes little-endian, copied exactly.</summary>
internal sealed class Fp32WireCodec : IWireCodec
{
    public WireDType Id => WireDType.F32;

    public string Name => "fp32";

    public int BlockSize => 1;

    public IReadOnlyList<string> Aliases { get; } = ["f32"];

    public double MaxMagnitude => float.MaxValue;

    public string Range => "fp32 holds ±3.4e38";

    /// <summary>Only the order of the float32 sums differs (across shards): 1e-5.</summary>
    public double ParityTolerance => 1e-5;

    public long PayloadBytes(long rows, long width) => FixedWidthElements.PayloadBytes(rows, width, 4);

    public void Encode(ReadOnlySpan<float> values, int rows, int width, Span<byte> destination)
    {
        FixedWidthElements.CheckLength(rows, width, (long)rows * width, values.Length, "values", nameof(values));
        FixedWidthElements.CheckLength(rows, width, PayloadBytes(rows, width), destination.Length, "bytes", nameof(destination));
        if (BitConverter.IsLittleEndian)
        {
            MemoryMarshal.AsBytes(values).CopyTo(destination);
            return;
        }

        for (int i = 0; i < values.Length; i++)
        {
            BinaryPrimitives.WriteSingleLittleEndian(destination[(i * 4)..], values[i]);
        }
    }

    public void Decode(ReadOnlySpan<byte> data, int rows, int width, Span<float> destination)
    {
        FixedWidthElements.CheckLength(rows, width, PayloadBytes(rows, width), data.Length, "bytes", nameof(data));
        FixedWidthElements.CheckLength(rows, width, (long)rows * width, destination.Length, "values", nameof(destination));
        ElementConversions.ToSingle(ModelDType.F32, data, destination);
    }

    public int FindNonFinite(ReadOnlySpan<byte> data, int rows, int width)
    {
        FixedWidthElements.CheckLength(rows, width, PayloadBytes(rows, width), data.Length, "bytes", nameof(data));
        for (int i = 0; i < data.Length / 4; i++)
        {
            if ((BinaryPrimitives.ReadUInt32LittleEndian(data[(i * 4)..]) & 0x7F80_0000u) == 0x7F80_0000u)
            {
                return i;
            }
        }

        return -1;
    }
}

/// <summary>
/// A 16-bit IEEE-style element, 2 bytes little-endian, rounded to nearest, ties to even: bfloat16 (the upper half of a
/// binary32: 8 exponent bits, ±3.39e38) and binary16 (5 exponent bits, ±65504) differ only in the conversion, the
/// exponent mask that marks Inf and NaN, and their range and tolerance.
/// </summary>
internal sealed class SixteenBitWireCodec(
    WireDType id,
    string name,
    IReadOnlyList<string> aliases,
    double maxMagnitude,
    string range,
    double parityTolerance,
    ModelDType element,
    ushort exponentMask) : IWireCodec
{
    /// <summary>bfloat16: 8 significant bits on the way out and back, 1e-2; the largest finite value (2 − 2⁻⁷)·2¹²⁷.</summary>
    public static SixteenBitWireCodec BFloat16 { get; } =
        new(WireDType.BF16, "bf16", [], 3.3895313892515355e38, "bf16 holds ±3.39e38", 1e-2, ModelDType.BF16, 0x7F80);

    /// <summary>IEEE binary16: 11 significant bits on the way out and back, 5e-3; ±65504 at most.</summary>
    public static SixteenBitWireCodec Half { get; } =
        new(WireDType.F16, "fp16", ["f16"], 65504, "fp16 holds ±65504", 5e-3, ModelDType.F16, 0x7C00);

    public WireDType Id => id;

    public string Name => name;

    public IReadOnlyList<string> Aliases => aliases;

    public int BlockSize => 1;

    public double MaxMagnitude => maxMagnitude;

    public string Range => range;

    public double ParityTolerance => parityTolerance;

    public long PayloadBytes(long rows, long width) => FixedWidthElements.PayloadBytes(rows, width, 2);

    public void Encode(ReadOnlySpan<float> values, int rows, int width, Span<byte> destination)
    {
        FixedWidthElements.CheckLength(rows, width, (long)rows * width, values.Length, "values", nameof(values));
        FixedWidthElements.CheckLength(rows, width, PayloadBytes(rows, width), destination.Length, "bytes", nameof(destination));
        Span<ushort> elements = MemoryMarshal.Cast<byte, ushort>(destination);
        if (element == ModelDType.BF16)
        {
            ElementConversions.SingleToBFloat16(values, elements);
        }
        else
        {
            ElementConversions.SingleToHalf(values, elements);
        }

        FixedWidthElements.ToLittleEndian(destination);
    }

    public void Decode(ReadOnlySpan<byte> data, int rows, int width, Span<float> destination)
    {
        FixedWidthElements.CheckLength(rows, width, PayloadBytes(rows, width), data.Length, "bytes", nameof(data));
        FixedWidthElements.CheckLength(rows, width, (long)rows * width, destination.Length, "values", nameof(destination));
        ElementConversions.ToSingle(element, data, destination);
    }

    public int FindNonFinite(ReadOnlySpan<byte> data, int rows, int width)
    {
        FixedWidthElements.CheckLength(rows, width, PayloadBytes(rows, width), data.Length, "bytes", nameof(data));
        return FixedWidthElements.FindNonFinite16(data, exponentMask);
    }
}
