using MoECluster.Testing;
using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using MoECluster.Model.Checkpoints;

namespace MoECluster.Model.Tests.Checkpoints;

public sealed class SafetensorsRoundTripTests : IDisposable
{
    /// <summary>Values exactly representable in F64, F32, F16 and BF16.</summary>
    private static readonly float[] ExactValues = [0f, -0f, 1f, -2.5f, 0.15625f, 3.75f, 1024f, -0.0078125f, float.PositiveInfinity];

    private readonly TempDirectory _temp = new();

    public void Dispose() => _temp.Dispose();

    [Theory]
    [InlineData(DType.F32)]
    [InlineData(DType.BF16)]
    [InlineData(DType.F16)]
    [InlineData(DType.F64)]
    public void Float_tensor_round_trips_through_write_and_open(DType dtype)
    {
        string path = _temp.File("model.safetensors");
        var spec = new TensorSpec("w", dtype, [3, 3]);
        byte[] data = FloatEncoding.Encode(dtype, ExactValues);

        SafetensorsWriter.Write(path, [(spec, (ReadOnlyMemory<byte>)data)]);

        using SafetensorsFile file = SafetensorsFile.Open(path);
        TensorInfo info = Assert.Single(file.Tensors);
        Assert.Equal("w", info.Name);
        Assert.Equal(dtype, info.DType);
        Assert.Equal([3L, 3L], info.Shape);
        Assert.Equal(9, info.ElementCount);
        Assert.Equal(data.Length, info.ByteLength);
        Assert.Equal(data, file.GetBytes(info).ToArray());

        var tensor = new TensorRef(file, info);
        Assert.Equal(ExactValues, tensor.ReadAllAsFloat32());
        float[] destination = new float[9];
        tensor.ReadAsFloat32(destination);
        Assert.Equal(ExactValues, destination);
        Assert.True(float.IsNegative(destination[1]), "-0 must keep its sign");
    }

    [Fact]
    public void Metadata_round_trips()
    {
        string path = _temp.File("meta.safetensors");
        var metadata = new Dictionary<string, string> { ["format"] = "pt", ["note"] = "ünïcode \"quoted\" \n line" };

        SafetensorsWriter.Write(path, [(new TensorSpec("x", DType.F32, [1]), (ReadOnlyMemory<byte>)new byte[4])], metadata);

        using SafetensorsFile file = SafetensorsFile.Open(path);
        Assert.Equal(metadata.OrderBy(p => p.Key), file.Metadata.OrderBy(p => p.Key));
    }

    [Fact]
    public void File_without_metadata_has_empty_metadata()
    {
        string path = _temp.File("nometa.safetensors");
        SafetensorsWriter.Write(path, [(new TensorSpec("x", DType.F32, [1]), (ReadOnlyMemory<byte>)new byte[4])]);

        using SafetensorsFile file = SafetensorsFile.Open(path);
        Assert.Empty(file.Metadata);
    }

    [Fact]
    public void Writer_keeps_the_given_tensor_order_and_aligns_data_to_8_bytes()
    {
        string path = _temp.File("order.safetensors");
        TensorSpec[] specs = [new("z", DType.U8, [3]), new("a", DType.F32, [1]), new("m", DType.I16, [2])];

        SafetensorsWriter.Write(path, specs, (spec, stream) => stream.Write(new byte[spec.ByteLength]));

        byte[] raw = File.ReadAllBytes(path);
        ulong headerLength = BinaryPrimitives.ReadUInt64LittleEndian(raw);
        Assert.Equal(0UL, (8 + headerLength) % 8);
        Assert.Equal((ulong)raw.Length, 8 + headerLength + 3 + 4 + 4);
        using SafetensorsFile file = SafetensorsFile.Open(path);
        Assert.Equal(["z", "a", "m"], file.Tensors.Select(t => t.Name));
        Assert.Equal([0L, 3L, 7L], file.Tensors.Select(t => t.Begin));
    }

    [Fact]
    public void Streaming_callback_receives_specs_in_order_and_its_bytes_land_in_each_tensor()
    {
        string path = _temp.File("stream.safetensors");
        TensorSpec[] specs = [new("first", DType.U8, [2]), new("second", DType.I32, [2]), new("third", DType.U8, [1])];
        var calls = new List<string>();

        SafetensorsWriter.Write(path, specs, (spec, stream) =>
        {
            calls.Add(spec.Name);
            for (int i = 0; i < spec.ByteLength; i++)
            {
                stream.WriteByte((byte)(calls.Count * 16 + i));
            }
        });

        Assert.Equal(["first", "second", "third"], calls);
        using SafetensorsFile file = SafetensorsFile.Open(path);
        Assert.Equal([16, 17], file.GetBytes(file.GetTensor("first")).ToArray());
        Assert.Equal([32, 33, 34, 35, 36, 37, 38, 39], file.GetBytes(file.GetTensor("second")).ToArray());
        Assert.Equal([48], file.GetBytes(file.GetTensor("third")).ToArray());
    }

