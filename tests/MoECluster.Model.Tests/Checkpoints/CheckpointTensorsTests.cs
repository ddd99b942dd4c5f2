using MoECluster.Testing;
using System.Text.Json;
using MoECluster.Model.Checkpoints;

namespace MoECluster.Model.Tests.Checkpoints;

public sealed class CheckpointTensorsTests : IDisposable
{
    private readonly TempDirectory _temp = new();

    public void Dispose() => _temp.Dispose();

    [Fact]
    public void Single_model_safetensors_directory_opens()
    {
        byte[] data = FloatEncoding.Encode(DType.BF16, [1f, -2f, 0.5f]);
        SafetensorsWriter.Write(_temp.File("model.safetensors"), [(new TensorSpec("w", DType.BF16, [3]), (ReadOnlyMemory<byte>)data)]);

        using CheckpointTensors checkpoint = CheckpointTensors.OpenDirectory(_temp.Path);

        Assert.Equal(["w"], checkpoint.Names);
        Assert.Equal([1f, -2f, 0.5f], checkpoint.GetTensor("w").ReadAllAsFloat32());
    }

    [Fact]
    public void Sharded_checkpoint_round_trips_every_float_dtype()
    {
        var values = new Dictionary<string, float[]>();
        var specs = new List<TensorSpec>();
        DType[] dtypes = [DType.F32, DType.BF16, DType.F16, DType.F64];
        for (int i = 0; i < 8; i++)
        {
            DType dtype = dtypes[i % dtypes.Length];
            string name = $"layers.{i}.weight";
            specs.Add(new TensorSpec(name, dtype, [2, 4]));
            values[name] = Enumerable.Range(0, 8).Select(j => (float)((i * 8) + j - 20) * 0.25f).ToArray();
        }

        // A 1 KiB tensor larger than the shard limit gets a shard of its own.
        specs.Insert(3, new TensorSpec("big", DType.F32, [256]));
        values["big"] = Enumerable.Range(0, 256).Select(j => (float)j).ToArray();
        long total = specs.Sum(s => s.ByteLength);

        SafetensorsWriter.WriteSharded(
            _temp.Path,
            specs,
            (spec, stream) => stream.Write(FloatEncoding.Encode(spec.DType, values[spec.Name])),
            maxShardBytes: 100);

        string[] shardFiles = Directory.GetFiles(_temp.Path, "model-*.safetensors").Select(Path.GetFileName).Order(StringComparer.Ordinal).ToArray()!;
        Assert.True(shardFiles.Length >= 3, $"expected several shards, got {shardFiles.Length}");
        for (int i = 0; i < shardFiles.Length; i++)
        {
            Assert.Equal($"model-{i + 1:D5}-of-{shardFiles.Length:D5}.safetensors", shardFiles[i]);
        }

        using (JsonDocument index = JsonDocument.Parse(File.ReadAllBytes(_temp.File("model.safetensors.index.json"))))
        {
            Assert.Equal(total, index.RootElement.GetProperty("metadata").GetProperty("total_size").GetInt64());
            Dictionary<string, string> weightMap = index.RootElement.GetProperty("weight_map").EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetString()!);
            Assert.Equal(specs.Select(s => s.Name).Order(), weightMap.Keys.Order());
            Assert.All(weightMap.Values, file => Assert.Contains(file, shardFiles));
            Assert.Single(weightMap, p => p.Value == weightMap["big"]);
        }

