using System.Buffers.Binary;
using MoECluster.Model.Numerics;

namespace MoECluster.Wire.Tests;

public sealed class ActivationBlockTests
{
    [Fact]
    public void Fp32_block_round_trips_bit_exactly()
    {
        var samples = new WireSamples();
        float[] values = samples.Values(13 * 57);
        float[] decoded = ActivationBlock.Encode(values, 13, 57, WireDType.F32).Decode();
        for (int i = 0; i < values.Length; i++)
        {
            Assert.True(
                BitConverter.SingleToUInt32Bits(values[i]) == BitConverter.SingleToUInt32Bits(decoded[i]),
                $"seed {samples.Seed}: element {i} was {values[i]}, decoded {decoded[i]}");
        }
    }

    [Fact]
    public void Bf16_block_decodes_to_the_scalar_round_to_nearest_even_within_2_pow_minus_8()
    {
        var samples = new WireSamples();
        float[] values = samples.Values(9 * 131);
        float[] decoded = ActivationBlock.Encode(values, 9, 131, WireDType.BF16).Decode();
        for (int i = 0; i < values.Length; i++)
        {
            float expected = ElementConversions.BFloat16ToSingle(ElementConversions.SingleToBFloat16(values[i]));
            Assert.True(expected.Equals(decoded[i]), $"seed {samples.Seed}: element {i} of {values[i]} decoded {decoded[i]}, expected {expected}");
            Assert.True(
                MathF.Abs(decoded[i] - values[i]) <= MathF.Abs(values[i]) * MathF.Pow(2, -8),
                $"seed {samples.Seed}: element {i}: {values[i]} -> {decoded[i]} exceeds relative error 2^-8");
        }
    }

    [Fact]
    public void Fp16_block_decodes_to_the_ieee_half_rounding()
    {
        var samples = new WireSamples();
        float[] values = samples.Values(11 * 64, scale: 1f);
        float[] decoded = ActivationBlock.Encode(values, 11, 64, WireDType.F16).Decode();
        for (int i = 0; i < values.Length; i++)
        {
            float expected = (float)(Half)values[i];
            Assert.True(expected.Equals(decoded[i]), $"seed {samples.Seed}: element {i} of {values[i]} decoded {decoded[i]}, expected {expected}");
        }
    }

    [Fact]
    public void Bf16_encoding_breaks_ties_to_even()
    {
        float halfway = 1f + MathF.Pow(2, -8);           // between 1 and 1 + 2^-7: 1 has the even mantissa
        float halfwayUp = 1f + (3 * MathF.Pow(2, -8));   // between 1 + 2^-7 and 1 + 2^-6: the latter is even
        float[] decoded = ActivationBlock.Encode([halfway, halfwayUp], 1, 2, WireDType.BF16).Decode();
        Assert.Equal(1f, decoded[0]);
        Assert.Equal(1f + MathF.Pow(2, -6), decoded[1]);
    }

    [Theory]
    [InlineData(WireDType.F32)]
    [InlineData(WireDType.BF16)]
    [InlineData(WireDType.F16)]
    public void Encoded_data_is_raw_little_endian_elements(WireDType dtype)
    {
        float[] values = [1.5f, -2.25f, 3e-3f, 1234.5f];
        byte[] data = ActivationBlock.Encode(values, 2, 2, dtype).Data;
        Assert.Equal(values.Length * (dtype == WireDType.F32 ? 4 : 2), data.Length);
        for (int i = 0; i < values.Length; i++)
        {
            switch (dtype)
            {
                case WireDType.F32:
                    Assert.Equal(values[i], BinaryPrimitives.ReadSingleLittleEndian(data.AsSpan(i * 4)));
                    break;
                case WireDType.BF16:
                    Assert.Equal(ElementConversions.SingleToBFloat16(values[i]), BinaryPrimitives.ReadUInt16LittleEndian(data.AsSpan(i * 2)));
                    break;
                default:
                    Assert.Equal((Half)values[i], BinaryPrimitives.ReadHalfLittleEndian(data.AsSpan(i * 2)));
                    break;
            }
        }
    }

    [Theory]
    [InlineData(WireDType.F32)]
    [InlineData(WireDType.BF16)]
    [InlineData(WireDType.F16)]
    public void FindNonFinite_returns_the_first_nan_or_infinity(WireDType dtype)
    {
        float[] values = Enumerable.Range(0, 24).Select(i => i * 0.5f).ToArray();
        Assert.Equal(-1, ActivationBlock.Encode(values, 4, 6, dtype).FindNonFinite());

        values[17] = float.PositiveInfinity;
        Assert.Equal(17, ActivationBlock.Encode(values, 4, 6, dtype).FindNonFinite());

        values[5] = float.NaN;
        Assert.Equal(5, ActivationBlock.Encode(values, 4, 6, dtype).FindNonFinite());
    }

    [Fact]
    public void FindNonFinite_sees_values_that_overflow_the_wire_dtype()
    {
        float[] values = [1f, 2f, 70000f, 3f];   // finite in fp32 and bf16, infinity in fp16
        Assert.Equal(-1, ActivationBlock.Encode(values, 1, 4, WireDType.F32).FindNonFinite());
        Assert.Equal(-1, ActivationBlock.Encode(values, 1, 4, WireDType.BF16).FindNonFinite());
        Assert.Equal(2, ActivationBlock.Encode(values, 1, 4, WireDType.F16).FindNonFinite());
    }

    [Fact]
    public void DecodeInto_refuses_a_destination_of_the_wrong_length()
    {
        ActivationBlock block = ActivationBlock.Encode(new float[12], 3, 4, WireDType.BF16);
        Assert.Throws<ArgumentException>(() => block.DecodeInto(new float[11]));
        Assert.Throws<ArgumentException>(() => block.DecodeInto(new float[13]));
    }

    [Fact]
    public void DecodeInto_refuses_a_block_whose_data_does_not_match_its_shape()
    {
        var block = new ActivationBlock { DType = WireDType.F32, Rows = 3, Width = 4, Data = new byte[47] };
        WireFormatException ex = Assert.Throws<WireFormatException>(() => block.DecodeInto(new float[12]));
        Assert.Contains("expected 48 bytes", ex.Message, StringComparison.Ordinal);
        Assert.Contains("got 47", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Encode_refuses_a_value_count_other_than_rows_times_width()
    {
        Assert.Throws<ArgumentException>(() => ActivationBlock.Encode(new float[11], 3, 4, WireDType.F32));
        Assert.Throws<ArgumentOutOfRangeException>(() => ActivationBlock.Encode([], 0, 4, WireDType.F32));
        Assert.Throws<ArgumentOutOfRangeException>(() => ActivationBlock.Encode(new float[4], 1, 4, (WireDType)9));
    }
}
