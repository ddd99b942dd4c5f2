using System.CommandLine;
using System.Text.RegularExpressions;
using MoECluster.Cli.Commands;
using MoECluster.Cluster.Hosting;
using MoECluster.Wire;

namespace MoECluster.Cli.Tests;

/// <summary>
/// <c>--wire-dispatch</c> and <c>--wire-combine</c> beside <c>--wire</c>: a specific option overrides <c>--wire</c> for its
/// direction, the defaults stay bf16 both ways (or the cluster's, for the verbs whose wire is optional), the values are
/// the codec registry's names.
/// </summary>
public sealed partial class WirePairOptionTests
{
    private static ParseResult Parse(WireOption wire, params string[] args)
    {
        var command = new RootCommand();
        foreach (var option in wire.All)
        {
            command.Add(option);
        }

        return command.Parse(args);
    }

    [Theory]
    [InlineData(new string[0], "bf16/bf16")]
    [InlineData(new[] { "--wire", "fp32" }, "fp32/fp32")]
    [InlineData(new[] { "--wire-dispatch", "fp32" }, "fp32/bf16")]
    [InlineData(new[] { "--wire-combine", "fp16" }, "bf16/fp16")]
    [InlineData(new[] { "--wire", "fp16", "--wire-combine", "fp32" }, "fp16/fp32")]
    [InlineData(new[] { "--wire-combine", "fp32", "--wire", "fp16" }, "fp16/fp32")]
    [InlineData(new[] { "--wire", "fp32", "--wire-dispatch", "bf16", "--wire-combine", "fp16" }, "bf16/fp16")]
    public void A_specific_option_overrides_wire_for_its_direction_and_the_default_is_bf16_both_ways(string[] args, string expected)
    {
        var wire = WireOption.Create("test");
        var parse = Parse(wire, args);
        Assert.Empty(parse.Errors);
        Assert.Equal(expected, wire.Pair(parse).Text);
    }

    [Theory]
    [InlineData(new string[0], null, null)]
    [InlineData(new[] { "--wire", "fp32" }, "fp32", "fp32")]
    [InlineData(new[] { "--wire-dispatch", "fp16" }, "fp16", null)]
    [InlineData(new[] { "--wire-combine", "fp32" }, null, "fp32")]
    [InlineData(new[] { "--wire", "bf16", "--wire-dispatch", "fp16" }, "fp16", "bf16")]
    public void An_optional_wire_leaves_a_direction_no_option_names_to_the_cluster(string[] args, string? dispatch, string? combine)
    {
        var wire = WireOption.CreateOptional("test");
        var parse = Parse(wire, args);
        Assert.Empty(parse.Errors);
        Assert.Equal(new WireChoice(dispatch, combine), wire.Choice(parse));
    }

    [Theory]
    [InlineData("run")]
    [InlineData("silo")]
    [InlineData("forward")]
    [InlineData("load")]
    [InlineData("chaos")]
    public void Each_direction_option_accepts_exactly_the_registrys_names(string verb)
    {
        using var output = new StringWriter();
        using var error = new StringWriter();
        Assert.Equal(CliApp.ExitOk, CliApp.Run([verb, "--help"], output, error));
        string help = output.ToString();
        foreach (var regex in new[] { WireValues(), DispatchValues(), CombineValues() })
        {
            var match = regex.Match(help);
            Assert.True(match.Success, $"{regex}: {help}");
            Assert.Equal(WireCodecs.Names.Order(StringComparer.Ordinal), match.Groups[1].Value.Split('|').Order(StringComparer.Ordinal));
        }
    }

    [Theory]
    [InlineData("run", "--wire-dispatch")]
    [InlineData("run", "--wire-combine")]
    [InlineData("load", "--wire-combine")]
    [InlineData("silo", "--wire-dispatch")]
    public void An_unknown_direction_type_is_refused_with_the_registrys_names(string verb, string option)
    {
        using var output = new StringWriter();
        using var error = new StringWriter();
        Assert.Equal(CliApp.ExitUsage, CliApp.Run([verb, option, "fp8"], output, error));
        Assert.Contains("Must be one of: " + string.Join(' ', WireCodecs.Names.Select(n => $"'{n}'")), error.ToString(), StringComparison.Ordinal);
    }

    [Fact]
    public void A_silo_launch_passes_each_direction_it_is_given()
    {
        var launch = new SiloLaunch(SiloRoles.Frontend, "frontend", [], 2, "managed", "fp16", WireDispatch: "fp32", WireCombine: "bf16");
        var args = launch.Arguments();
        Assert.Equal(["fp16", "fp32", "bf16"], new[] { "--wire", "--wire-dispatch", "--wire-combine" }.Select(o => args[args.ToList().IndexOf(o) + 1]));
        Assert.DoesNotContain("--wire-dispatch", new SiloLaunch(SiloRoles.Expert, "expert-1", [], 2, "managed").Arguments());
    }

    [GeneratedRegex(@"--wire <([^>]+)>")]
    private static partial Regex WireValues();

    [GeneratedRegex(@"--wire-dispatch <([^>]+)>")]
    private static partial Regex DispatchValues();

    [GeneratedRegex(@"--wire-combine <([^>]+)>")]
    private static partial Regex CombineValues();
}
