using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using MoECluster.Model.Checkpoints;

namespace MoECluster.Model.Numerics;

/// <summary>
/// Conversions between float32 and the 16-bit float formats (bfloat16, IEEE half) and from raw little-endian
/// tensor bytes to float32. Span overloads require a destination at least as long as the source.
/// </summary>
public static class ElementConversions
{
    private const uint QuietNaNBit = 0x0040_0000;

    /// <summary>Widens bfloat16 bits to float32 (exact: the bits shifted up by 16).</summary>
    public static float BFloat16ToSingle(ushort bits) => BitConverter.UInt32BitsToSingle((uint)bits << 16);

    /// <summary>Rounds float32 to the nearest bfloat16 (ties to even). NaN stays NaN (made quiet, sign kept); overflow gives infinity.</summary>
    public static ushort SingleToBFloat16(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        if (float.IsNaN(value))
        {
            return (ushort)((bits | QuietNaNBit) >> 16);
        }

        // Non-NaN bit patterns are at most 0xFF800000, so this cannot wrap.
        uint rounded = bits + 0x7FFFu + ((bits >> 16) & 1u);
        return (ushort)(rounded >> 16);
    }

    /// <summary>Widens bfloat16 bits to float32.</summary>
    public static void BFloat16ToSingle(ReadOnlySpan<ushort> src, Span<float> dst)
    {
        CheckDestination(src, dst);
        ref ushort s = ref MemoryMarshal.GetReference(src);
        ref uint d = ref Unsafe.As<float, uint>(ref MemoryMarshal.GetReference(dst));
        int n = src.Length;
        int i = 0;

        if (Vector512.IsHardwareAccelerated)
        {
            for (; i <= n - Vector512<ushort>.Count; i += Vector512<ushort>.Count)
            {
                (Vector512<uint> lo, Vector512<uint> hi) = Vector512.Widen(Vector512.LoadUnsafe(ref s, (nuint)i));
                Vector512.ShiftLeft(lo, 16).StoreUnsafe(ref d, (nuint)i);
                Vector512.ShiftLeft(hi, 16).StoreUnsafe(ref d, (nuint)(i + Vector512<uint>.Count));
            }
        }

        if (Vector256.IsHardwareAccelerated)
        {
            for (; i <= n - Vector256<ushort>.Count; i += Vector256<ushort>.Count)
            {
                (Vector256<uint> lo, Vector256<uint> hi) = Vector256.Widen(Vector256.LoadUnsafe(ref s, (nuint)i));
                Vector256.ShiftLeft(lo, 16).StoreUnsafe(ref d, (nuint)i);
                Vector256.ShiftLeft(hi, 16).StoreUnsafe(ref d, (nuint)(i + Vector256<uint>.Count));
            }
        }

        if (Vector128.IsHardwareAccelerated)
        {
            for (; i <= n - Vector128<ushort>.Count; i += Vector128<ushort>.Count)
            {
                (Vector128<uint> lo, Vector128<uint> hi) = Vector128.Widen(Vector128.LoadUnsafe(ref s, (nuint)i));
                Vector128.ShiftLeft(lo, 16).StoreUnsafe(ref d, (nuint)i);
                Vector128.ShiftLeft(hi, 16).StoreUnsafe(ref d, (nuint)(i + Vector128<uint>.Count));
            }
        }

        for (; i < n; i++)
        {
            Unsafe.Add(ref d, i) = (uint)Unsafe.Add(ref s, i) << 16;
        }
    }

    /// <summary>Rounds float32 values to bfloat16 (ties to even, NaN kept as quiet NaN).</summary>
    public static void SingleToBFloat16(ReadOnlySpan<float> src, Span<ushort> dst)
    {
        CheckDestination(src, dst);
        ref uint s = ref Unsafe.As<float, uint>(ref MemoryMarshal.GetReference(src));
        ref ushort d = ref MemoryMarshal.GetReference(dst);
        int n = src.Length;
        int i = 0;

        if (Vector512.IsHardwareAccelerated)
        {
            for (; i <= n - Vector512<ushort>.Count; i += Vector512<ushort>.Count)
            {
                Vector512<uint> lo = Round(Vector512.LoadUnsafe(ref s, (nuint)i));
                Vector512<uint> hi = Round(Vector512.LoadUnsafe(ref s, (nuint)(i + Vector512<uint>.Count)));
                Vector512.Narrow(lo, hi).StoreUnsafe(ref d, (nuint)i);
            }
        }

        if (Vector256.IsHardwareAccelerated)
        {
            for (; i <= n - Vector256<ushort>.Count; i += Vector256<ushort>.Count)
            {
                Vector256<uint> lo = Round(Vector256.LoadUnsafe(ref s, (nuint)i));
                Vector256<uint> hi = Round(Vector256.LoadUnsafe(ref s, (nuint)(i + Vector256<uint>.Count)));
                Vector256.Narrow(lo, hi).StoreUnsafe(ref d, (nuint)i);
            }
        }

        if (Vector128.IsHardwareAccelerated)
        {
            for (; i <= n - Vector128<ushort>.Count; i += Vector128<ushort>.Count)
            {
                Vector128<uint> lo = Round(Vector128.LoadUnsafe(ref s, (nuint)i));
                Vector128<uint> hi = Round(Vector128.LoadUnsafe(ref s, (nuint)(i + Vector128<uint>.Count)));
                Vector128.Narrow(lo, hi).StoreUnsafe(ref d, (nuint)i);
            }
        }

        for (; i < n; i++)
        {
            Unsafe.Add(ref d, i) = SingleToBFloat16(BitConverter.UInt32BitsToSingle(Unsafe.Add(ref s, i)));
        }
    }

