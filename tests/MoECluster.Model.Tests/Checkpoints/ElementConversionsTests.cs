using System.Buffers.Binary;
using MoECluster.Model.Checkpoints;
using MoECluster.Model.Numerics;

namespace MoECluster.Model.Tests.Checkpoints;

public sealed class ElementConversionsTests
{
    /// <summary>Bit patterns covering NaNs (signalling and quiet, both signs), infinities, zeros, subnormals, ties and overflow.</summary>
    private static readonly uint[] SpecialFloatBits =
    [
        0x0000_0000, 0x8000_0000, // +-0
        0x7F80_0000, 0xFF80_0000, // +-Inf
        0x7FC0_0000, 0xFFC0_0000, 0x7F80_0001, 0xFF80_0001, 0x7FBF_FFFF, 0x7F80_8000, 0x7FFF_FFFF, // NaNs
        0x0000_0001, 0x8000_0001, 0x0000_8000, 0x0001_8000, 0x007F_FFFF, 0x807F_8000, 0x007F_7FFF, // subnormals and ties among them
        0x3F80_8000, 0x3F81_8000, 0xBF80_8000, 0xBF81_8000, 0x3F80_8001, 0x3F80_7FFF, // ties to even and neighbours
        0x7F7F_FFFF, 0x7F7F_7FFF, 0x7F7F_8000, 0x7F7E_8000, 0xFF7F_FFFF, // overflow to infinity at the top of the range
        0x0080_0000, 0x3F80_0000, 0x4049_0FDB, // min normal, 1, pi
    ];

    private readonly int _seed = Random.Shared.Next();

    [Fact]
    public void Scalar_bfloat16_to_single_matches_the_bit_layout_for_all_65536_patterns()
    {
        for (int b = 0; b <= ushort.MaxValue; b++)
        {
            float actual = ElementConversions.BFloat16ToSingle((ushort)b);
            AssertSameFloat(DecodeBFloat16Reference((ushort)b), actual, $"bf16 0x{b:X4}");
        }
    }

    [Fact]
    public void Span_bfloat16_to_single_matches_scalar_for_all_patterns_at_every_alignment_and_tail()
    {
        ushort[] all = Enumerable.Range(0, 65536).Select(i => (ushort)i).ToArray();
        for (int start = 0; start < 3; start++)
        {
            ReadOnlySpan<ushort> src = all.AsSpan(start);
            float[] dst = new float[src.Length];
            ElementConversions.BFloat16ToSingle(src, dst);
            for (int i = 0; i < src.Length; i++)
            {
                AssertSameFloat(DecodeBFloat16Reference(src[i]), dst[i], $"bf16 0x{src[i]:X4} at index {i}");
            }
        }

        for (int length = 0; length <= 2 * 64 + 33; length++)
        {
            ushort[] src = RandomUShorts(new Random(_seed + length), length);
            float[] dst = new float[length + 1];
            dst[length] = 42f;
            ElementConversions.BFloat16ToSingle(src, dst);
            for (int i = 0; i < length; i++)
            {
                AssertSameFloat(DecodeBFloat16Reference(src[i]), dst[i], $"seed {_seed}, length {length}, index {i}");
            }

            Assert.Equal(42f, dst[length]);
        }
    }

