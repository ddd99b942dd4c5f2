using System.Buffers.Binary;
using MoECluster.Wire.Microscaling;

namespace MoECluster.Wire.Tests;

/// <summary>
/// The MX (OCP v1.0) and NVFP4 codecs against the values the specifications state (docs/MICROSCALING.md): element code
/// points, the shared-exponent rule and its range ends, rounding, saturation, partial last blocks, zero blocks,
/// refusal of non-finite input, and what hostile bytes decode to.
/// </summary>
public sealed class MicroscalingTests
{
    public static TheoryData<WireDType> BlockScaled()
    {
        var data = new TheoryData<WireDType>();
        foreach (var codec in WireCodecs.All.Where(c => c.BlockSize > 1))
        {
            data.Add(codec.Id);
        }

        return data;
    }

    [Fact]
    public void E2M1_code_points_are_the_eight_magnitudes_of_the_spec_and_their_negatives()
    {
        float[] magnitudes = [0f, 0.5f, 1f, 1.5f, 2f, 3f, 4f, 6f];
        for (int code = 0; code < 16; code++)
        {
            float expected = (code & 8) != 0 ? -magnitudes[code & 7] : magnitudes[code & 7];
            Assert.Equal(expected, ElementFormat.E2M1.Value(code));
            Assert.Equal((code & 8) != 0, float.IsNegative(ElementFormat.E2M1.Value(code)));
        }
    }

    [Fact]
    public void FP6_code_points_are_the_specs_subnormal_steps_and_normals()
    {
        // E2M3: subnormals 0.125·m (m = 0..7), normals 2^(e−1)·(1 + m/8), e = 1..3: 1 .. 7.5.
        // E3M2: subnormals 0.0625·m (m = 0..3), normals 2^(e−3)·(1 + m/4), e = 1..7: 0.25 .. 28.
        for (int code = 0; code < 32; code++)
        {
            int e23 = code >> 3, m23 = code & 7;
            Assert.Equal(e23 == 0 ? 0.125 * m23 : Math.Pow(2, e23 - 1) * (1 + (m23 / 8.0)), ElementFormat.E2M3.Value(code));
            Assert.Equal(-ElementFormat.E2M3.Value(code), ElementFormat.E2M3.Value(code | 32));
            int e32 = code >> 2, m32 = code & 3;
            Assert.Equal(e32 == 0 ? 0.0625 * m32 : Math.Pow(2, e32 - 3) * (1 + (m32 / 4.0)), ElementFormat.E3M2.Value(code));
            Assert.Equal(-ElementFormat.E3M2.Value(code), ElementFormat.E3M2.Value(code | 32));
        }

        Assert.Equal((7.5, 1.0, 0.875, 0.125), (ElementFormat.E2M3.MaxNormal, (double)ElementFormat.E2M3.Value(0b001000), (double)ElementFormat.E2M3.Value(0b000111), (double)ElementFormat.E2M3.Value(1)));
        Assert.Equal((28.0, 0.25, 0.1875, 0.0625), (ElementFormat.E3M2.MaxNormal, (double)ElementFormat.E3M2.Value(0b000100), (double)ElementFormat.E3M2.Value(0b000011), (double)ElementFormat.E3M2.Value(1)));
    }

