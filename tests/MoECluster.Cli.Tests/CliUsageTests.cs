using MoECluster.Testing;
using System.Runtime.InteropServices;
using MoECluster.Model.Checkpoints;

namespace MoECluster.Cli.Tests;

/// <summary>The command-line contract: each verb works end to end, and bad input gets one line and exit code 2.</summary>
public sealed class CliUsageTests : IClassFixture<CliUsageTests.TinyModel>
{
    private readonly TinyModel _tiny;

    public CliUsageTests(TinyModel tiny) => _tiny = tiny;

    /// <summary>One tiny model written by <c>moecluster init-model</c>, shared by the tests of this class.</summary>
    public sealed class TinyModel : IDisposable
    {
        public TinyModel()
        {
            var r = ChildProcess.Moecluster("init-model", "--preset", "tiny", "--out", Dir.File("m"), "--seed", "3", "--sample-tokens", "5");
            Assert.True(r.ExitCode == 0, r.ToString());
        }

        public TempDirectory Dir { get; } = new();

        public string Model => Dir.File("m");

        public void Dispose() => Dir.Dispose();
    }

    private static void AssertUsageError(ChildProcess.Result r, string expectedFragment)
    {
        Assert.True(r.ExitCode == 2, r.ToString());
        string line = r.Stderr.Trim();
        Assert.DoesNotContain('\n', line);
        Assert.Contains(expectedFragment, line, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", line, StringComparison.Ordinal);
    }

    private static void WriteInput(string path, DType dtype, int tokens, int width, float value = 0.5f)
    {
        var values = new float[tokens * width];
        var rng = new Random();
        for (int i = 0; i < values.Length; i++)
        {
            values[i] = (float)(rng.NextDouble() - 0.5) + value;
        }

        byte[] bytes = dtype == DType.F32 ? MemoryMarshal.AsBytes(values.AsSpan()).ToArray() : throw new NotSupportedException();
        SafetensorsWriter.Write(path, [(new TensorSpec("hidden_states", dtype, [tokens, width]), (ReadOnlyMemory<byte>)bytes)]);
    }

    [Fact]
    public void Init_model_writes_a_model_that_info_and_forward_accept()
    {
        var info = ChildProcess.Moecluster("info", "--model", _tiny.Model);
        Assert.True(info.ExitCode == 0, info.ToString());
        Assert.Contains("LatentMoE", info.Stdout, StringComparison.Ordinal);
        Assert.Contains("4x fewer", info.Stdout, StringComparison.Ordinal);
        Assert.Contains("MoE layers       2 of 4: 1, 3", info.Stdout, StringComparison.Ordinal);

        string output = _tiny.Dir.File("y.safetensors");
        var fwd = ChildProcess.Moecluster("forward", "--model", _tiny.Model, "--input", Path.Combine(_tiny.Model, "sample_input.safetensors"), "--output", output);
        Assert.True(fwd.ExitCode == 0, fwd.ToString());
        using var file = SafetensorsFile.Open(output);
        var y = file.GetTensor("hidden_states");
        Assert.Equal([5L, 64L], y.Shape);
        Assert.All(new TensorRef(file, y).ReadAllAsFloat32(), v => Assert.True(float.IsFinite(v) && v != 0f));
    }

    [Theory]
    [InlineData("forward", "--stack")]
    [InlineData("init-model", "--preset")]
    [InlineData("info", "--model")]
    public void Every_verb_has_help(string verb, string option)
    {
        var r = ChildProcess.Moecluster(verb, "--help");
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Contains(option, r.Stdout, StringComparison.Ordinal);
    }

    [Fact]
    public void Missing_required_option_is_a_usage_error()
    {
        AssertUsageError(ChildProcess.Moecluster("forward", "--model", _tiny.Model), "--input");
    }

    [Fact]
    public void Input_of_the_wrong_width_names_expected_and_actual_shape()
    {
        string input = _tiny.Dir.File("wide.safetensors");
        WriteInput(input, DType.F32, 3, 65);
        AssertUsageError(ChildProcess.Moecluster("forward", "--model", _tiny.Model, "--input", input, "--output", _tiny.Dir.File("o.safetensors")),
            "hidden_states has shape [3, 65], expected [T, 64]");
    }

    [Fact]
    public void Non_finite_input_is_refused_with_its_position()
    {
        string input = _tiny.Dir.File("nan.safetensors");
        var values = new float[2 * 64];
        values.AsSpan().Fill(1f);
        values[64 + 7] = float.NaN;
        SafetensorsWriter.Write(input, [(new TensorSpec("hidden_states", DType.F32, [2, 64]), (ReadOnlyMemory<byte>)MemoryMarshal.AsBytes(values.AsSpan()).ToArray())]);
        AssertUsageError(ChildProcess.Moecluster("forward", "--model", _tiny.Model, "--input", input, "--output", _tiny.Dir.File("o.safetensors")),
            "hidden_states[1, 7] is NaN");
    }

    [Fact]
    public void A_non_moe_layer_is_refused_with_the_moe_layers_listed()
    {
        AssertUsageError(ChildProcess.Moecluster("forward", "--model", _tiny.Model, "--input", Path.Combine(_tiny.Model, "sample_input.safetensors"), "--output", _tiny.Dir.File("o.safetensors"), "--layer", "2"),
            "MoE layers: 1, 3");
    }

    [Fact]
    public void Missing_tensors_are_named()
    {
        using var dir = new TempDirectory();
        string model = dir.File("m");
        Directory.CreateDirectory(model);
        File.Copy(Path.Combine(_tiny.Model, "config.json"), Path.Combine(model, "config.json"));
        using (var src = SafetensorsFile.Open(Path.Combine(_tiny.Model, "model.safetensors")))
        {
            var keep = src.Tensors.Where(t => !t.Name.Contains("experts.5.down_proj", StringComparison.Ordinal)).ToList();
            SafetensorsWriter.Write(Path.Combine(model, "model.safetensors"),
                [.. keep.Select(t => (new TensorSpec(t.Name, t.DType, t.Shape), (ReadOnlyMemory<byte>)src.GetBytes(t).ToArray()))]);
        }

        AssertUsageError(ChildProcess.Moecluster("forward", "--model", model, "--input", Path.Combine(_tiny.Model, "sample_input.safetensors"), "--output", dir.File("o.safetensors")),
            "backbone.layers.1.mixer.experts.5.down_proj.weight");
    }

    [Fact]
    public void A_corrupt_input_file_is_a_usage_error()
    {
        string input = _tiny.Dir.File("corrupt.safetensors");
        File.WriteAllBytes(input, [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F, 1, 2, 3]);
        var r = ChildProcess.Moecluster("forward", "--model", _tiny.Model, "--input", input, "--output", _tiny.Dir.File("o.safetensors"));
        AssertUsageError(r, "corrupt.safetensors");
    }

    [Fact]
    public void Unknown_preset_is_a_usage_error_listing_presets()
    {
        AssertUsageError(ChildProcess.Moecluster("init-model", "--preset", "mega", "--out", _tiny.Dir.File("x")), "super-shape");
    }

    [Fact]
    public void Init_model_refuses_to_overwrite_without_force()
    {
        AssertUsageError(ChildProcess.Moecluster("init-model", "--preset", "tiny", "--out", _tiny.Model), "--force");
    }

    [Fact]
    public void Missing_model_directory_is_named()
    {
        AssertUsageError(ChildProcess.Moecluster("info", "--model", "/nonexistent/model"), "/nonexistent/model");
    }

    [Fact]
    public void No_verb_is_a_usage_error()
    {
        var r = ChildProcess.Moecluster();
        Assert.Equal(2, r.ExitCode);
    }
}