    [Fact]
    public void Scalar_single_to_bfloat16_rounds_to_nearest_even_for_special_values()
    {
        foreach (uint bits in SpecialFloatBits)
        {
            AssertBits(RoundBFloat16Reference(bits), ElementConversions.SingleToBFloat16(BitConverter.UInt32BitsToSingle(bits)), bits);
        }

        // Spot checks written out by hand.
        Assert.Equal(0x3F80, ElementConversions.SingleToBFloat16(BitConverter.UInt32BitsToSingle(0x3F80_8000))); // tie, even stays
        Assert.Equal(0x3F82, ElementConversions.SingleToBFloat16(BitConverter.UInt32BitsToSingle(0x3F81_8000))); // tie, odd goes up
        Assert.Equal(0x7F80, ElementConversions.SingleToBFloat16(float.MaxValue)); // overflows to +Inf
        Assert.Equal(0x0080, ElementConversions.SingleToBFloat16(BitConverter.UInt32BitsToSingle(0x007F_FFFF))); // largest subnormal rounds to min normal
        Assert.Equal(0x0000, ElementConversions.SingleToBFloat16(BitConverter.UInt32BitsToSingle(0x0000_8000))); // subnormal tie to even zero
        ushort fromSignalling = ElementConversions.SingleToBFloat16(BitConverter.UInt32BitsToSingle(0x7F80_0001));
        Assert.True(float.IsNaN(ElementConversions.BFloat16ToSingle(fromSignalling)), "a NaN with only low payload bits must not become infinity");
        Assert.Equal(0x8000, ElementConversions.SingleToBFloat16(BitConverter.UInt32BitsToSingle(0xFF80_0001)) & 0x8000); // sign kept
    }

    [Fact]
    public void Scalar_single_to_bfloat16_matches_reference_for_fresh_random_bit_patterns_and_ties()
    {
        var random = new Random(_seed);
        for (int i = 0; i < 200_000; i++)
        {
            uint bits = (uint)random.NextInt64(0, 1L << 32);
            if ((i & 3) == 0)
            {
                bits = (bits & 0xFFFF_0000) | 0x8000; // exact tie
            }

            AssertBits(RoundBFloat16Reference(bits), ElementConversions.SingleToBFloat16(BitConverter.UInt32BitsToSingle(bits)), bits);
        }
    }

    [Fact]
    public void Single_to_bfloat16_picks_the_nearest_representable_value()
    {
        var random = new Random(_seed);
        for (int i = 0; i < 50_000; i++)
        {
            float x = BitConverter.UInt32BitsToSingle((uint)random.NextInt64(0, 1L << 32));
            if (!float.IsFinite(x))
            {
                continue;
            }

            ushort r = ElementConversions.SingleToBFloat16(x);
            double result = Unbounded(ElementConversions.BFloat16ToSingle(r));
            double distance = Math.Abs(x - result);
            foreach (int step in (int[])[-1, 1])
            {
                ushort neighbourBits = (ushort)(r + step);
                double neighbour = Unbounded(ElementConversions.BFloat16ToSingle(neighbourBits));
                if (double.IsNaN(neighbour) || (neighbourBits & 0x8000) != (r & 0x8000))
                {
                    continue;
                }

                double other = Math.Abs(x - neighbour);
                Assert.True(
                    distance < other || (distance == other && (r & 1) == 0),
                    $"seed {_seed}: 0x{BitConverter.SingleToUInt32Bits(x):X8} rounded to 0x{r:X4}, but 0x{neighbourBits:X4} is nearer or an even tie");
            }
        }
    }

    [Fact]
    public void Span_single_to_bfloat16_matches_scalar_for_every_tail_length()
    {
        for (int length = 0; length <= 2 * 64 + 33; length++)
        {
            var random = new Random(_seed + length);
            float[] src = new float[length];
            for (int i = 0; i < length; i++)
            {
                src[i] = BitConverter.UInt32BitsToSingle(i < SpecialFloatBits.Length && (length & 1) == 1
                    ? SpecialFloatBits[i]
                    : (uint)random.NextInt64(0, 1L << 32));
            }

            ushort[] dst = new ushort[length + 1];
            dst[length] = 0xBEEF;
            ElementConversions.SingleToBFloat16(src, dst);
            for (int i = 0; i < length; i++)
            {
                uint bits = BitConverter.SingleToUInt32Bits(src[i]);
                Assert.True(RoundBFloat16Reference(bits) == dst[i], $"seed {_seed}, length {length}, index {i}: 0x{bits:X8} -> 0x{dst[i]:X4}, expected 0x{RoundBFloat16Reference(bits):X4}");
            }

            Assert.Equal(0xBEEF, dst[length]);
        }
    }

