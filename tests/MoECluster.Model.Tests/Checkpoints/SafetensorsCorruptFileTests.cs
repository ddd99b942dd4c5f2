using MoECluster.Testing;
using System.Text;
using MoECluster.Model.Checkpoints;

namespace MoECluster.Model.Tests.Checkpoints;

/// <summary>Every malformed file must fail with <see cref="SafetensorsFormatException"/> naming the file and the problem.</summary>
public sealed class SafetensorsCorruptFileTests : IDisposable
{
    private const string ValidEntry = "\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]";

    private readonly TempDirectory _temp = new();

    public void Dispose() => _temp.Dispose();

    [Fact]
    public void Empty_file_is_rejected_as_shorter_than_the_length_prefix()
    {
        string path = _temp.File("empty.safetensors");
        File.WriteAllBytes(path, []);

        RawSafetensors.AssertRejected(path, "0 bytes long, shorter than the 8-byte header length prefix");
    }

    [Fact]
    public void File_of_five_bytes_is_rejected_as_shorter_than_the_length_prefix()
    {
        string path = _temp.File("short.safetensors");
        File.WriteAllBytes(path, [1, 0, 0, 0, 0]);

        RawSafetensors.AssertRejected(path, "5 bytes long, shorter than the 8-byte header length prefix");
    }

    [Fact]
    public void Header_length_beyond_the_file_is_rejected()
    {
        string path = RawSafetensors.WriteBytes(_temp.File("beyond.safetensors"), Encoding.UTF8.GetBytes("{}"), declaredHeaderLength: 1000);

        RawSafetensors.AssertRejected(path, "header length 1000 runs past the end of the file (10 bytes)");
    }

    [Fact]
    public void Header_length_over_the_100_MiB_limit_is_rejected()
    {
        string path = RawSafetensors.WriteBytes(_temp.File("huge.safetensors"), Encoding.UTF8.GetBytes("{}"), declaredHeaderLength: 100UL * 1024 * 1024 + 1);

        RawSafetensors.AssertRejected(path, "exceeds the 100 MiB limit");
    }

    [Fact]
    public void Header_length_of_2_pow_62_on_a_100_byte_file_fails_fast_without_allocating()
    {
        string path = RawSafetensors.WriteBytes(_temp.File("absurd.safetensors"), new byte[92], declaredHeaderLength: 1UL << 62);
        Assert.Equal(100, new FileInfo(path).Length);
        string warmUp = RawSafetensors.WriteBytes(_temp.File("warmup.safetensors"), new byte[92], declaredHeaderLength: 1UL << 61);
        Assert.Throws<SafetensorsFormatException>(() => SafetensorsFile.Open(warmUp));

        long before = GC.GetAllocatedBytesForCurrentThread();
        var ex = Assert.Throws<SafetensorsFormatException>(() => SafetensorsFile.Open(path));
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;

        Assert.Contains("4611686018427387904", ex.Message, StringComparison.Ordinal);
        Assert.Contains("100 MiB limit", ex.Message, StringComparison.Ordinal);
        Assert.True(allocated < 256 * 1024, $"Opening allocated {allocated} bytes.");
    }

    [Fact]
    public void Header_that_is_not_UTF8_is_rejected()
    {
        byte[] header = [.. "{\"a"u8, 0xFF, 0xFE, .. "\":{}}"u8];
        string path = RawSafetensors.WriteBytes(_temp.File("utf8.safetensors"), header);

        RawSafetensors.AssertRejected(path, "not valid UTF-8");
    }

    [Fact]
    public void Header_that_is_not_JSON_is_rejected()
    {
        string path = RawSafetensors.Write(_temp.File("notjson.safetensors"), "this is not json");

        RawSafetensors.AssertRejected(path, "not valid JSON");
    }

    [Fact]
    public void Truncated_JSON_header_is_rejected()
    {
        string path = RawSafetensors.Write(_temp.File("truncated.safetensors"), "{\"a\":{\"dtype\":\"F32\"");

        RawSafetensors.AssertRejected(path, "not valid JSON");
    }

