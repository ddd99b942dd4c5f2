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
}

/// <summary>Sizes and names of <see cref="WireDType"/> values.</summary>
public static class WireDTypes
{
    /// <summary>Whether <paramref name="dtype"/> is one of the defined values (an enum read off the wire may not be).</summary>
    public static bool IsDefined(WireDType dtype) => dtype is WireDType.F32 or WireDType.BF16 or WireDType.F16;

    /// <summary>Bytes per element.</summary>
    public static int SizeOf(WireDType dtype) => dtype switch
    {
        WireDType.F32 => 4,
        WireDType.BF16 or WireDType.F16 => 2,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, $"Unknown wire dtype {(byte)dtype}."),
    };

    /// <summary>The canonical name: "fp32", "bf16" or "fp16".</summary>
    public static string Name(WireDType dtype) => dtype switch
    {
        WireDType.F32 => "fp32",
        WireDType.BF16 => "bf16",
        WireDType.F16 => "fp16",
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, $"Unknown wire dtype {(byte)dtype}."),
    };

    /// <summary>Parses fp32|f32|bf16|fp16|f16, case-insensitive.</summary>
    public static bool TryParse(string? text, out WireDType dtype)
    {
        switch (text?.Trim().ToUpperInvariant())
        {
            case "FP32" or "F32":
                dtype = WireDType.F32;
                return true;
            case "BF16":
                dtype = WireDType.BF16;
                return true;
            case "FP16" or "F16":
                dtype = WireDType.F16;
                return true;
            default:
                dtype = default;
                return false;
        }
    }

    /// <summary>A name for messages that also works for undefined values read off the wire.</summary>
    internal static string Describe(WireDType dtype) => IsDefined(dtype) ? Name(dtype) : $"undefined dtype {(byte)dtype}";
}