    [Fact]
    public void Span_single_to_bfloat16_handles_all_special_values_in_vector_lanes()
    {
        // Repeat the specials so each lands in many lane positions of every vector width.
        float[] src = Enumerable.Range(0, 1031).Select(i => BitConverter.UInt32BitsToSingle(SpecialFloatBits[i % SpecialFloatBits.Length])).ToArray();
        ushort[] dst = new ushort[src.Length];

        ElementConversions.SingleToBFloat16(src, dst);

        for (int i = 0; i < src.Length; i++)
        {
            AssertBits(RoundBFloat16Reference(BitConverter.SingleToUInt32Bits(src[i])), dst[i], BitConverter.SingleToUInt32Bits(src[i]));
        }
    }

    [Fact]
    public void Span_conversions_refuse_a_destination_shorter_than_the_source()
    {
        Assert.Throws<ArgumentException>(() => ElementConversions.BFloat16ToSingle(new ushort[4], new float[3]));
        Assert.Throws<ArgumentException>(() => ElementConversions.SingleToBFloat16(new float[4], new ushort[3]));
        Assert.Throws<ArgumentException>(() => ElementConversions.HalfToSingle(new ushort[4], new float[3]));
        Assert.Throws<ArgumentException>(() => ElementConversions.SingleToHalf(new float[4], new ushort[3]));
    }

    [Fact]
    public void Half_to_single_matches_an_independent_decoder_for_all_65536_patterns()
    {
        ushort[] all = Enumerable.Range(0, 65536).Select(i => (ushort)i).ToArray();
        float[] dst = new float[all.Length];

        ElementConversions.HalfToSingle(all, dst);

        for (int i = 0; i < all.Length; i++)
        {
            float expected = DecodeHalfReference(all[i]);
            if (float.IsNaN(expected))
            {
                Assert.True(float.IsNaN(dst[i]), $"half 0x{all[i]:X4} must decode to NaN");
            }
            else
            {
                AssertSameFloat(expected, dst[i], $"half 0x{all[i]:X4}");
            }
        }
    }

    [Fact]
    public void Single_to_half_round_trips_every_half_and_rounds_ties_to_even()
    {
        ushort[] all = Enumerable.Range(0, 65536).Select(i => (ushort)i).ToArray();
        float[] widened = new float[all.Length];
        ushort[] back = new ushort[all.Length];
        ElementConversions.HalfToSingle(all, widened);

        ElementConversions.SingleToHalf(widened, back);

        for (int i = 0; i < all.Length; i++)
        {
            bool isNaN = (all[i] & 0x7C00) == 0x7C00 && (all[i] & 0x03FF) != 0;
            if (isNaN)
            {
                Assert.True((back[i] & 0x7C00) == 0x7C00 && (back[i] & 0x03FF) != 0, $"NaN 0x{all[i]:X4} must stay NaN");
            }
            else
            {
                Assert.True(all[i] == back[i], $"half 0x{all[i]:X4} came back as 0x{back[i]:X4}");
            }
        }

        float[] src = [1f + MathF.Pow(2, -11), 1f + (3 * MathF.Pow(2, -11)), 65504f, 65519f, 65520f, -65520f, MathF.Pow(2, -25), 3 * MathF.Pow(2, -26), 1e-10f];
        ushort[] dst = new ushort[src.Length];
        ElementConversions.SingleToHalf(src, dst);
        Assert.Equal([0x3C00, 0x3C02, 0x7BFF, 0x7BFF, 0x7C00, 0xFC00, 0x0000, 0x0001, 0x0000], dst);
    }