    [Fact]
    public void Zero_length_header_is_rejected()
    {
        string path = RawSafetensors.Write(_temp.File("zero.safetensors"), "");

        RawSafetensors.AssertRejected(path, "JSON");
    }

    [Fact]
    public void Content_after_the_header_object_is_rejected()
    {
        string path = RawSafetensors.Write(_temp.File("trailing.safetensors"), "{} {}");

        RawSafetensors.AssertRejected(path, "JSON");
    }

    [Theory]
    [InlineData("[]", "an array")]
    [InlineData("42", "a number")]
    [InlineData("\"text\"", "a string")]
    [InlineData("null", "null")]
    public void Header_that_is_not_a_JSON_object_is_rejected(string header, string found)
    {
        string path = RawSafetensors.Write(_temp.File("notobject.safetensors"), header);

        RawSafetensors.AssertRejected(path, $"must be an object, but it starts with {found}");
    }

    [Fact]
    public void Escaped_lone_surrogate_in_a_name_is_rejected()
    {
        string path = RawSafetensors.Write(_temp.File("surrogate.safetensors"), "{\"\\ud800\":{" + ValidEntry + "}}", new byte[8]);

        RawSafetensors.AssertRejected(path, "not valid JSON");
    }

    [Fact]
    public void Deeply_nested_entry_is_rejected()
    {
        string nested = new string('[', 100_000) + new string(']', 100_000);
        string path = RawSafetensors.Write(_temp.File("deep.safetensors"), "{\"a\":" + nested + "}");

        RawSafetensors.AssertRejected(path, "tensor 'a': entry must be an object");
    }

    [Fact]
    public void Entry_that_is_not_an_object_is_rejected()
    {
        string path = RawSafetensors.Write(_temp.File("entry.safetensors"), "{\"a\":5}");

        RawSafetensors.AssertRejected(path, "tensor 'a': entry must be an object with dtype, shape and data_offsets, but it is a number");
    }

    [Fact]
    public void Entry_missing_dtype_is_rejected()
    {
        string path = RawSafetensors.Write(_temp.File("nodtype.safetensors"), "{\"a\":{\"shape\":[2],\"data_offsets\":[0,8]}}", new byte[8]);

        RawSafetensors.AssertRejected(path, "tensor 'a': missing required key 'dtype'");
    }

    [Fact]
    public void Entry_missing_shape_is_rejected()
    {
        string path = RawSafetensors.Write(_temp.File("noshape.safetensors"), "{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", new byte[8]);

        RawSafetensors.AssertRejected(path, "tensor 'a': missing required key 'shape'");
    }

    [Fact]
    public void Entry_missing_data_offsets_is_rejected()
    {
        string path = RawSafetensors.Write(_temp.File("nooffsets.safetensors"), "{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", new byte[8]);

        RawSafetensors.AssertRejected(path, "tensor 'a': missing required key 'data_offsets'");
    }

    [Fact]
    public void Dtype_that_is_not_a_string_is_rejected()
    {
        string path = RawSafetensors.Write(_temp.File("dtypetype.safetensors"), "{\"a\":{\"dtype\":4,\"shape\":[2],\"data_offsets\":[0,8]}}", new byte[8]);

        RawSafetensors.AssertRejected(path, "tensor 'a': dtype must be a string, but it is a number");
    }

    [Fact]
    public void Shape_that_is_not_an_array_is_rejected()
    {
        string path = RawSafetensors.Write(_temp.File("shapetype.safetensors"), "{\"a\":{\"dtype\":\"F32\",\"shape\":\"2\",\"data_offsets\":[0,8]}}", new byte[8]);

        RawSafetensors.AssertRejected(path, "tensor 'a': shape must be an array of integers, but it is a string");
    }

    [Fact]
    public void Shape_element_that_is_not_a_number_is_rejected()
    {
        string path = RawSafetensors.Write(_temp.File("shapeelem.safetensors"), "{\"a\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}}", new byte[8]);

        RawSafetensors.AssertRejected(path, "tensor 'a': shape must contain only integers, but element 0 is a string");
    }

    [Fact]
    public void Fractional_shape_dimension_is_rejected()
    {
        string path = RawSafetensors.Write(_temp.File("fraction.safetensors"), "{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,6]}}", new byte[8]);

        RawSafetensors.AssertRejected(path, "tensor 'a': shape dimension 0 is not an integer in range: 1.5");
    }

