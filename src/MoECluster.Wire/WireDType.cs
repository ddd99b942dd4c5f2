namespace MoECluster.Wire;

/// <summary>Element type of an <see cref="ActivationBlock"/> on the wire. Values are the bytes sent.</summary>
public enum WireDType : byte
{
    /// <summary>IEEE binary32, 4 bytes little-endian.</summary>
    F32 = 0,

    /// <summary>bfloat16 (the upper half of a binary32), 2 bytes little-endian.</summary>
    BF16 = 1,

    /// <summary>IEEE binary16, 2 bytes little-endian.</summary>
    F16 = 2,

    /// <summary>OCP MX v1.0 MXFP8: FP8 E4M3 elements, an E8M0 scale per 32 (docs/MICROSCALING.md).</summary>
    MxFp8E4M3 = 3,

    /// <summary>OCP MX v1.0 MXFP8: FP8 E5M2 elements, an E8M0 scale per 32.</summary>
    MxFp8E5M2 = 4,

    /// <summary>OCP MX v1.0 MXFP6: FP6 E3M2 elements (four in three bytes), an E8M0 scale per 32.</summary>
    MxFp6E3M2 = 5,

    /// <summary>OCP MX v1.0 MXFP6: FP6 E2M3 elements (four in three bytes), an E8M0 scale per 32.</summary>
    MxFp6E2M3 = 6,

    /// <summary>OCP MX v1.0 MXFP4: FP4 E2M1 elements (two a byte), an E8M0 scale per 32.</summary>
    MxFp4 = 7,

    /// <summary>NVIDIA NVFP4: FP4 E2M1 elements, an FP8 E4M3 scale per 16 and an fp32 scale per message.</summary>
    NvFp4 = 8,
}

/// <summary>Names of <see cref="WireDType"/> values: shorthands over <see cref="WireCodecs"/>, the one place they are defined.</summary>
public static class WireDTypes
{
    /// <summary>Whether <paramref name="dtype"/> is one of the defined values (an enum read off the wire may not be).</summary>
    public static bool IsDefined(WireDType dtype) => WireCodecs.IsDefined(dtype);

    /// <summary>The canonical name ("fp32", "bf16", "fp16", ...).</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="dtype"/> is not defined.</exception>
    public static string Name(WireDType dtype) => WireCodecs.Get(dtype).Name;

    /// <summary>Parses a codec's name or alias (fp32|f32|bf16|fp16|f16, ...), case-insensitive.</summary>
    public static bool TryParse(string? text, out WireDType dtype)
    {
        bool parsed = WireCodecs.TryParse(text, out var codec);
        dtype = parsed ? codec!.Id : default;
        return parsed;
    }

    /// <summary>A name for messages that also works for undefined values read off the wire.</summary>
    internal static string Describe(WireDType dtype) => WireCodecs.Describe(dtype);
}
