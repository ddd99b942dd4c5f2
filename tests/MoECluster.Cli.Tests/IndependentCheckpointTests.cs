using MoECluster.Testing;
using System.Runtime.InteropServices;
using System.Text.Json;
using MoECluster.Model.Checkpoints;

namespace MoECluster.Cli.Tests;

/// <summary>
/// <c>moecluster forward</c>, run as a real process, on checkpoints written by an independent numpy
/// implementation (tests/tools/independent_moe.py: its own safetensors writer, BF16 rounding, routing and a
/// float64 forward), compared with that implementation's float64 outputs.
/// </summary>
public sealed class IndependentCheckpointTests
{
    private const double Tolerance = 1e-4;

    private static string Script
    {
        get
        {
            var dir = new DirectoryInfo(AppContext.BaseDirectory);
            while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "MoECluster.sln")))
            {
                dir = dir.Parent;
            }

            return Path.Combine(dir?.FullName ?? throw new InvalidOperationException("repository root not found"), "tests", "tools", "independent_moe.py");
        }
    }

    /// <summary>Debian's interpreter, which has python3-numpy (.ci/run installs it).</summary>
    private const string Python = "/usr/bin/python3";

    private static double[] ReadF64(string path, string name)
    {
        using var file = SafetensorsFile.Open(path);
        var info = file.GetTensor(name);
        Assert.Equal(DType.F64, info.DType);
        return MemoryMarshal.Cast<byte, double>(file.GetBytes(info)).ToArray();
    }

    private static float[] ReadOutput(string path)
    {
        using var file = SafetensorsFile.Open(path);
        var info = file.GetTensor("hidden_states");
        Assert.Equal(DType.F32, info.DType);
        return new TensorRef(file, info).ReadAllAsFloat32();
    }

    private static double RelativeError(float[] actual, double[] expected)
    {
        Assert.Equal(expected.Length, actual.Length);
        double num = 0, den = 0;
        for (int i = 0; i < expected.Length; i++)
        {
            Assert.True(float.IsFinite(actual[i]), $"element {i} is {actual[i]}");
            num += (actual[i] - expected[i]) * (actual[i] - expected[i]);
            den += expected[i] * expected[i];
        }

        Assert.True(den > 0, "reference output is all zeros");
        return Math.Sqrt(num / den);
    }

    [Theory]
    [InlineData("--latent")]
    [InlineData("--standard")]
    [InlineData("--latent --groups 4 --ties")]
    [InlineData("--standard --groups 3 --ties --no-norm-topk")]
    [InlineData("--latent --shards 3 --input-dtype BF16 --moe-layers 3")]
    [InlineData("--standard --softmax --input-dtype F16 --tokens 19")]
    [InlineData("--latent --softmax --no-norm-topk --shards 2")]
    public void Forward_matches_the_independent_float64_reference(string flags)
    {
        using var dir = new TempDirectory();
        int seed = Random.Shared.Next(1, int.MaxValue);
        var gen = ChildProcess.Run(Python, [Script, "--out", dir.Path, "--seed", seed.ToString(System.Globalization.CultureInfo.InvariantCulture), .. flags.Split(' ')]);
        Assert.True(gen.ExitCode == 0, $"the independent generator failed (is python3-numpy installed?): {gen}");
        using var summary = JsonDocument.Parse(gen.Stdout.Trim().Split('\n')[^1]);
        int[] layers = [.. summary.RootElement.GetProperty("moe_layers").EnumerateArray().Select(e => e.GetInt32())];
        string model = Path.Combine(dir.Path, "model");
        string input = dir.File("input.safetensors");
        string expected = dir.File("expected.safetensors");

        foreach (int layer in layers)
        {
            string output = dir.File($"out-{layer}.safetensors");
            var run = ChildProcess.Moecluster("forward", "--model", model, "--input", input, "--output", output, "--layer", layer.ToString(System.Globalization.CultureInfo.InvariantCulture));
            Assert.True(run.ExitCode == 0, run.ToString());
            double error = RelativeError(ReadOutput(output), ReadF64(expected, $"layer_{layer}"));
            Assert.True(error <= Tolerance, $"seed {seed} {flags} layer {layer}: relative error {error:E2}");
        }

        var first = ChildProcess.Moecluster("forward", "--model", model, "--input", input, "--output", dir.File("out-default.safetensors"));
        Assert.True(first.ExitCode == 0, first.ToString());
        Assert.Equal(ReadOutput(dir.File($"out-{layers[0]}.safetensors")), ReadOutput(dir.File("out-default.safetensors")));

        var stack = ChildProcess.Moecluster("forward", "--model", model, "--input", input, "--output", dir.File("out-stack.safetensors"), "--stack");
        Assert.True(stack.ExitCode == 0, stack.ToString());
        double stackError = RelativeError(ReadOutput(dir.File("out-stack.safetensors")), ReadF64(expected, "stack"));
        Assert.True(stackError <= Tolerance, $"seed {seed} {flags} stack: relative error {stackError:E2}");
    }
}
