using System.Text.Json.Nodes;
using MoECluster.Model.Analysis;
using MoECluster.Model.Presets;
using MoECluster.Testing;

namespace MoECluster.Cli.Tests;

/// <summary><c>moecluster bench --layer-only</c> measures the layer's floors in the same run: a table and the JSON.</summary>
public sealed class BenchFloorsTests
{
    [Fact]
    public void The_layer_benchmark_prints_and_writes_compute_and_bytes_floors_and_efficiency_per_batch()
    {
        using var dir = new TempDirectory();
        string model = Path.Combine(dir.Path, "tiny");
        var config = ModelPresets.Get("tiny").Build();
        SyntheticCheckpoint.Write(model, config, 3);
        string json = Path.Combine(dir.Path, "bench.json");

        var r = ChildProcess.Moecluster("bench", "--layer-only", "--backend", "managed", "--model", model, "--tokens", "1", "8",
            "--seconds", "0.01", "--read-mib", "8", "--json", json);

        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Contains("floors (managed;", r.Stdout, StringComparison.Ordinal);
        Assert.Contains("efficiency", r.Stdout, StringComparison.Ordinal);
        var results = JsonNode.Parse(File.ReadAllText(json))!;
        double bandwidth = results["memory_read"]!["bytes_per_second"]!.GetValue<double>();
        Assert.True(bandwidth > 0 && double.IsFinite(bandwidth), r.Stdout);
        Assert.Equal(8L << 20, results["memory_read"]!["buffer_bytes"]!.GetValue<long>());
        var layer = results["layer"]!.AsArray();
        Assert.Equal(2, layer.Count);

        // The read probe runs alone before the first batch, then interleaved with each batch's repetitions: a batch's bytes
        // floor uses the best pass of its own window.
        double[] probes = [.. results["memory_read"]!["probes_bytes_per_second"]!.AsArray().Select(p => p!.GetValue<double>())];
        Assert.Equal(layer.Count + 1, probes.Length);
        Assert.Equal(probes.Max(), bandwidth);
        for (int i = 0; i < layer.Count; i++)
        {
            var floors = layer[i]!["managed"]!["floors"]!;
            double read = floors["read_bytes_per_second"]!.GetValue<double>();
            Assert.Equal(probes[i + 1], read);
            Assert.Equal(floors["weight_bytes_stored"]!.GetValue<long>() / read, floors["bytes_floor_seconds"]!.GetValue<double>(), 12);

            // And against the run's best probe, the stricter reading.
            double seconds = layer[i]!["managed"]!["seconds"]!.GetValue<double>();
            double strictBytes = floors["weight_bytes_stored"]!.GetValue<long>() / bandwidth;
            Assert.Equal(bandwidth, floors["run_best_read_bytes_per_second"]!.GetValue<double>());
            Assert.Equal(Math.Max(floors["compute_floor_seconds"]!.GetValue<double>(), strictBytes) / seconds, floors["efficiency_at_run_best_read"]!.GetValue<double>(), 9);
            Assert.True(floors["efficiency_at_run_best_read"]!.GetValue<double>() <= floors["efficiency"]!.GetValue<double>());
        }

        foreach (var entry in layer)
        {
            int tokens = entry!["tokens"]!.GetValue<int>();
            var floors = entry["managed"]!["floors"]!;
            double seconds = entry["managed"]!["seconds"]!.GetValue<double>();
            int experts = floors["distinct_experts"]!.GetValue<int>();
            Assert.InRange(experts, 1, Math.Min(config.NRoutedExperts, tokens * config.NumExpertsPerTok));
            Assert.Equal((double)tokens * LayerFloors.FlopsPerToken(config), floors["flops"]!.GetValue<double>());
            Assert.Equal(LayerFloors.WeightBytes(config, 2, experts), floors["weight_bytes_stored"]!.GetValue<long>());
            double compute = floors["compute_floor_seconds"]!.GetValue<double>();
            double bytes = floors["bytes_floor_seconds"]!.GetValue<double>();
            Assert.True(compute > 0 && bytes > 0, entry.ToJsonString());
            Assert.Equal(Math.Max(compute, bytes) / seconds, floors["efficiency"]!.GetValue<double>(), 9);
        }
    }

    [Fact]
    public void A_batch_is_timed_with_one_read_probe_pass_after_each_repetition_and_keeps_the_best_of_both()
    {
        using var probe = new MemoryReadProbe(4L << 20, threads: 2);
        int runs = 0;
        var (seconds, read) = Commands.BenchCommand.BestSecondsInterleaved(() => { runs++; Thread.Sleep(runs == 1 ? 30 : 2); }, probe, 0.05);

        // The warm-up (30 ms) does not count; every timed repetition sleeps 2 ms. One pass after the warm-up and one after each repetition.
        Assert.InRange(seconds, 0.002, 0.025);
        Assert.True(runs >= 3, $"{runs} runs");
        Assert.Equal(runs, probe.Passes);
        Assert.True(double.IsFinite(read) && read > 1e7, $"{read:E3} B/s");
    }
}
