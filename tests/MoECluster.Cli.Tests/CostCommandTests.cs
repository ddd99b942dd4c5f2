using System.Text.Json.Nodes;
using MoECluster.Testing;

namespace MoECluster.Cli.Tests;

/// <summary><c>moecluster cost</c>: the paper's accounting as a command, its report, and its refusals.</summary>
public sealed class CostCommandTests
{
    [Fact]
    public void Cost_reports_every_pair_for_the_standard_twin_and_the_latent_model_with_the_bytes_the_codecs_write()
    {
        using var dir = new TempDirectory();
        string report = dir.File("cost.json");
        var r = ChildProcess.Moecluster("cost", "--model", "super-shape", "--experts", "512", "--profile", "gb200-nvl72",
            "--tokens", "256", "--ep", "8", "--wire", "bf16/bf16,mxfp8/bf16,mxfp8-e4m3/mxfp8-e4m3,nvfp4/bf16", "--report", report);
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Contains("compute-bound from", r.Stdout, StringComparison.Ordinal);

        var json = JsonNode.Parse(File.ReadAllText(report))!;
        var rows = json["rows"]!.AsArray();
        Assert.Equal(8, rows.Count);
        double Routed(string mode, string wire) => rows.Single(x => (string)x!["mode"]! == mode && (string)x["wire"]! == wire)!["routed_bytes_per_token"]!.GetValue<double>();

        // K 22 rows of ℓ 1024 (latent) or d 4096 (standard), out and back: bf16 2 + 2 B, mxfp8 (1 + 1/32) B, nvfp4 (0.5 + 1/16) B.
        Assert.Equal(22.0 * 1024 * 4, Routed("latent", "bf16/bf16"), 6);
        Assert.Equal(22.0 * 4096 * 4, Routed("standard", "bf16/bf16"), 6);
        Assert.Equal(22.0 * 1024 * (1 + (1.0 / 32) + 2), Routed("latent", "mxfp8-e4m3/bf16"), 6);
        Assert.Equal(22.0 * 1024 * 2 * (1 + (1.0 / 32)), Routed("latent", "mxfp8-e4m3/mxfp8-e4m3"), 6);
        Assert.Equal(22 * ((4 / 1024.0) + 1024 * (0.5 + (1.0 / 16)) + (1024 * 2)), Routed("latent", "nvfp4/bf16"), 6);

        // standard-bf16 ÷ latent-mxfp8: d/ℓ (4) × 2 B ÷ (1 + 1/32) B: 7.76.
        Assert.Equal(8 / (1 + (1.0 / 32)), Routed("standard", "bf16/bf16") / Routed("latent", "mxfp8-e4m3/mxfp8-e4m3"), 9);
        Assert.Equal("mxfp8-e4m3/mxfp8-e4m3", (string)json["standard_bf16_over_latent_best"]!["latent_wire"]!);
        Assert.Equal(20e15, json["profile"]!["PeakFlopsPerSecond"]!.GetValue<double>());
    }

    [Theory]
    [InlineData("--wire", "bf16", "is not a dispatch/combine pair")]
    [InlineData("--wire", "fp8/bf16", "is not a dispatch/combine pair")]
    [InlineData("--profile", "tpu", "unknown profile 'tpu'")]
    [InlineData("--model", "no-such-model", "is neither a preset")]
    [InlineData("--ep", "3", "do not split evenly over EP 3")]
    [InlineData("--check-load", "http://127.0.0.1:1", "--check-load needs --profile measured and --model a model directory")]
    [InlineData("--check-load", "ftp://gateway", "--check-load 'ftp://gateway' is not the http(s) URL of a gateway")]
    [InlineData("--load-workers", "0", "--load-workers and --load-tokens must be at least 1")]
    public void Bad_options_get_one_line_and_exit_code_2(string option, string value, string message)
    {
        string[] args = option switch
        {
            "--model" => ["cost", option, value],
            "--load-workers" => ["cost", "--model", "super-shape", "--check-load", "http://127.0.0.1:1", option, value],
            _ => ["cost", "--model", "super-shape", option, value],
        };
        var r = ChildProcess.Moecluster(args);
        Assert.True(r.ExitCode == 2, r.ToString());
        Assert.Contains(message, r.Stderr, StringComparison.Ordinal);
        Assert.DoesNotContain('\n', r.Stderr.Trim());
    }

