using System.Globalization;
using MoECluster.Testing;

namespace MoECluster.Cli.Tests;

/// <summary>
/// <c>moecluster forward</c>, run as a real process, on checkpoints written by an independent numpy
/// implementation (tests/tools/independent_moe.py: its own safetensors writer, BF16 rounding, routing and a
/// float64 forward), compared with that implementation's float64 outputs.
/// </summary>
public sealed class IndependentCheckpointTests
{
    private const double Tolerance = 1e-4;

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
        var model = IndependentModel.Generate(dir.Path, flags);
        foreach (int layer in model.MoeLayers)
        {
            string output = dir.File($"out-{layer}.safetensors");
            var run = ChildProcess.Moecluster("forward", "--model", model.ModelPath, "--input", model.InputPath, "--output", output, "--layer", layer.ToString(CultureInfo.InvariantCulture));
            Assert.True(run.ExitCode == 0, run.ToString());
            double error = Metrics.RelativeError(IndependentModel.ReadOutput(output), model.Expected($"layer_{layer}"));
            Assert.True(error <= Tolerance, $"seed {model.Seed} {flags} layer {layer}: relative error {error:E2}");
        }

        var first = ChildProcess.Moecluster("forward", "--model", model.ModelPath, "--input", model.InputPath, "--output", dir.File("out-default.safetensors"));
        Assert.True(first.ExitCode == 0, first.ToString());
        Assert.Equal(IndependentModel.ReadOutput(dir.File($"out-{model.MoeLayers[0]}.safetensors")), IndependentModel.ReadOutput(dir.File("out-default.safetensors")));

        var stack = ChildProcess.Moecluster("forward", "--model", model.ModelPath, "--input", model.InputPath, "--output", dir.File("out-stack.safetensors"), "--stack");
        Assert.True(stack.ExitCode == 0, stack.ToString());
        double stackError = Metrics.RelativeError(IndependentModel.ReadOutput(dir.File("out-stack.safetensors")), model.Expected("stack"));
        Assert.True(stackError <= Tolerance, $"seed {model.Seed} {flags} stack: relative error {stackError:E2}");
    }
}