    [Theory]
    [InlineData(DType.I64)]
    [InlineData(DType.I32)]
    [InlineData(DType.I16)]
    [InlineData(DType.I8)]
    [InlineData(DType.U8)]
    [InlineData(DType.Bool)]
    [InlineData(DType.F8E4M3)]
    [InlineData(DType.F8E5M2)]
    public void Non_float_tensor_round_trips_bytes_and_refuses_float_reads(DType dtype)
    {
        string path = _temp.File("ints.safetensors");
        var spec = new TensorSpec("t", dtype, [2, 3]);
        byte[] data = Enumerable.Range(0, (int)spec.ByteLength).Select(i => (byte)(i * 7 + 1)).ToArray();
        SafetensorsWriter.Write(path, [(spec, (ReadOnlyMemory<byte>)data)]);

        using SafetensorsFile file = SafetensorsFile.Open(path);
        var tensor = new TensorRef(file, file.GetTensor("t"));
        Assert.Equal(dtype, tensor.DType);
        Assert.Equal(data, tensor.GetBytes().ToArray());
        var ex = Assert.Throws<NotSupportedException>(() => tensor.ReadAllAsFloat32());
        Assert.Contains($"dtype {DTypes.ToSafetensorsName(dtype)}", ex.Message, StringComparison.Ordinal);
        Assert.Contains("'t'", ex.Message, StringComparison.Ordinal);
        Assert.Throws<NotSupportedException>(() => tensor.ReadAsFloat32(new float[6]));
    }

    [Fact]
    public unsafe void Pointer_addresses_the_same_bytes_as_the_span()
    {
        string path = _temp.File("ptr.safetensors");
        SafetensorsWriter.Write(path, [
            (new TensorSpec("a", DType.U8, [3]), (ReadOnlyMemory<byte>)new byte[] { 1, 2, 3 }),
            (new TensorSpec("b", DType.U8, [2]), (ReadOnlyMemory<byte>)new byte[] { 9, 8 })]);

        using SafetensorsFile file = SafetensorsFile.Open(path);
        TensorInfo b = file.GetTensor("b");
        byte* pointer = file.GetPointer(b);
        Assert.Equal(9, pointer[0]);
        Assert.Equal(8, pointer[1]);
        Assert.True(new TensorRef(file, b).Pointer == pointer);
    }

    [Fact]
    public void File_with_only_a_header_and_no_tensors_opens()
    {
        string path = _temp.File("empty.safetensors");
        SafetensorsWriter.Write(path, Array.Empty<TensorSpec>(), (_, _) => Assert.Fail("no tensors, no callback"));

        using SafetensorsFile file = SafetensorsFile.Open(path);
        Assert.Empty(file.Tensors);
        Assert.Equal(0, file.DataLength);
    }

    [Fact]
    public void File_with_only_zero_size_tensors_opens_and_reads_empty()
    {
        string path = _temp.File("zerosize.safetensors");
        SafetensorsWriter.Write(path, [new TensorSpec("none", DType.F32, [0, 4]), new TensorSpec("also", DType.BF16, [3, 0])], (_, _) => { });

        using SafetensorsFile file = SafetensorsFile.Open(path);
        Assert.Equal(0, file.DataLength);
        TensorInfo none = file.GetTensor("none");
        Assert.Equal(0, none.ElementCount);
        Assert.Empty(new TensorRef(file, none).ReadAllAsFloat32());
        Assert.Equal(0, file.GetBytes(none).Length);
    }

    [Fact]
    public void Hand_written_header_only_file_with_empty_object_opens()
    {
        string path = RawSafetensors.Write(_temp.File("raw.safetensors"), "{}");

        using SafetensorsFile file = SafetensorsFile.Open(path);
        Assert.Empty(file.Tensors);
        Assert.Empty(file.Metadata);
    }

    [Fact]
    public void Zero_size_tensor_inside_another_tensors_range_is_not_an_overlap()
    {
        string header = "{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]},\"e\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]}}";
        string path = RawSafetensors.Write(_temp.File("zeroinside.safetensors"), header, new byte[8]);

        using SafetensorsFile file = SafetensorsFile.Open(path);
        Assert.Equal(2, file.Tensors.Count);
    }