    [Fact]
    public void FP8_code_points_match_the_OCP_FP8_tables()
    {
        // E4M3 (OCP 8-bit floating point, table 1): max normal S.1111.110 = 448, min normal S.0001.000 = 2^-6, max
        // subnormal S.0000.111 = 0.875·2^-6, min subnormal 2^-9, NaN S.1111.111 only, no infinities.
        var e4m3 = ElementFormat.E4M3;
        Assert.Equal(448f, e4m3.Value(0b0_1111_110));
        Assert.Equal(-448f, e4m3.Value(0b1_1111_110));
        Assert.Equal(MathF.Pow(2, -6), e4m3.Value(0b0_0001_000));
        Assert.Equal(0.875f * MathF.Pow(2, -6), e4m3.Value(0b0_0000_111));
        Assert.Equal(MathF.Pow(2, -9), e4m3.Value(0b0_0000_001));
        Assert.Equal(256f, e4m3.Value(0b0_1111_000));
        Assert.Equal([0x7F, 0xFF], Enumerable.Range(0, 256).Where(c => float.IsNaN(e4m3.Value(c))));
        Assert.DoesNotContain(Enumerable.Range(0, 256), c => float.IsInfinity(e4m3.Value(c)));

        // E5M2: IEEE-style: max normal S.11110.11 = 57344, min normal 2^-14, max subnormal 0.75·2^-14, min subnormal
        // 2^-16, ±Inf at S.11111.00, NaN at S.11111.{01, 10, 11}.
        var e5m2 = ElementFormat.E5M2;
        Assert.Equal(57344f, e5m2.Value(0b0_11110_11));
        Assert.Equal(MathF.Pow(2, -14), e5m2.Value(0b0_00001_00));
        Assert.Equal(0.75f * MathF.Pow(2, -14), e5m2.Value(0b0_00000_11));
        Assert.Equal(MathF.Pow(2, -16), e5m2.Value(0b0_00000_01));
        Assert.Equal(float.PositiveInfinity, e5m2.Value(0b0_11111_00));
        Assert.Equal(float.NegativeInfinity, e5m2.Value(0b1_11111_00));
        Assert.Equal([0x7D, 0x7E, 0x7F, 0xFD, 0xFE, 0xFF], Enumerable.Range(0, 256).Where(c => float.IsNaN(e5m2.Value(c))));

        // Every finite code point of both: (−1)^s · 2^(e−bias) · (1 + m/2^M), or the subnormal 2^(1−bias) · m/2^M.
        foreach (var (format, exponentBits, mantissaBits, bias) in new[] { (e4m3, 4, 3, 7), (e5m2, 5, 2, 15) })
        {
            for (int code = 0; code < 256; code++)
            {
                float value = format.Value(code);
                if (!float.IsFinite(value))
                {
                    continue;
                }

                int e = (code >> mantissaBits) & ((1 << exponentBits) - 1), m = code & ((1 << mantissaBits) - 1);
                double magnitude = e == 0 ? Math.ScaleB(m, 1 - bias - mantissaBits) : Math.ScaleB((1 << mantissaBits) + m, e - bias - mantissaBits);
                Assert.Equal((code & 0x80) != 0 ? -magnitude : magnitude, value);
            }
        }
    }

    [Theory]
    [InlineData("e4m3", 0.0009765625, 0)] // 2^-10: half the smallest subnormal, a tie → even (0)
    [InlineData("e4m3", 0.0029296875, 2)] // 1.5 · 2^-9 → tie between subnormal 1 and 2 → 2
    [InlineData("e4m3", 1.0625, 0x38)] // 1 + 1/16: tie between 1 and 1.125 → 1 (even mantissa)
    [InlineData("e4m3", 1.1875, 0x3A)] // 1 + 3/16: tie between 1.125 and 1.25 → 1.25
    [InlineData("e4m3", 464, 0x7E)] // between 448 and 480 (not representable): saturates to 448, never NaN
    [InlineData("e4m3", 1e30, 0x7E)]
    [InlineData("e5m2", 61440, 0x7B)] // the tie between 57344 and 65536 would round to Inf: saturates
    [InlineData("e5m2", 1.125, 0x3C)] // tie between 1 and 1.25 → 1
    [InlineData("e2m1", 5, 0x6)] // tie between 4 and 6 → 4 (even mantissa)
    [InlineData("e2m1", 2.5, 0x4)] // tie between 2 and 3 → 2
    [InlineData("e2m1", 0.25, 0x0)] // half the subnormal 0.5 → 0
    [InlineData("e2m1", 0.75, 0x2)] // tie between 0.5 and 1 → 1
    [InlineData("e2m1", 7, 0x7)] // saturates to 6
    [InlineData("e2m3", 0.0625, 0x0)] // half the smallest subnormal → 0
    [InlineData("e2m3", 7.75, 0x1F)] // saturates to 7.5
    [InlineData("e3m2", 30, 0x1F)] // saturates to 28
    [InlineData("e3m2", 0.09375, 0x2)] // 1.5 · 0.0625: tie between subnormals 1 and 2 → 2
    public void Elements_round_to_nearest_even_and_saturate(string name, double value, int code)
    {
        var format = new[] { ElementFormat.E4M3, ElementFormat.E5M2, ElementFormat.E3M2, ElementFormat.E2M3, ElementFormat.E2M1 }.Single(f => f.Name == name);
        Assert.Equal(code, format.Encode(value));
        Assert.Equal(code | format.SignBit, format.Encode(-value));
    }

    [Fact]
    public void Negative_zero_and_negatives_that_round_to_zero_keep_the_sign_bit()
    {
        Assert.Equal(0x80, ElementFormat.E4M3.Encode(-0.0));
        Assert.Equal(0x80, ElementFormat.E4M3.Encode(-1e-9));
        Assert.Equal(0x8, ElementFormat.E2M1.Encode(-0.1));
        Assert.Equal(0, ElementFormat.E2M1.Encode(0.1));
    }