    [Theory]
    [InlineData(1, 8, 8)]
    [InlineData(2, 8, 8)]
    [InlineData(3, 4, 8)]
    [InlineData(8, 8, 32)]
    [InlineData(16, 8, 64)]
    public void A_closed_loop_with_one_forward_in_flight_batches_half_its_workers(int workers, int tokens, int batch) =>
        // Measured on the Super-shaped cluster: 8 and 16 workers of 8 tokens gave front-end batches of 32.0 and 64.9 tokens.
        Assert.Equal(batch, Commands.LoadPrediction.ClosedLoopBatch(workers, tokens));

    [Fact]
    public void The_measured_profile_measures_memory_gemm_and_loopback_on_this_machine()
    {
        using var dir = new TempDirectory();
        string report = dir.File("cost.json");
        var r = ChildProcess.Moecluster("cost", "--model", "tiny", "--profile", "measured", "--tokens", "8", "--ep", "1", "--wire", "bf16/bf16", "--report", report);
        Assert.True(r.ExitCode == 0, r.ToString());
        var measured = JsonNode.Parse(File.ReadAllText(report))!["measured"]!;
        Assert.True(measured["gemm_flops_per_second"]!.GetValue<double>() > 1e8);
        Assert.True(measured["read_bytes_per_second"]!.GetValue<double>() > 1e8);
        Assert.True(measured["loopback_bytes_per_second"]!.GetValue<double>() > 1e7);
    }

    [Fact]
    public void The_bench_check_times_the_layer_against_the_measured_prediction_and_fails_beyond_its_tolerance()
    {
        // The mechanics, on the tiny model (where fixed costs dwarf the floors, so the ratio is far from 1): every batch is
        // timed and predicted, and the exit code follows the tolerance. docs/COST.md has the Super-shaped measurements.
        using var dir = new TempDirectory();
        var init = ChildProcess.Moecluster("init-model", "--preset", "tiny", "--out", dir.File("m"), "--layers", "1");
        Assert.True(init.ExitCode == 0, init.ToString());
        string report = dir.File("check.json");
        var loose = ChildProcess.Moecluster("cost", "--model", dir.File("m"), "--profile", "measured", "--ep", "1", "--wire", "bf16/bf16",
            "--check-bench", "--check-tokens", "1", "4", "--tolerance", "1e9", "--report", report);
        Assert.True(loose.ExitCode == 0, loose.ToString());
        var rows = JsonNode.Parse(File.ReadAllText(report))!["bench_check"]!.AsArray();
        Assert.Equal([1, 4], rows.Select(r => r!["tokens"]!.GetValue<int>()));
        Assert.All(rows, r =>
        {
            Assert.True(r!["measured_seconds"]!.GetValue<double>() > 0);
            Assert.True(r["predicted_seconds"]!.GetValue<double>() > 0);
            Assert.Equal(r["measured_seconds"]!.GetValue<double>() / r["predicted_seconds"]!.GetValue<double>(), r["measured_over_predicted"]!.GetValue<double>(), 9);
        });

        var strict = ChildProcess.Moecluster("cost", "--model", dir.File("m"), "--profile", "measured", "--ep", "1", "--wire", "bf16/bf16",
            "--check-bench", "--check-tokens", "1", "--tolerance", "0");
        Assert.True(strict.ExitCode == 1, strict.ToString());
        Assert.Contains("OFF", strict.Stdout, StringComparison.Ordinal);
    }
}