        using CheckpointTensors checkpoint = CheckpointTensors.OpenDirectory(_temp.Path);
        Assert.Equal(shardFiles.Length, checkpoint.Files.Count);
        Assert.Equal(specs.Select(s => s.Name), checkpoint.Names);
        foreach (TensorSpec spec in specs)
        {
            TensorRef tensor = checkpoint.GetTensor(spec.Name);
            Assert.Equal(spec.DType, tensor.DType);
            Assert.Equal(spec.Shape, tensor.Shape);
            Assert.Equal(values[spec.Name], tensor.ReadAllAsFloat32());
        }
    }

    [Fact]
    public void Sharding_keeps_tensors_together_up_to_the_limit()
    {
        TensorSpec[] specs = [new("a", DType.U8, [40]), new("b", DType.U8, [60]), new("c", DType.U8, [1])];

        SafetensorsWriter.WriteSharded(_temp.Path, specs, (spec, stream) => stream.Write(new byte[spec.ByteLength]), maxShardBytes: 100);

        using CheckpointTensors checkpoint = CheckpointTensors.OpenDirectory(_temp.Path);
        Assert.Equal(2, checkpoint.Files.Count);
        Assert.Equal("model-00001-of-00002.safetensors", Path.GetFileName(checkpoint.GetTensor("b").File.Path));
        Assert.Equal("model-00002-of-00002.safetensors", Path.GetFileName(checkpoint.GetTensor("c").File.Path));
    }

    [Fact]
    public void Directory_without_checkpoint_files_names_both_expected_files()
    {
        var ex = Assert.Throws<FileNotFoundException>(() => CheckpointTensors.OpenDirectory(_temp.Path));

        Assert.Contains("model.safetensors'", ex.Message, StringComparison.Ordinal);
        Assert.Contains("model.safetensors.index.json", ex.Message, StringComparison.Ordinal);
        Assert.Contains(_temp.Path, ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Missing_directory_is_named_in_the_error()
    {
        string missing = _temp.File("nope");

        var ex = Assert.Throws<DirectoryNotFoundException>(() => CheckpointTensors.OpenDirectory(missing));

        Assert.Contains(missing, ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void GetTensor_for_a_missing_name_names_the_tensor_and_the_directory()
    {
        SafetensorsWriter.Write(_temp.File("model.safetensors"), [(new TensorSpec("w", DType.U8, [1]), (ReadOnlyMemory<byte>)new byte[1])]);
        using CheckpointTensors checkpoint = CheckpointTensors.OpenDirectory(_temp.Path);

        var ex = Assert.Throws<KeyNotFoundException>(() => checkpoint.GetTensor("lm_head.weight"));

        Assert.Contains("'lm_head.weight'", ex.Message, StringComparison.Ordinal);
        Assert.Contains(_temp.Path, ex.Message, StringComparison.Ordinal);
        Assert.False(checkpoint.TryGetTensor("lm_head.weight", out _));
    }

    [Theory]
    [InlineData("../outside.safetensors")]
    [InlineData("..")]
    [InlineData("/etc/passwd")]
    [InlineData("sub/model.safetensors")]
    [InlineData("sub\\model.safetensors")]
    [InlineData("C:model.safetensors")]
    [InlineData("")]
    public void Index_entry_that_is_not_a_plain_file_name_is_rejected(string shard)
    {
        string index = WriteIndex(("w", shard));

        var ex = Assert.Throws<SafetensorsFormatException>(() => CheckpointTensors.OpenDirectory(_temp.Path));

        Assert.Contains(index, ex.Message, StringComparison.Ordinal);
        Assert.Contains("is not a plain file name", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Index_referencing_a_missing_shard_names_the_shard()
    {
        WriteShard("model-00001-of-00002.safetensors", "a");
        WriteIndex(("a", "model-00001-of-00002.safetensors"), ("b", "model-00002-of-00002.safetensors"));

        var ex = Assert.Throws<FileNotFoundException>(() => CheckpointTensors.OpenDirectory(_temp.Path));

        Assert.Contains("Shard 'model-00002-of-00002.safetensors'", ex.Message, StringComparison.Ordinal);
        Assert.Contains("'b'", ex.Message, StringComparison.Ordinal);
        Assert.Equal(_temp.File("model-00002-of-00002.safetensors"), ex.FileName);
    }

    [Fact]
    public void Index_naming_a_tensor_its_shard_lacks_is_rejected()
    {
        WriteShard("s1.safetensors", "a");
        string index = WriteIndex(("a", "s1.safetensors"), ("ghost", "s1.safetensors"));

        var ex = Assert.Throws<SafetensorsFormatException>(() => CheckpointTensors.OpenDirectory(_temp.Path));

        Assert.Contains(index, ex.Message, StringComparison.Ordinal);
        Assert.Contains("tensor 'ghost' is listed in weight_map for shard 's1.safetensors', but that shard does not contain it", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Index_placing_a_tensor_in_the_wrong_shard_is_rejected()
    {
        WriteShard("s1.safetensors", "a");
        WriteShard("s2.safetensors", "b");
        WriteIndex(("a", "s1.safetensors"), ("b", "s1.safetensors"), ("c", "s2.safetensors"));

        var ex = Assert.Throws<SafetensorsFormatException>(() => CheckpointTensors.OpenDirectory(_temp.Path));

        Assert.Contains("tensor 'b' is listed in weight_map for shard 's1.safetensors', but it is in shard 's2.safetensors'", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Tensor_present_in_two_shards_is_rejected()
    {
        WriteShard("s1.safetensors", "a", "shared");
        WriteShard("s2.safetensors", "b", "shared");
        WriteIndex(("a", "s1.safetensors"), ("b", "s2.safetensors"), ("shared", "s1.safetensors"));

        var ex = Assert.Throws<SafetensorsFormatException>(() => CheckpointTensors.OpenDirectory(_temp.Path));

        Assert.Contains(_temp.File("s2.safetensors"), ex.Message, StringComparison.Ordinal);
        Assert.Contains("tensor 'shared' is also in shard 's1.safetensors'", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Index_that_is_not_JSON_is_rejected()
    {
        string index = _temp.File("model.safetensors.index.json");
        File.WriteAllText(index, "{ weight_map: nope");

        var ex = Assert.Throws<SafetensorsFormatException>(() => CheckpointTensors.OpenDirectory(_temp.Path));

        Assert.Contains(index, ex.Message, StringComparison.Ordinal);
        Assert.Contains("not valid JSON", ex.Message, StringComparison.Ordinal);
    }

    /// <summary>
    /// Regression (found by the decoder fuzzer, tests/MoECluster.Fuzz): JsonDocument checks structure only, so a name
    /// or value with a lone surrogate escape or invalid UTF-8 escaped as InvalidOperationException when read as text.
    /// </summary>
    [Theory]
    [InlineData("{\"weight_map\":{\"\\ud800\":\"s1.safetensors\"}}")]
    [InlineData("{\"weight_map\":{\"w\":\"s1\\udc00.safetensors\"}}")]
    public void Index_with_a_string_that_is_not_text_is_rejected_as_invalid_JSON(string json)
    {
        File.WriteAllText(_temp.File("model.safetensors.index.json"), json);

        var ex = Assert.Throws<SafetensorsFormatException>(() => CheckpointTensors.OpenDirectory(_temp.Path));

        Assert.Contains("not valid JSON", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Index_with_invalid_UTF8_in_a_name_is_rejected_as_invalid_JSON()
    {
        File.WriteAllBytes(_temp.File("model.safetensors.index.json"), [.. "{\"weight_map\":{\"w"u8, 0xC3, 0x28, .. "\":\"s1.safetensors\"}}"u8]);

        var ex = Assert.Throws<SafetensorsFormatException>(() => CheckpointTensors.OpenDirectory(_temp.Path));

        Assert.Contains("not valid JSON", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Index_without_weight_map_is_rejected()
    {
        File.WriteAllText(_temp.File("model.safetensors.index.json"), "{\"metadata\":{\"total_size\":0}}");

        var ex = Assert.Throws<SafetensorsFormatException>(() => CheckpointTensors.OpenDirectory(_temp.Path));

        Assert.Contains("missing \"weight_map\"", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Index_weight_map_value_that_is_not_a_string_is_rejected()
    {
        File.WriteAllText(_temp.File("model.safetensors.index.json"), "{\"weight_map\":{\"w\":1}}");

        var ex = Assert.Throws<SafetensorsFormatException>(() => CheckpointTensors.OpenDirectory(_temp.Path));

        Assert.Contains("weight_map value for tensor 'w' must be a file name string", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Index_with_a_duplicate_tensor_name_is_rejected()
    {
        WriteShard("s1.safetensors", "w");
        File.WriteAllText(_temp.File("model.safetensors.index.json"), "{\"weight_map\":{\"w\":\"s1.safetensors\",\"w\":\"s1.safetensors\"}}");

        var ex = Assert.Throws<SafetensorsFormatException>(() => CheckpointTensors.OpenDirectory(_temp.Path));

        Assert.Contains("duplicate tensor name 'w' in weight_map", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Corrupt_shard_is_reported_with_the_shard_path()
    {
        string shard = RawSafetensors.Write(_temp.File("s1.safetensors"), "{\"w\":{\"dtype\":\"F99\",\"shape\":[1],\"data_offsets\":[0,1]}}", new byte[1]);
        WriteIndex(("w", "s1.safetensors"));

        var ex = Assert.Throws<SafetensorsFormatException>(() => CheckpointTensors.OpenDirectory(_temp.Path));

        Assert.Contains(shard, ex.Message, StringComparison.Ordinal);
        Assert.Contains("unknown dtype 'F99'", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Single_file_is_preferred_when_an_index_is_also_present()
    {
        SafetensorsWriter.Write(_temp.File("model.safetensors"), [(new TensorSpec("single", DType.U8, [1]), (ReadOnlyMemory<byte>)new byte[1])]);
        File.WriteAllText(_temp.File("model.safetensors.index.json"), "{\"weight_map\":{\"sharded\":\"missing.safetensors\"}}");

        using CheckpointTensors checkpoint = CheckpointTensors.OpenDirectory(_temp.Path);

        Assert.Equal(["single"], checkpoint.Names);
    }

    private void WriteShard(string fileName, params string[] tensorNames) =>
        SafetensorsWriter.Write(
            _temp.File(fileName),
            tensorNames.Select(n => (new TensorSpec(n, DType.U8, [1]), (ReadOnlyMemory<byte>)new byte[] { 1 })).ToArray());

    private string WriteIndex(params (string Tensor, string Shard)[] entries)
    {
        string path = _temp.File("model.safetensors.index.json");
        using var stream = File.Create(path);
        using var json = new Utf8JsonWriter(stream);
        json.WriteStartObject();
        json.WriteStartObject("metadata");
        json.WriteNumber("total_size", entries.Length);
        json.WriteEndObject();
        json.WriteStartObject("weight_map");
        foreach ((string tensor, string shard) in entries)
        {
            json.WriteString(tensor, shard);
        }

        json.WriteEndObject();
        json.WriteEndObject();
        return path;
    }
}