    [Theory]
    [InlineData(WireDType.MxFp8E4M3, 8)]
    [InlineData(WireDType.MxFp8E5M2, 15)]
    [InlineData(WireDType.MxFp6E3M2, 4)]
    [InlineData(WireDType.MxFp6E2M3, 2)]
    [InlineData(WireDType.MxFp4, 2)]
    public void The_shared_exponent_is_floor_log2_amax_minus_the_elements_emax_within_the_E8M0_range(WireDType id, int emax)
    {
        var codec = (MxWireCodec)WireCodecs.Get(id);
        Assert.Equal(emax, codec.Element.MaxExponent);
        Assert.Equal(127 + 3 - emax, codec.ScaleOf(8f)); // a power of two
        Assert.Equal(127 + 3 - emax, codec.ScaleOf(BitConverter.Int32BitsToSingle(BitConverter.SingleToInt32Bits(8f) + 1))); // just above
        Assert.Equal(127 + 2 - emax, codec.ScaleOf(BitConverter.Int32BitsToSingle(BitConverter.SingleToInt32Bits(8f) - 1))); // just below
        Assert.Equal(127 + 127 - emax, codec.ScaleOf(float.MaxValue)); // the top of fp32 stays inside E8M0
        Assert.Equal(0, codec.ScaleOf(0f)); // a zero block: 2^-127
        Assert.Equal(0, codec.ScaleOf(float.Epsilon)); // 2^-149 − emax clamps to −127
        Assert.Equal(0, codec.ScaleOf(MathF.Pow(2, -126))); // −126 − emax clamps too
    }

    [Theory]
    [MemberData(nameof(BlockScaled))]
    public void A_zero_block_round_trips_to_zeros_with_their_signs(WireDType id)
    {
        var codec = WireCodecs.Get(id);
        float[] values = [.. Enumerable.Range(0, 40).Select(i => i % 2 == 0 ? 0f : -0f)];
        var data = new byte[codec.PayloadBytes(1, 40)];
        codec.Encode(values, 1, 40, data);
        var decoded = new float[40];
        Array.Fill(decoded, float.NaN);
        codec.Decode(data, 1, 40, decoded);
        Assert.All(decoded, v => Assert.Equal(0f, v));
        if (id != WireDType.NvFp4)
        {
            // MX keeps the sign of zero; NVFP4 writes +0 for every element of a block whose scale is zero.
            Assert.Equal(values.Select(float.IsNegative), decoded.Select(float.IsNegative));
        }
    }

    [Theory]
    [MemberData(nameof(BlockScaled))]
    public void Inf_and_NaN_are_refused_at_encode_naming_row_and_column(WireDType id)
    {
        var codec = WireCodecs.Get(id);
        foreach (float bad in new[] { float.NaN, float.PositiveInfinity, float.NegativeInfinity })
        {
            var values = new float[3 * 40];
            Array.Fill(values, 1.5f);
            values[(2 * 40) + 37] = bad;
            var e = Assert.Throws<ArgumentException>(() => codec.Encode(values, 3, 40, new byte[codec.PayloadBytes(3, 40)]));
            Assert.Contains("row 2, column 37", e.Message, StringComparison.Ordinal);
        }
    }

    [Theory]
    [MemberData(nameof(BlockScaled))]
    public void The_last_partial_block_is_scaled_by_its_own_elements(WireDType id)
    {
        // Width 33 (MX) or 17 (NVFP4): the last block has one element, a thousand times smaller than the rest of the row.
        var codec = WireCodecs.Get(id);
        int width = codec.BlockSize + 1;
        var values = new float[width];
        var samples = new WireSamples();
        for (int i = 0; i < width - 1; i++)
        {
            values[i] = 500f + (float)samples.Random.NextDouble();
        }

        values[^1] = 0.3f;
        var data = new byte[codec.PayloadBytes(1, width)];
        codec.Encode(values, 1, width, data);
        var decoded = new float[width];
        codec.Decode(data, 1, width, decoded);

        // Its own scale keeps it within a quarter (E2M1's coarsest relative step); under the first block's scale
        // (2^(8 − emax) and more) it would round to zero.
        Assert.InRange(decoded[^1], 0.3f * 0.75f, 0.3f * 1.25f);
    }

