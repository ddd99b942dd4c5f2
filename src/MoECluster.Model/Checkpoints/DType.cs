namespace MoECluster.Model.Checkpoints;

/// <summary>Element types of safetensors tensors.</summary>
public enum DType
{
    F64,
    F32,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
    F8E4M3,
    F8E5M2,
}

/// <summary>Sizes and safetensors names of <see cref="DType"/> values.</summary>
public static class DTypes
{
    /// <summary>Bytes per element.</summary>
    public static int SizeOf(DType t) => t switch
    {
        DType.F64 or DType.I64 => 8,
        DType.F32 or DType.I32 => 4,
        DType.F16 or DType.BF16 or DType.I16 => 2,
        DType.I8 or DType.U8 or DType.Bool or DType.F8E4M3 or DType.F8E5M2 => 1,
        _ => throw new ArgumentOutOfRangeException(nameof(t), t, "Unknown dtype."),
    };

    /// <summary>The name safetensors headers use for the dtype ("F32", "BF16", "BOOL", "F8_E4M3", ...).</summary>
    public static string ToSafetensorsName(DType t) => t switch
    {
        DType.F64 => "F64",
        DType.F32 => "F32",
        DType.F16 => "F16",
        DType.BF16 => "BF16",
        DType.I64 => "I64",
        DType.I32 => "I32",
        DType.I16 => "I16",
        DType.I8 => "I8",
        DType.U8 => "U8",
        DType.Bool => "BOOL",
        DType.F8E4M3 => "F8_E4M3",
        DType.F8E5M2 => "F8_E5M2",
        _ => throw new ArgumentOutOfRangeException(nameof(t), t, "Unknown dtype."),
    };

    /// <summary>Parses a safetensors dtype name (exact, case-sensitive, as the format specifies).</summary>
    public static bool TryParse(string name, out DType t)
    {
        switch (name)
        {
            case "F64": t = DType.F64; return true;
            case "F32": t = DType.F32; return true;
            case "F16": t = DType.F16; return true;
            case "BF16": t = DType.BF16; return true;
            case "I64": t = DType.I64; return true;
            case "I32": t = DType.I32; return true;
            case "I16": t = DType.I16; return true;
            case "I8": t = DType.I8; return true;
            case "U8": t = DType.U8; return true;
            case "BOOL": t = DType.Bool; return true;
            case "F8_E4M3": t = DType.F8E4M3; return true;
            case "F8_E5M2": t = DType.F8E5M2; return true;
            default: t = default; return false;
        }
    }

    /// <summary>True for the dtypes <see cref="Numerics.ElementConversions.ToSingle"/> converts: F64, F32, F16, BF16.</summary>
    public static bool IsFloatingPoint(DType t) => t is DType.F64 or DType.F32 or DType.F16 or DType.BF16;
}