    [Fact]
    public void Scalar_tensor_has_one_element()
    {
        string path = _temp.File("scalar.safetensors");
        SafetensorsWriter.Write(path, [(new TensorSpec("s", DType.F32, []), (ReadOnlyMemory<byte>)BitConverter.GetBytes(2.5f))]);

        using SafetensorsFile file = SafetensorsFile.Open(path);
        TensorInfo s = file.GetTensor("s");
        Assert.Empty(s.Shape);
        Assert.Equal(1, s.ElementCount);
        Assert.Equal([2.5f], new TensorRef(file, s).ReadAllAsFloat32());
    }

    [Fact]
    public void Reader_accepts_unaligned_hand_written_offsets()
    {
        // One pad byte of U8 puts the F32 tensor at data offset 1.
        byte[] data = [0xAA, .. BitConverter.GetBytes(1.5f), .. BitConverter.GetBytes(-3f)];
        string header = "{\"pad\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[1,9]}}";
        string path = RawSafetensors.Write(_temp.File("unaligned.safetensors"), header, data);

        using SafetensorsFile file = SafetensorsFile.Open(path);
        Assert.Equal([1.5f, -3f], new TensorRef(file, file.GetTensor("x")).ReadAllAsFloat32());
    }

    [Fact]
    public void GetTensor_for_a_missing_name_names_the_tensor_and_the_file()
    {
        string path = _temp.File("one.safetensors");
        SafetensorsWriter.Write(path, [(new TensorSpec("x", DType.U8, [1]), (ReadOnlyMemory<byte>)new byte[1])]);

        using SafetensorsFile file = SafetensorsFile.Open(path);
        var ex = Assert.Throws<KeyNotFoundException>(() => file.GetTensor("missing.weight"));
        Assert.Contains("'missing.weight'", ex.Message, StringComparison.Ordinal);
        Assert.Contains(path, ex.Message, StringComparison.Ordinal);
        Assert.False(file.TryGetTensor("missing.weight", out _));
        Assert.True(file.TryGetTensor("x", out TensorInfo? found));
        Assert.Equal("x", found.Name);
    }

    [Fact]
    public void TensorInfo_from_another_file_is_refused()
    {
        string pathA = _temp.File("a.safetensors");
        string pathB = _temp.File("b.safetensors");
        SafetensorsWriter.Write(pathA, [(new TensorSpec("x", DType.U8, [1]), (ReadOnlyMemory<byte>)new byte[1])]);
        SafetensorsWriter.Write(pathB, [(new TensorSpec("y", DType.U8, [1]), (ReadOnlyMemory<byte>)new byte[1])]);

        using SafetensorsFile a = SafetensorsFile.Open(pathA);
        using SafetensorsFile b = SafetensorsFile.Open(pathB);
        var ex = Assert.Throws<ArgumentException>(() => a.GetBytes(b.GetTensor("y")));
        Assert.Contains("does not belong", ex.Message, StringComparison.Ordinal);
        var forged = new TensorInfo("x", DType.U8, [1_000_000], 0, 1_000_000);
        Assert.Throws<ArgumentException>(() => a.GetBytes(forged));
    }

    [Fact]
    public void Reading_after_dispose_throws_ObjectDisposedException()
    {
        string path = _temp.File("disposed.safetensors");
        SafetensorsWriter.Write(path, [(new TensorSpec("x", DType.U8, [1]), (ReadOnlyMemory<byte>)new byte[1])]);
        SafetensorsFile file = SafetensorsFile.Open(path);
        TensorInfo x = file.GetTensor("x");

        file.Dispose();
        file.Dispose();

        Assert.Throws<ObjectDisposedException>(() => file.GetBytes(x));
    }

