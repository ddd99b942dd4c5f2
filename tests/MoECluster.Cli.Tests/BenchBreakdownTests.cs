using System.Text.Json.Nodes;
using MoECluster.Model.Presets;
using MoECluster.Testing;

namespace MoECluster.Cli.Tests;

/// <summary><c>moecluster bench --layer-only --breakdown</c> times each step of the layer per batch: a table and the JSON.</summary>
public sealed class BenchBreakdownTests
{
    [Fact]
    public void The_layer_benchmark_with_breakdown_prints_and_writes_each_steps_time_per_batch()
    {
        using var dir = new TempDirectory();
        string model = Path.Combine(dir.Path, "tiny");
        SyntheticCheckpoint.Write(model, ModelPresets.Get("tiny").Build(), 3);
        string json = Path.Combine(dir.Path, "bench.json");

        var r = ChildProcess.Moecluster("bench", "--layer-only", "--backend", "managed", "--model", model, "--tokens", "1", "8",
            "--seconds", "0.01", "--read-mib", "8", "--breakdown", "--json", json);

        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Contains("breakdown (managed;", r.Stdout, StringComparison.Ordinal);
        var layer = JsonNode.Parse(File.ReadAllText(json))!["layer"]!.AsArray();
        Assert.Equal(2, layer.Count);
        foreach (var entry in layer)
        {
            var steps = entry!["managed"]!["breakdown"]!;
            foreach (string step in new[] { "route_seconds", "experts_and_combine_seconds", "combine_seconds", "finish_seconds" })
            {
                double seconds = steps[step]!.GetValue<double>();
                Assert.True(seconds > 0 && double.IsFinite(seconds), $"{step}: {entry.ToJsonString()}");
            }
        }
    }
}
