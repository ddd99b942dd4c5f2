using MoECluster.Cli.Commands;

namespace MoECluster.Cli.Tests;

/// <summary><c>run --wire-sweep</c> and <c>--inputs</c>: the pairs and sample inputs the sample traffic is sent in.</summary>
public sealed class RunSweepOptionTests
{
    [Fact]
    public void A_sweep_parses_each_pair_through_the_registry_and_drops_repeats()
    {
        var pairs = RunSettings.ParseSweep(" bf16/bf16, mxfp8/bf16 ,nvfp4,mxfp8-e4m3/bf16");
        Assert.Equal(["bf16/bf16", "mxfp8-e4m3/bf16", "nvfp4/nvfp4"], pairs.Select(p => p.Text));
        Assert.Empty(RunSettings.ParseSweep(null));
    }

    [Theory]
    [InlineData("bf16/fp8", "--wire-sweep:")]
    [InlineData(",", "--wire-sweep names no pair")]
    public void A_bad_sweep_is_a_usage_error(string text, string message)
    {
        var e = Assert.Throws<UsageException>(() => RunSettings.ParseSweep(text));
        Assert.StartsWith(message, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Inputs_are_gaussian_or_outliers()
    {
        Assert.Equal(["gaussian", "outliers"], RunSettings.ParseInputs("gaussian, outliers,gaussian"));
        Assert.Equal("--inputs: 'uniform' is not gaussian or outliers", Assert.Throws<UsageException>(() => RunSettings.ParseInputs("uniform")).Message);
        Assert.Throws<UsageException>(() => RunSettings.ParseInputs(" , "));
    }
}