    [Fact]
    public void Shape_dimension_beyond_64_bits_is_rejected()
    {
        string path = RawSafetensors.Write(_temp.File("bigdim.safetensors"), "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,99999999999999999999],\"data_offsets\":[0,8]}}", new byte[8]);

        RawSafetensors.AssertRejected(path, "tensor 'a': shape dimension 1 is not an integer in range: 99999999999999999999");
    }

    [Fact]
    public void Data_offsets_that_are_not_an_array_are_rejected()
    {
        string path = RawSafetensors.Write(_temp.File("offsetstype.safetensors"), "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":{\"begin\":0}}}", new byte[8]);

        RawSafetensors.AssertRejected(path, "tensor 'a': data_offsets must be an array of integers, but it is an object");
    }

    [Fact]
    public void Unknown_dtype_is_rejected()
    {
        string path = RawSafetensors.Write(_temp.File("f128.safetensors"), "{\"a\":{\"dtype\":\"F128\",\"shape\":[2],\"data_offsets\":[0,8]}}", new byte[8]);

        RawSafetensors.AssertRejected(path, "tensor 'a': unknown dtype 'F128'");
    }

    [Fact]
    public void Lowercase_dtype_name_is_rejected_as_unknown()
    {
        string path = RawSafetensors.Write(_temp.File("lower.safetensors"), "{\"a\":{\"dtype\":\"f32\",\"shape\":[2],\"data_offsets\":[0,8]}}", new byte[8]);

        RawSafetensors.AssertRejected(path, "tensor 'a': unknown dtype 'f32'");
    }

    [Fact]
    public void Negative_shape_dimension_is_rejected()
    {
        string path = RawSafetensors.Write(_temp.File("negdim.safetensors"), "{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", new byte[8]);

        RawSafetensors.AssertRejected(path, "tensor 'a': shape dimension 0 is negative (-2)");
    }

    [Fact]
    public void Shape_whose_element_count_overflows_is_rejected()
    {
        string path = RawSafetensors.Write(_temp.File("overflow.safetensors"), "{\"a\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,0]}}");

        RawSafetensors.AssertRejected(path, "tensor 'a': shape [4294967296, 4294967296] overflows: its element count");
    }

    [Fact]
    public void Shape_whose_byte_size_overflows_is_rejected()
    {
        string path = RawSafetensors.Write(_temp.File("byteoverflow.safetensors"), "{\"a\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904],\"data_offsets\":[0,0]}}");

        RawSafetensors.AssertRejected(path, "tensor 'a': shape [4611686018427387904] of F32 overflows: its byte size");
    }

    [Fact]
    public void Data_offsets_with_one_element_are_rejected()
    {
        string path = RawSafetensors.Write(_temp.File("oneoffset.safetensors"), "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8]}}", new byte[8]);

        RawSafetensors.AssertRejected(path, "tensor 'a': data_offsets must be [begin, end] (2 integers), but it has 1");
    }

    [Fact]
    public void Data_offsets_with_three_elements_are_rejected()
    {
        string path = RawSafetensors.Write(_temp.File("threeoffsets.safetensors"), "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8,8]}}", new byte[8]);

        RawSafetensors.AssertRejected(path, "tensor 'a': data_offsets must be [begin, end] (2 integers), but it has 3");
    }

    [Fact]
    public void Negative_data_offset_is_rejected()
    {
        string path = RawSafetensors.Write(_temp.File("negoffset.safetensors"), "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-8,0]}}", new byte[8]);

        RawSafetensors.AssertRejected(path, "tensor 'a': data_offsets offset 0 is negative (-8)");
    }

    [Fact]
    public void Data_offsets_with_begin_after_end_are_rejected()
    {
        string path = RawSafetensors.Write(_temp.File("reversed.safetensors"), "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", new byte[8]);

        RawSafetensors.AssertRejected(path, "tensor 'a': data_offsets begin 8 is after end 0");
    }

    [Fact]
    public void Data_offsets_past_the_data_buffer_are_rejected()
    {
        string path = RawSafetensors.Write(_temp.File("pastend.safetensors"), "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", new byte[8]);

        RawSafetensors.AssertRejected(path, "tensor 'a': data_offsets end 12 is beyond the end of the data buffer (8 bytes)");
    }

    [Fact]
    public void Byte_range_that_does_not_match_shape_and_dtype_is_rejected()
    {
        string path = RawSafetensors.Write(_temp.File("mismatch.safetensors"), "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", new byte[8]);

        RawSafetensors.AssertRejected(path, "tensor 'a': data_offsets [0, 4] span 4 bytes, but shape [2] of F32 needs 8 bytes (size mismatch)");
    }

    [Fact]
    public void Overlapping_tensors_are_rejected()
    {
        string header = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}";
        string path = RawSafetensors.Write(_temp.File("overlap.safetensors"), header, new byte[12]);

        RawSafetensors.AssertRejected(path, "tensors 'a' [0, 8) and 'b' [4, 12) overlap");
    }

