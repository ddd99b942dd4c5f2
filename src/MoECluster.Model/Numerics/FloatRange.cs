using System.Buffers.Binary;
using System.Numerics;
using System.Runtime.InteropServices;
using MoECluster.Model.Checkpoints;

namespace MoECluster.Model.Numerics;

/// <summary>
/// Where values leave the finite range: the first NaN or infinity of a float32 span or of stored elements
/// (exponent bits all ones), and the largest magnitude of a span.
/// </summary>
public static class FloatRange
{
    /// <summary>Index of the first NaN or ±infinity in <paramref name="values"/>, or -1 when all are finite.</summary>
    public static int FirstNonFinite(ReadOnlySpan<float> values)
    {
        ReadOnlySpan<uint> bits = MemoryMarshal.Cast<float, uint>(values);
        int i = 0;
        if (Vector.IsHardwareAccelerated && bits.Length >= Vector<uint>.Count)
        {
            var mask = new Vector<uint>(0x7F80_0000u);
            for (; i <= bits.Length - Vector<uint>.Count; i += Vector<uint>.Count)
            {
                if (Vector.EqualsAny(Vector.BitwiseAnd(new Vector<uint>(bits[i..]), mask), mask))
                {
                    break;
                }
            }
        }

        for (; i < bits.Length; i++)
        {
            if ((bits[i] & 0x7F80_0000u) == 0x7F80_0000u)
            {
                return i;
            }
        }

        return -1;
    }

    /// <summary>Index of the first non-finite element among little-endian elements of <paramref name="dtype"/>, or -1.</summary>
    public static long FirstNonFinite(DType dtype, ReadOnlySpan<byte> data)
    {
        switch (dtype)
        {
            case DType.F32:
                if (BitConverter.IsLittleEndian)
                {
                    return FirstNonFinite(MemoryMarshal.Cast<byte, float>(data));
                }

                for (int i = 0; i + 4 <= data.Length; i += 4)
                {
                    if ((BinaryPrimitives.ReadUInt32LittleEndian(data[i..]) & 0x7F80_0000u) == 0x7F80_0000u)
                    {
                        return i / 4;
                    }
                }

                return -1;
            case DType.F64:
                for (int i = 0; i + 8 <= data.Length; i += 8)
                {
                    if ((BinaryPrimitives.ReadUInt64LittleEndian(data[i..]) & 0x7FF0_0000_0000_0000ul) == 0x7FF0_0000_0000_0000ul)
                    {
                        return i / 8;
                    }
                }

                return -1;
            case DType.BF16:
            case DType.F16:
                ushort exponent = dtype == DType.BF16 ? (ushort)0x7F80 : (ushort)0x7C00;
                for (int i = 0; i + 2 <= data.Length; i += 2)
                {
                    if ((BinaryPrimitives.ReadUInt16LittleEndian(data[i..]) & exponent) == exponent)
                    {
                        return i / 2;
                    }
                }

                return -1;
            default:
                throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "not a floating-point dtype");
        }
    }

    /// <summary>The largest |value| (NaN counts as infinity), 0 for an empty span.</summary>
    public static float MaxAbs(ReadOnlySpan<float> values)
    {
        float max = 0;
        foreach (float v in values)
        {
            float a = float.IsNaN(v) ? float.PositiveInfinity : MathF.Abs(v);
            if (a > max)
            {
                max = a;
            }
        }

        return max;
    }
}
