using System.Globalization;
using MoECluster.Cli.Commands;
using MoECluster.Model.Presets;
using MoECluster.Testing;

namespace MoECluster.Cli.Tests;

/// <summary>
/// What a silo checks when it starts, run as the real process: a bad MoECluster key or a served checkpoint that lacks a
/// declared MoE layer's tensors fails the start at once (exit 2, one line on stderr naming the key or the tensors) instead
/// of failing the first request; and no CLI error line is ever empty.
/// </summary>
public sealed class StartupCheckTests
{
    private static readonly TimeSpan StartLimit = TimeSpan.FromSeconds(90);

    private static ChildProcess.Result Frontend(string modelDir, IReadOnlyDictionary<string, string>? environment = null)
    {
        int[] ports = FreePorts.Take(2);
        string P(int p) => p.ToString(CultureInfo.InvariantCulture);
        return ChildProcess.Run("dotnet", [ChildProcess.CliDll, "silo", "--role", "frontend", "--name", "frontend", "--silo-port", P(ports[0]), "--gateway-port", "0",
            "--urls", $"http://127.0.0.1:{P(ports[1])}", "--model", $"lat={modelDir}"], StartLimit, environment);
    }

    private static string OneErrorLine(ChildProcess.Result r, string prefix)
    {
        var lines = r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Where(l => l.StartsWith(prefix, StringComparison.Ordinal)).ToList();
        string line = Assert.Single(lines);
        Assert.DoesNotContain("   at ", r.Stderr, StringComparison.Ordinal);
        Assert.True(line.Length > prefix.Length + 10, $"an error line without its message: '{line}'");
        return line;
    }

    [Fact]
    public void A_frontend_silo_with_shards_per_layer_zero_exits_at_start_naming_the_key()
    {
        using var dir = new TempDirectory();
        SyntheticCheckpoint.Write(dir.File("m"), ModelPresets.Get("tiny").Build(experts: 8), 3);
        var r = Frontend(dir.File("m"), new Dictionary<string, string> { ["MoECluster__ShardsPerLayer"] = "0" });
        Assert.True(r.ExitCode == 2, r.ToString());
        string line = OneErrorLine(r, "moecluster silo");
        Assert.Contains("MoECluster:ShardsPerLayer = 0: expected an integer of at least 1", line, StringComparison.Ordinal);
    }

    [Fact]
    public void A_frontend_silo_with_an_unknown_backend_exits_at_start_with_the_allowed_names()
    {
        using var dir = new TempDirectory();
        SyntheticCheckpoint.Write(dir.File("m"), ModelPresets.Get("tiny").Build(experts: 8), 3);
        var r = Frontend(dir.File("m"), new Dictionary<string, string> { ["MoECluster__Compute__Backend"] = "tpu" });
        Assert.True(r.ExitCode == 2, r.ToString());
        string line = OneErrorLine(r, "moecluster silo");
        Assert.Contains("MoECluster:Compute:Backend = tpu: expected one of auto, reference, managed, ilgpu, cublas", line, StringComparison.Ordinal);
    }

    [Fact]
    public void A_frontend_silo_with_a_pin_in_the_old_key_form_exits_at_start_naming_the_pin_and_the_form()
    {
        // The key without the shard's index would pin nothing, silently (and crashed the process with exit 134 before
        // the silo's start checks caught options validation).
        using var dir = new TempDirectory();
        SyntheticCheckpoint.Write(dir.File("m"), ModelPresets.Get("tiny").Build(experts: 8), 3);
        var r = Frontend(dir.File("m"), new Dictionary<string, string> { ["MoECluster__Pins__lat/1/0-4"] = "expert-1" });
        Assert.True(r.ExitCode == 2, r.ToString());
        string line = OneErrorLine(r, "moecluster silo");
        Assert.Contains("MoECluster:Pins:lat/1/0-4: 'lat/1/0-4' is not a shard key; expected {model}/{layer}/s{index}/{ranges}", line, StringComparison.Ordinal);
    }

    [Fact]
    public void A_silo_serving_a_checkpoint_that_lacks_declared_moe_layers_exits_at_start_naming_the_tensors()
    {
        using var dir = new TempDirectory();
        PartialCheckpoint.WriteOnlyLayerThreeOfFour(dir.File("m"));
        var r = Frontend(dir.File("m"));
        Assert.True(r.ExitCode == 2, r.ToString());
        string line = OneErrorLine(r, "moecluster silo");
        Assert.Contains("MoECluster:Models:lat:Path", line, StringComparison.Ordinal);
        Assert.Contains("declares MoE layers 0, 1, 2, 3", line, StringComparison.Ordinal);
        Assert.Contains("layer(s) 0, 1, 2:", line, StringComparison.Ordinal);
        Assert.Contains("backbone.layers.0.norm.weight", line, StringComparison.Ordinal);
    }

    [Fact]
    public void Run_on_a_checkpoint_that_lacks_declared_moe_layers_says_which_and_exits_non_zero()
    {
        // Used to answer its own first request with a 500 and stop with "moecluster run: error: " and no message.
        using var dir = new TempDirectory();
        PartialCheckpoint.WriteOnlyLayerThreeOfFour(dir.File("m"));
        var r = ChildProcess.Run("dotnet", [ChildProcess.CliDll, "run", "--model", dir.File("m"), "--once", "--models-dir", dir.File("models")], StartLimit);
        Assert.True(r.ExitCode != 0, r.ToString());
        string line = OneErrorLine(r, "moecluster run: error: ");
        Assert.Contains("layer(s) 0, 1, 2:", line, StringComparison.Ordinal);
        Assert.Contains("backbone.layers.0.", line, StringComparison.Ordinal);
    }

    [Fact]
    public void An_exception_without_a_message_still_gets_one()
    {
        Assert.Equal("the message", VerbRunner.Describe(new InvalidOperationException("the message")));
        Assert.Equal("one two", VerbRunner.Describe(new IOException("one\ntwo")));
        Assert.Equal("GatewayException (no message)", VerbRunner.Describe(new MoECluster.Gateway.GatewayException(500, string.Empty)));
        Assert.Equal("IOException: inner", VerbRunner.Describe(new IOException(" ", new InvalidDataException("inner"))));
        Assert.Equal("a | b", VerbRunner.Describe(new AggregateException(new IOException("a"), new InvalidDataException("b"))));
        foreach (var e in new Exception[] { new(string.Empty), new AggregateException(), new TaskCanceledException(string.Empty) })
        {
            Assert.False(string.IsNullOrWhiteSpace(VerbRunner.Describe(e)), e.GetType().Name);
        }
    }
}