    [Fact]
    public void Overlap_is_detected_regardless_of_header_order()
    {
        string header = "{\"late\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[6,10]},\"early\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]}}";
        string path = RawSafetensors.Write(_temp.File("overlap2.safetensors"), header, new byte[12]);

        RawSafetensors.AssertRejected(path, "tensors 'early' [0, 8) and 'late' [6, 10) overlap");
    }

    [Fact]
    public void Duplicate_tensor_names_are_rejected()
    {
        string header = "{\"a\":{" + ValidEntry + "},\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}";
        string path = RawSafetensors.Write(_temp.File("dup.safetensors"), header, new byte[16]);

        RawSafetensors.AssertRejected(path, "duplicate tensor name 'a'");
    }

    [Fact]
    public void Duplicate_key_inside_an_entry_is_rejected()
    {
        string header = "{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
        string path = RawSafetensors.Write(_temp.File("dupkey.safetensors"), header, new byte[8]);

        RawSafetensors.AssertRejected(path, "tensor 'a': duplicate key 'dtype'");
    }

    [Fact]
    public void Unexpected_key_inside_an_entry_is_rejected()
    {
        string header = "{\"a\":{" + ValidEntry + ",\"stride\":[1]}}";
        string path = RawSafetensors.Write(_temp.File("extrakey.safetensors"), header, new byte[8]);

        RawSafetensors.AssertRejected(path, "tensor 'a': unexpected key 'stride'");
    }

    [Fact]
    public void Metadata_that_is_not_an_object_is_rejected()
    {
        string path = RawSafetensors.Write(_temp.File("metastring.safetensors"), "{\"__metadata__\":\"pt\"}");

        RawSafetensors.AssertRejected(path, "\"__metadata__\" must be an object mapping strings to strings, but it is a string");
    }

    [Fact]
    public void Metadata_with_a_number_value_is_rejected()
    {
        string path = RawSafetensors.Write(_temp.File("metanumber.safetensors"), "{\"__metadata__\":{\"format\":\"pt\",\"epoch\":3}}");

        RawSafetensors.AssertRejected(path, "\"__metadata__\" value for key 'epoch' must be a string, but it is a number");
    }

    [Fact]
    public void Metadata_with_a_nested_object_value_is_rejected()
    {
        string path = RawSafetensors.Write(_temp.File("metanested.safetensors"), "{\"__metadata__\":{\"config\":{\"a\":\"b\"}}}");

        RawSafetensors.AssertRejected(path, "\"__metadata__\" value for key 'config' must be a string, but it is an object");
    }

    [Fact]
    public void Duplicate_metadata_entry_is_rejected()
    {
        string path = RawSafetensors.Write(_temp.File("metadup.safetensors"), "{\"__metadata__\":{},\"__metadata__\":{}}");

        RawSafetensors.AssertRejected(path, "duplicate \"__metadata__\" entry");
    }

    [Fact]
    public void Duplicate_metadata_key_is_rejected()
    {
        string path = RawSafetensors.Write(_temp.File("metakeydup.safetensors"), "{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}");

        RawSafetensors.AssertRejected(path, "duplicate key 'k' in \"__metadata__\"");
    }
}
