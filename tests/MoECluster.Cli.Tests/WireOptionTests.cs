using System.Text.RegularExpressions;
using MoECluster.Wire;

namespace MoECluster.Cli.Tests;

/// <summary>Every verb's <c>--wire</c> accepts exactly the codec registry's names: a new codec needs no CLI change.</summary>
public sealed partial class WireOptionTests
{
    [Theory]
    [InlineData("run")]
    [InlineData("forward")]
    [InlineData("chaos")]
    [InlineData("load")]
    public void The_wire_option_accepts_exactly_the_registrys_names(string verb)
    {
        using var output = new StringWriter();
        using var error = new StringWriter();
        Assert.Equal(CliApp.ExitOk, CliApp.Run([verb, "--help"], output, error));
        var match = WireValues().Match(output.ToString());
        Assert.True(match.Success, output.ToString());
        Assert.Equal(WireCodecs.Names.Order(StringComparer.Ordinal), match.Groups[1].Value.Split('|').Order(StringComparer.Ordinal));
    }

    [Theory]
    [InlineData("run")]
    [InlineData("load")]
    public void An_unknown_wire_is_refused_with_the_registrys_names(string verb)
    {
        using var output = new StringWriter();
        using var error = new StringWriter();
        Assert.Equal(CliApp.ExitUsage, CliApp.Run([verb, "--wire", "fp8"], output, error));
        Assert.Contains("Must be one of: " + string.Join(' ', WireCodecs.Names.Select(n => $"'{n}'")), error.ToString(), StringComparison.Ordinal);
    }

    [Fact]
    public void Chaos_tells_each_wires_tolerance_never_tighter_than_the_stack_floor()
    {
        using var output = new StringWriter();
        using var error = new StringWriter();
        Assert.Equal(CliApp.ExitOk, CliApp.Run(["chaos", "--help"], output, error));
        string help = output.ToString();
        foreach (string tolerance in new[] { "fp32 1e-4", "bf16 1e-2", "fp16 5e-3" })
        {
            Assert.Contains(tolerance, help, StringComparison.Ordinal);
        }

        foreach (var codec in WireCodecs.All)
        {
            Assert.Matches($@"\b{codec.Name} \d+e-\d+\b", help);
        }
    }

    [GeneratedRegex(@"--wire <([^>]+)>")]
    private static partial Regex WireValues();
}