    [Fact]
    public void ToSingle_converts_little_endian_bytes_of_each_float_dtype()
    {
        float[] expected = [1.5f, -0.25f, 96f];
        foreach (DType dtype in (DType[])[DType.F32, DType.BF16, DType.F16, DType.F64])
        {
            byte[] bytes = FloatEncoding.Encode(dtype, expected);
            float[] dst = new float[3];
            ElementConversions.ToSingle(dtype, bytes, dst);
            Assert.Equal(expected, dst);
        }

        byte[] bf16 = new byte[2];
        BinaryPrimitives.WriteUInt16LittleEndian(bf16, 0xC0A0); // -5
        float[] one = new float[1];
        ElementConversions.ToSingle(DType.BF16, bf16, one);
        Assert.Equal(-5f, one[0]);
    }

    [Fact]
    public void ToSingle_refuses_non_float_dtypes_and_mismatched_lengths()
    {
        var ex = Assert.Throws<ArgumentException>(() => ElementConversions.ToSingle(DType.I32, new byte[8], new float[2]));
        Assert.Contains("I32 cannot be converted to float32", ex.Message, StringComparison.Ordinal);
        var length = Assert.Throws<ArgumentException>(() => ElementConversions.ToSingle(DType.F16, new byte[5], new float[2]));
        Assert.Contains("Source is 5 bytes", length.Message, StringComparison.Ordinal);
    }

    /// <summary>Round to nearest even by comparing the discarded half-word with the halfway point.</summary>
    private static ushort RoundBFloat16Reference(uint bits)
    {
        bool isNaN = (bits & 0x7F80_0000) == 0x7F80_0000 && (bits & 0x007F_FFFF) != 0;
        if (isNaN)
        {
            return (ushort)((bits >> 16) | 0x0040);
        }

        uint upper = bits >> 16;
        uint lower = bits & 0xFFFF;
        if (lower > 0x8000 || (lower == 0x8000 && (upper & 1) == 1))
        {
            upper++;
        }

        return (ushort)upper;
    }

    private static float DecodeBFloat16Reference(ushort b)
    {
        int sign = b >> 15;
        int exponent = (b >> 7) & 0xFF;
        int mantissa = b & 0x7F;
        if (exponent == 0xFF)
        {
            return mantissa == 0
                ? (sign == 1 ? float.NegativeInfinity : float.PositiveInfinity)
                : BitConverter.UInt32BitsToSingle((uint)b << 16); // NaN payload: checked bitwise
        }

        double magnitude = exponent == 0
            ? Math.ScaleB(mantissa, -133)
            : Math.ScaleB(128 + mantissa, exponent - 134);
        return (float)(sign == 1 ? -magnitude : magnitude);
    }

    private static float DecodeHalfReference(ushort h)
    {
        int sign = h >> 15;
        int exponent = (h >> 10) & 0x1F;
        int mantissa = h & 0x3FF;
        if (exponent == 0x1F)
        {
            return mantissa != 0 ? float.NaN : sign == 1 ? float.NegativeInfinity : float.PositiveInfinity;
        }

        double magnitude = exponent == 0
            ? Math.ScaleB(mantissa, -24)
            : Math.ScaleB(1024 + mantissa, exponent - 25);
        return (float)(sign == 1 ? -magnitude : magnitude);
    }

    /// <summary>Infinity as the next step of the exponent range (2^128), the value rounding measures distance to.</summary>
    private static double Unbounded(float value) =>
        float.IsInfinity(value) ? Math.CopySign(Math.Pow(2, 128), value) : value;

    private static ushort[] RandomUShorts(Random random, int length)
    {
        ushort[] values = new ushort[length];
        for (int i = 0; i < length; i++)
        {
            values[i] = (ushort)random.Next(65536);
        }

        return values;
    }

    private static void AssertSameFloat(float expected, float actual, string what)
    {
        uint e = BitConverter.SingleToUInt32Bits(expected);
        uint a = BitConverter.SingleToUInt32Bits(actual);
        Assert.True(e == a, $"{what}: expected 0x{e:X8} ({expected}), got 0x{a:X8} ({actual})");
    }

    private void AssertBits(ushort expected, ushort actual, uint input) =>
        Assert.True(expected == actual, $"seed {_seed}: float 0x{input:X8} -> 0x{actual:X4}, expected 0x{expected:X4}");
}