    [Fact]
    public void ReadAsFloat32_into_a_buffer_of_the_wrong_length_is_refused()
    {
        string path = _temp.File("len.safetensors");
        SafetensorsWriter.Write(path, [(new TensorSpec("x", DType.F32, [2]), (ReadOnlyMemory<byte>)new byte[8])]);

        using SafetensorsFile file = SafetensorsFile.Open(path);
        var tensor = new TensorRef(file, file.GetTensor("x"));
        var ex = Assert.Throws<ArgumentException>(() => tensor.ReadAsFloat32(new float[3]));
        Assert.Contains("has 2", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Callback_writing_too_few_bytes_fails_and_leaves_no_file()
    {
        string path = _temp.File("short.safetensors");

        var ex = Assert.Throws<InvalidOperationException>(() =>
            SafetensorsWriter.Write(path, [new TensorSpec("x", DType.F32, [4])], (_, stream) => stream.Write(new byte[15])));

        Assert.Contains("wrote 15 bytes for tensor 'x', but it needs exactly 16", ex.Message, StringComparison.Ordinal);
        Assert.False(File.Exists(path));
        Assert.False(File.Exists(path + ".tmp"));
    }

    [Fact]
    public void Callback_writing_too_many_bytes_fails_and_leaves_no_file()
    {
        string path = _temp.File("long.safetensors");

        var ex = Assert.Throws<InvalidOperationException>(() =>
            SafetensorsWriter.Write(path, [new TensorSpec("x", DType.F32, [4])], (_, stream) => stream.Write(new byte[17])));

        Assert.Contains("tensor 'x' wrote more than its 16 bytes", ex.Message, StringComparison.Ordinal);
        Assert.False(File.Exists(path));
        Assert.False(File.Exists(path + ".tmp"));
    }

    [Fact]
    public void Failed_write_leaves_an_existing_file_untouched()
    {
        string path = _temp.File("keep.safetensors");
        SafetensorsWriter.Write(path, [(new TensorSpec("old", DType.U8, [1]), (ReadOnlyMemory<byte>)new byte[] { 7 })]);
        byte[] before = File.ReadAllBytes(path);

        Assert.Throws<InvalidOperationException>(() =>
            SafetensorsWriter.Write(path, [new TensorSpec("new", DType.U8, [2])], (_, stream) => stream.WriteByte(1)));

        Assert.Equal(before, File.ReadAllBytes(path));
    }

    [Fact]
    public void Successful_write_replaces_an_existing_file()
    {
        string path = _temp.File("replace.safetensors");
        SafetensorsWriter.Write(path, [(new TensorSpec("old", DType.U8, [1]), (ReadOnlyMemory<byte>)new byte[] { 7 })]);

        SafetensorsWriter.Write(path, [(new TensorSpec("new", DType.U8, [1]), (ReadOnlyMemory<byte>)new byte[] { 8 })]);

        using SafetensorsFile file = SafetensorsFile.Open(path);
        Assert.Equal("new", Assert.Single(file.Tensors).Name);
        Assert.False(File.Exists(path + ".tmp"));
    }

    [Fact]
    public void Writer_refuses_duplicate_tensor_names()
    {
        string path = _temp.File("dup.safetensors");

        var ex = Assert.Throws<ArgumentException>(() =>
            SafetensorsWriter.Write(path, [new TensorSpec("x", DType.U8, [1]), new TensorSpec("x", DType.U8, [1])], (_, s) => s.WriteByte(0)));

        Assert.Contains("Duplicate tensor name 'x'", ex.Message, StringComparison.Ordinal);
        Assert.False(File.Exists(path));
    }

    [Fact]
    public void Writer_refuses_in_memory_data_of_the_wrong_length()
    {
        string path = _temp.File("wronglen.safetensors");

        var ex = Assert.Throws<ArgumentException>(() =>
            SafetensorsWriter.Write(path, [(new TensorSpec("x", DType.F32, [2]), (ReadOnlyMemory<byte>)new byte[7])]));

        Assert.Contains("'x' has 7 data bytes, but its spec needs 8", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Writer_refuses_negative_dimensions()
    {
        var ex = Assert.Throws<ArgumentException>(() =>
            SafetensorsWriter.Write(_temp.File("neg.safetensors"), [new TensorSpec("x", DType.F32, [-1])], (_, _) => { }));

        Assert.Contains("'x' has an invalid shape", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Written_header_is_plain_json_with_the_documented_fields()
    {
        string path = _temp.File("json.safetensors");
        SafetensorsWriter.Write(path, [(new TensorSpec("w", DType.BF16, [2]), (ReadOnlyMemory<byte>)new byte[4])], new Dictionary<string, string> { ["format"] = "pt" });

        byte[] raw = File.ReadAllBytes(path);
        int n = (int)BinaryPrimitives.ReadUInt64LittleEndian(raw);
        using JsonDocument doc = JsonDocument.Parse(Encoding.UTF8.GetString(raw, 8, n));
        JsonElement w = doc.RootElement.GetProperty("w");
        Assert.Equal("BF16", w.GetProperty("dtype").GetString());
        Assert.Equal([2L], w.GetProperty("shape").EnumerateArray().Select(e => e.GetInt64()));
        Assert.Equal([0L, 4L], w.GetProperty("data_offsets").EnumerateArray().Select(e => e.GetInt64()));
        Assert.Equal("pt", doc.RootElement.GetProperty("__metadata__").GetProperty("format").GetString());
    }
}
