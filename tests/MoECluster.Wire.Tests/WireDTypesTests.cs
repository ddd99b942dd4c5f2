namespace MoECluster.Wire.Tests;

public sealed class WireDTypesTests
{
    [Theory]
    [InlineData(WireDType.F32, 4, "fp32")]
    [InlineData(WireDType.BF16, 2, "bf16")]
    [InlineData(WireDType.F16, 2, "fp16")]
    public void Size_and_name_of_each_dtype(WireDType dtype, int size, string name)
    {
        Assert.Equal(size * 15L, WireCodecs.Get(dtype).PayloadBytes(3, 5));
        Assert.Equal(name, WireDTypes.Name(dtype));
    }

    [Theory]
    [InlineData("fp32", WireDType.F32)]
    [InlineData("F32", WireDType.F32)]
    [InlineData("BF16", WireDType.BF16)]
    [InlineData("bf16", WireDType.BF16)]
    [InlineData("Fp16", WireDType.F16)]
    [InlineData("f16", WireDType.F16)]
    public void TryParse_accepts_the_names_case_insensitively(string text, WireDType expected)
    {
        Assert.True(WireDTypes.TryParse(text, out WireDType parsed));
        Assert.Equal(expected, parsed);
    }

    [Theory]
    [InlineData("")]
    [InlineData("fp64")]
    [InlineData("bfloat16x")]
    [InlineData("int8")]
    [InlineData(null)]
    public void TryParse_refuses_other_names(string? text)
    {
        Assert.False(WireDTypes.TryParse(text, out _));
    }

    [Fact]
    public void Undefined_dtype_has_no_size_or_name()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => WireCodecs.Get((WireDType)9));
        Assert.Throws<ArgumentOutOfRangeException>(() => WireDTypes.Name((WireDType)255));
    }

    [Theory]
    [InlineData(1, 1, WireDType.F32, 4)]
    [InlineData(7, 2048, WireDType.BF16, 7 * 2048 * 2)]
    [InlineData(1 << 20, 1 << 16, WireDType.F32, 1L << 38)]
    public void ActivationBytes_is_rows_times_width_times_element_size(int rows, int width, WireDType dtype, long expected)
    {
        Assert.Equal(expected, WireSize.ActivationBytes(rows, width, dtype));
    }

    [Fact]
    public void ActivationBytes_matches_an_encoded_blocks_payload()
    {
        var samples = new WireSamples();
        foreach (WireDType dtype in new[] { WireDType.F32, WireDType.BF16, WireDType.F16 })
        {
            ActivationBlock block = ActivationBlock.Encode(samples.Values(5 * 33), 5, 33, dtype);
            Assert.Equal(WireSize.ActivationBytes(5, 33, dtype), block.PayloadBytes);
        }
    }
}