    /// <summary>Widens IEEE binary16 bits to float32 (exact).</summary>
    public static void HalfToSingle(ReadOnlySpan<ushort> src, Span<float> dst)
    {
        CheckDestination(src, dst);
        ReadOnlySpan<Half> halves = MemoryMarshal.Cast<ushort, Half>(src);
        for (int i = 0; i < halves.Length; i++)
        {
            dst[i] = (float)halves[i];
        }
    }

    /// <summary>Rounds float32 values to IEEE binary16 bits (ties to even; overflow gives infinity).</summary>
    public static void SingleToHalf(ReadOnlySpan<float> src, Span<ushort> dst)
    {
        CheckDestination(src, dst);
        for (int i = 0; i < src.Length; i++)
        {
            dst[i] = BitConverter.HalfToUInt16Bits((Half)src[i]);
        }
    }

    /// <summary>
    /// Converts raw little-endian elements of <paramref name="dtype"/> (F32, BF16, F16 or F64) to float32.
    /// <paramref name="src"/> must hold exactly <paramref name="dst"/>.Length elements.
    /// </summary>
    public static void ToSingle(DType dtype, ReadOnlySpan<byte> src, Span<float> dst)
    {
        if (!DTypes.IsFloatingPoint(dtype))
        {
            throw new ArgumentException(
                $"dtype {DTypes.ToSafetensorsName(dtype)} cannot be converted to float32 (supported: F32, BF16, F16, F64).",
                nameof(dtype));
        }

        int size = DTypes.SizeOf(dtype);
        if ((long)dst.Length * size != src.Length)
        {
            throw new ArgumentException(
                $"Source is {src.Length} bytes, but {dst.Length} {DTypes.ToSafetensorsName(dtype)} elements need {(long)dst.Length * size} bytes.",
                nameof(src));
        }

        if (!BitConverter.IsLittleEndian)
        {
            ToSingleBigEndianHost(dtype, src, dst);
            return;
        }

        switch (dtype)
        {
            case DType.F32:
                MemoryMarshal.Cast<byte, float>(src).CopyTo(dst);
                break;
            case DType.BF16:
                BFloat16ToSingle(MemoryMarshal.Cast<byte, ushort>(src), dst);
                break;
            case DType.F16:
                HalfToSingle(MemoryMarshal.Cast<byte, ushort>(src), dst);
                break;
            default:
                ReadOnlySpan<double> doubles = MemoryMarshal.Cast<byte, double>(src);
                for (int i = 0; i < doubles.Length; i++)
                {
                    dst[i] = (float)doubles[i];
                }

                break;
        }
    }

    private static void ToSingleBigEndianHost(DType dtype, ReadOnlySpan<byte> src, Span<float> dst)
    {
        for (int i = 0; i < dst.Length; i++)
        {
            dst[i] = dtype switch
            {
                DType.F32 => BinaryPrimitives.ReadSingleLittleEndian(src[(i * 4)..]),
                DType.BF16 => BFloat16ToSingle(BinaryPrimitives.ReadUInt16LittleEndian(src[(i * 2)..])),
                DType.F16 => (float)BinaryPrimitives.ReadHalfLittleEndian(src[(i * 2)..]),
                _ => (float)BinaryPrimitives.ReadDoubleLittleEndian(src[(i * 8)..]),
            };
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<uint> Round(Vector512<uint> bits)
    {
        Vector512<uint> rounded = bits + Vector512.Create(0x7FFFu) + ((bits >> 16) & Vector512<uint>.One);
        Vector512<float> f = bits.AsSingle();
        Vector512<uint> isNumber = Vector512.Equals(f, f).AsUInt32();
        return Vector512.ConditionalSelect(isNumber, rounded, bits | Vector512.Create(QuietNaNBit)) >> 16;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<uint> Round(Vector256<uint> bits)
    {
        Vector256<uint> rounded = bits + Vector256.Create(0x7FFFu) + ((bits >> 16) & Vector256<uint>.One);
        Vector256<float> f = bits.AsSingle();
        Vector256<uint> isNumber = Vector256.Equals(f, f).AsUInt32();
        return Vector256.ConditionalSelect(isNumber, rounded, bits | Vector256.Create(QuietNaNBit)) >> 16;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<uint> Round(Vector128<uint> bits)
    {
        Vector128<uint> rounded = bits + Vector128.Create(0x7FFFu) + ((bits >> 16) & Vector128<uint>.One);
        Vector128<float> f = bits.AsSingle();
        Vector128<uint> isNumber = Vector128.Equals(f, f).AsUInt32();
        return Vector128.ConditionalSelect(isNumber, rounded, bits | Vector128.Create(QuietNaNBit)) >> 16;
    }

    private static void CheckDestination<TSource, TDestination>(ReadOnlySpan<TSource> src, Span<TDestination> dst)
    {
        if (dst.Length < src.Length)
        {
            throw new ArgumentException($"Destination has {dst.Length} elements, fewer than the source's {src.Length}.", nameof(dst));
        }
    }
}
