using MoECluster.Model.Checkpoints;

namespace MoECluster.Model.Tests.Checkpoints;

public sealed class DTypesTests
{
    [Theory]
    [InlineData(DType.F64, 8, "F64", true)]
    [InlineData(DType.F32, 4, "F32", true)]
    [InlineData(DType.F16, 2, "F16", true)]
    [InlineData(DType.BF16, 2, "BF16", true)]
    [InlineData(DType.I64, 8, "I64", false)]
    [InlineData(DType.I32, 4, "I32", false)]
    [InlineData(DType.I16, 2, "I16", false)]
    [InlineData(DType.I8, 1, "I8", false)]
    [InlineData(DType.U8, 1, "U8", false)]
    [InlineData(DType.Bool, 1, "BOOL", false)]
    [InlineData(DType.F8E4M3, 1, "F8_E4M3", false)]
    [InlineData(DType.F8E5M2, 1, "F8_E5M2", false)]
    public void Dtype_has_the_safetensors_size_name_and_float_flag(DType dtype, int size, string name, bool isFloat)
    {
        Assert.Equal(size, DTypes.SizeOf(dtype));
        Assert.Equal(name, DTypes.ToSafetensorsName(dtype));
        Assert.True(DTypes.TryParse(name, out DType parsed));
        Assert.Equal(dtype, parsed);
        Assert.Equal(isFloat, DTypes.IsFloatingPoint(dtype));
    }

    [Fact]
    public void Every_enum_value_round_trips_through_its_name()
    {
        foreach (DType dtype in Enum.GetValues<DType>())
        {
            Assert.True(DTypes.TryParse(DTypes.ToSafetensorsName(dtype), out DType parsed));
            Assert.Equal(dtype, parsed);
        }
    }

    [Theory]
    [InlineData("f32")]
    [InlineData("Bool")]
    [InlineData("F8E4M3")]
    [InlineData("F128")]
    [InlineData("")]
    public void TryParse_rejects_names_safetensors_does_not_define(string name)
    {
        Assert.False(DTypes.TryParse(name, out _));
    }

    [Fact]
    public void Element_count_of_a_scalar_is_one_and_byte_length_follows_the_dtype()
    {
        var spec = new TensorSpec("s", DType.BF16, [3, 5]);
        Assert.Equal(15, spec.ElementCount);
        Assert.Equal(30, spec.ByteLength);
        Assert.Equal(1, new TensorInfo("x", DType.F32, [], 0, 4).ElementCount);
        Assert.Equal(4, new TensorInfo("x", DType.F32, [], 8, 12).ByteLength);
    }
}