    [Theory]
    [InlineData(WireDType.MxFp8E4M3, 1024, 1056)]
    [InlineData(WireDType.MxFp8E5M2, 1024, 1056)]
    [InlineData(WireDType.MxFp6E3M2, 1024, 800)]
    [InlineData(WireDType.MxFp6E2M3, 1024, 800)]
    [InlineData(WireDType.MxFp4, 1024, 544)]
    [InlineData(WireDType.MxFp4, 45, 2 + 23)]
    [InlineData(WireDType.MxFp6E2M3, 45, 2 + 34)]
    [InlineData(WireDType.NvFp4, 1024, 576)]
    [InlineData(WireDType.NvFp4, 45, 3 + 23)]
    public void Row_bytes_are_scales_plus_packed_elements(WireDType id, int width, int rowBytes)
    {
        var codec = WireCodecs.Get(id);
        int prefix = id == WireDType.NvFp4 ? 4 : 0;
        Assert.Equal(prefix + rowBytes, codec.PayloadBytes(1, width));
        Assert.Equal(prefix + (3L * rowBytes), codec.PayloadBytes(3, width));
        Assert.Equal(0, codec.PayloadBytes(0, width));
    }

    [Fact]
    public void FP4_elements_are_packed_even_element_in_the_low_nibble()
    {
        // One block [1, 2, 3, ... ] scaled by 2^(⌊log2 6⌋ − 2) = 1: codes 2 (1.0), 4 (2.0), 5 (3.0), 6 (4.0), 7 (6.0).
        var codec = WireCodecs.Get(WireDType.MxFp4);
        float[] values = [1f, 2f, 3f, 4f, 6f];
        var data = new byte[codec.PayloadBytes(1, 5)];
        codec.Encode(values, 1, 5, data);
        Assert.Equal(new byte[] { 127, 0x42, 0x65, 0x07 }, data);
    }

    [Fact]
    public void FP6_elements_are_packed_four_in_three_bytes_least_significant_bit_first()
    {
        // E2M3 codes of 1, 2, 4, 7.5 with scale 2^(2 − 2) = 1: 0b001000, 0b010000, 0b011000, 0b011111.
        var codec = WireCodecs.Get(WireDType.MxFp6E2M3);
        float[] values = [1f, 2f, 4f, 7.5f];
        var data = new byte[codec.PayloadBytes(1, 4)];
        codec.Encode(values, 1, 4, data);
        uint bits = 0b001000u | (0b010000u << 6) | (0b011000u << 12) | (0b011111u << 18);
        Assert.Equal(new byte[] { 127, (byte)bits, (byte)(bits >> 8), (byte)(bits >> 16) }, data);
    }

    [Theory]
    [MemberData(nameof(BlockScaled))]
    public void Hostile_scales_decode_to_non_finite_values_that_FindNonFinite_reports(WireDType id)
    {
        var codec = WireCodecs.Get(id);
        const int Rows = 2, Width = 40;
        var samples = new WireSamples();
        var data = new byte[codec.PayloadBytes(Rows, Width)];
        codec.Encode(samples.Values(Rows * Width), Rows, Width, data);
        Assert.Equal(-1, codec.FindNonFinite(data, Rows, Width));

        int prefix = id == WireDType.NvFp4 ? 4 : 0;
        long rowBytes = (codec.PayloadBytes(Rows, Width) - prefix) / Rows;
        var nan = (byte[])data.Clone();
        nan[prefix + rowBytes + 1] = id == WireDType.NvFp4 ? (byte)0x7F : MxWireCodec.NaNScale; // row 1, block 1
        Assert.Equal(Width + codec.BlockSize, codec.FindNonFinite(nan, Rows, Width));
        var decoded = new float[Rows * Width];
        codec.Decode(nan, Rows, Width, decoded);
        Assert.True(float.IsNaN(decoded[Width + codec.BlockSize]));

        if (id == WireDType.NvFp4)
        {
            var infinite = (byte[])data.Clone();
            BinaryPrimitives.WriteSingleLittleEndian(infinite, float.PositiveInfinity);
            Assert.Equal(0, codec.FindNonFinite(infinite, Rows, Width));
        }
        else
        {
            // Scale 2^127 times an element of magnitude 2 or more overflows float32 (a sender that follows the rule never
            // writes it: amax < 2^128 keeps the shared exponent at or below 127 − emax).
            var decodedValid = new float[Rows * Width];
            codec.Decode(data, Rows, Width, decodedValid);
            int first = Enumerable.Range(0, codec.BlockSize).First(i => Math.Abs(Math.ScaleB(decodedValid[i], 127 - data[0])) >= 2);
            var huge = (byte[])data.Clone();
            huge[0] = 0xFE;
            Assert.Equal(first, codec.FindNonFinite(huge, Rows, Width));
        }
    }
}
