using System.Globalization;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using MoECluster.Model.Layers;
using MoECluster.Testing;
using MoECluster.Wire;

namespace MoECluster.EndToEnd.Tests;

/// <summary><c>moecluster run</c> as a user runs it: real processes, real sockets, nothing left behind.</summary>
public sealed partial class RunCommandTests
{
    private static int[] SiloPids(string output)
    {
        var match = PidsLine().Match(output);
        Assert.True(match.Success, $"no 'pids' line in:\n{output}");
        return [.. match.Groups[1].Value.Split(", ").Select(p => int.Parse(p, CultureInfo.InvariantCulture))];
    }

    private static void AssertAllGone(int[] pids)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
        while (pids.Any(BackgroundProcess.IsAlive) && DateTime.UtcNow < deadline)
        {
            Thread.Sleep(200);
        }

        Assert.DoesNotContain(pids, BackgroundProcess.IsAlive);
    }

    private static string[] Ports(out string url)
    {
        int[] p = FreePorts.Take(3);
        url = $"http://127.0.0.1:{p[2]}";
        return ["--urls", url, "--gateway-port", p[1].ToString(CultureInfo.InvariantCulture),
            "--silo-port", (20000 + Random.Shared.Next(0, 20000)).ToString(CultureInfo.InvariantCulture)];
    }

    [Fact]
    [System.Runtime.Versioning.SupportedOSPlatform("linux")]
    public void Run_once_reports_routed_bytes_of_both_designs_and_stops_every_process()
    {
        using var dir = new TempDirectory();
        string report = dir.File("report.json");
        var run = ChildProcess.Run("dotnet", [ChildProcess.CliDll, "run", "--preset", "tiny", "--experts", "16", "--once", "--report", report,
            "--tokens", "200", "--models-dir", dir.File("models"), .. Ports(out _)], TimeSpan.FromMinutes(4));
        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Contains("every cluster output matches the in-process forward", run.Stdout, StringComparison.Ordinal);
        AssertAllGone(SiloPids(run.Stdout));

        var json = JsonNode.Parse(File.ReadAllText(report))!;
        Assert.True(json["checks_passed"]!.GetValue<bool>());
        foreach (var r in json["results"]!.AsArray())
        {
            Assert.Equal(r!["predicted_payload_bytes"]!.GetValue<long>(), r["payload_bytes"]!.GetValue<long>());
            Assert.True(r["relative_error_vs_in_process"]!.GetValue<double>() <= 1e-2);
            Assert.True(r["socket_bytes_during_request"]!.GetValue<long>() > r["message_bytes"]!.GetValue<long>());

            // The silos talk mutual TLS with the certificates the launcher made; TCP carries the TLS records on top.
            Assert.True(r["tls"]!.GetValue<bool>());
            Assert.True(r["tcp_bytes_during_request"]!.GetValue<long>() > r["socket_bytes_during_request"]!.GetValue<long>());
        }

        Assert.Contains($"TLS: made the local cluster's CA and certificate in {dir.File("models")}/tls", run.Stdout, StringComparison.Ordinal);
        Assert.Contains("TCP bytes / Orleans socket bytes = ", run.Stdout, StringComparison.Ordinal);
        Assert.Equal("600", Convert.ToString((int)File.GetUnixFileMode(dir.File("models/tls/tls.key")), 8));

        var ratio = json["standard_over_latent"]!;
        Assert.Equal(4.0, ratio["analytic_d_over_l"]!.GetValue<double>());
        Assert.Equal(ratio["payload_predicted"]!.GetValue<double>(), ratio["payload_measured"]!.GetValue<double>());
        var silos = json["placement"]!.AsArray();
        Assert.Equal(3, silos.Count);
        Assert.All(silos.Where(s => s!["role"]!.GetValue<string>() == "frontend"), s => Assert.Empty(s!["shards"]!.AsArray()));
    }

    [Fact]
    [System.Runtime.Versioning.SupportedOSPlatform("linux")]
    public void Run_once_with_fp16_dispatch_and_fp32_combine_reports_2_and_4_bytes_an_element_each_way()
    {
        using var dir = new TempDirectory();
        string report = dir.File("report.json");
        var run = ChildProcess.Run("dotnet", [ChildProcess.CliDll, "run", "--preset", "tiny", "--experts", "16", "--once", "--report", report,
            "--tokens", "16", "--backend", "managed", "--wire-dispatch", "fp16", "--wire-combine", "fp32", "--models-dir", dir.File("models"), .. Ports(out _)],
            TimeSpan.FromMinutes(4));
        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Contains("wire fp16/fp32 (dispatch fp16, combine fp32)", run.Stdout, StringComparison.Ordinal);

        var json = JsonNode.Parse(File.ReadAllText(report))!;
        Assert.Equal(("fp16/fp32", "fp16", "fp32"), (json["wire"]!.GetValue<string>(), json["wire_dispatch"]!.GetValue<string>(), json["wire_combine"]!.GetValue<string>()));
        Assert.True(json["checks_passed"]!.GetValue<bool>(), run.Stdout);
        var results = json["results"]!.AsArray();
        Assert.Equal(2, results.Count);
        foreach (var r in results)
        {
            long elements = r!["routed_rows"]!.GetValue<long>() * r["routed_width"]!.GetValue<int>();
            Assert.True(elements > 0);
            Assert.Equal(("fp16/fp32", "fp16", "fp32"), (r["wire"]!.GetValue<string>(), r["wire_dispatch"]!.GetValue<string>(), r["wire_combine"]!.GetValue<string>()));
            Assert.Equal(2 * elements, r["dispatch_payload_bytes"]!.GetValue<long>());
            Assert.Equal(4 * elements, r["combine_payload_bytes"]!.GetValue<long>());
            Assert.Equal((2.0, 4.0), (r["dispatch_bytes_per_element"]!.GetValue<double>(), r["combine_bytes_per_element"]!.GetValue<double>()));
            Assert.Equal(r["payload_bytes"]!.GetValue<long>(), r["predicted_payload_bytes"]!.GetValue<long>());
            Assert.Equal(WirePair.Parse("fp16/fp32").ParityTolerance, r["tolerance"]!.GetValue<double>());
        }
    }

    [Fact]
    public void A_wire_sweep_errors_agree_with_the_independent_numpy_model_of_the_same_quantization_within_10_percent()
    {
        // The cluster's error of each pair (block-scaled types included) against the in-process forward, and the error
        // tests/tools/wire_error.py computes for the same grouping into shard messages and the same quantization, on the
        // inputs and weights the run dumped; both input kinds, latent and standard.
        const string Pairs = "bf16/bf16,mxfp8-e4m3/bf16,mxfp8-e5m2/mxfp8-e5m2,mxfp6-e3m2/bf16,mxfp4/mxfp8-e4m3,nvfp4/nvfp4,fp16/fp32";
        using var dir = new TempDirectory();
        string report = dir.File("report.json"), dump = dir.File("dump"), models = dir.File("models");
        var run = ChildProcess.Run("dotnet", [ChildProcess.CliDll, "run", "--preset", "tiny", "--experts", "16", "--once", "--report", report,
            "--tokens", "32", "--backend", "managed", "--wire-sweep", Pairs, "--inputs", "gaussian,outliers", "--dump", dump, "--models-dir", models, .. Ports(out _)],
            TimeSpan.FromMinutes(4));
        Assert.True(run.ExitCode == 0, run.ToString());
        var results = JsonNode.Parse(File.ReadAllText(report))!["results"]!.AsArray().OfType<JsonObject>().ToList();
        Assert.Equal(2 * 2 * 7, results.Count);
        foreach (var (id, preset) in new[] { ("latent", "tiny"), ("standard", "tiny-standard") })
        {
            foreach (string kind in new[] { "gaussian", "outliers" })
            {
                var numpy = ChildProcess.Run(IndependentModel.Python, [Path.Combine(Path.GetDirectoryName(IndependentModel.Script)!, "wire_error.py"), "sweep",
                    "--model", Path.Combine(models, $"{preset}-16x1"), "--layer", "1", "--shards", "4", "--dump", dump, "--id", id, "--input-kind", kind, "--pairs", Pairs]);
                Assert.True(numpy.ExitCode == 0, numpy.ToString());
                foreach (var line in numpy.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries))
                {
                    var emulated = JsonNode.Parse(line)!;
                    string wire = emulated["wire"]!.GetValue<string>();
                    var measured = results.Single(r => r["model"]!.GetValue<string>() == id && r["input"]!.GetValue<string>() == kind && r["wire"]!.GetValue<string>() == wire);
                    double ours = measured["relative_error_vs_in_process"]!.GetValue<double>(), theirs = emulated["relative_error"]!.GetValue<double>();
                    Assert.True(Math.Abs(ours / theirs - 1) <= 0.10, $"{id} {kind} {wire}: cluster {ours:E3}, numpy {theirs:E3}");
                    Assert.Equal(measured["dispatch_payload_bytes"]!.GetValue<long>(), emulated["dispatch_payload_bytes"]!.GetValue<long>());
                    Assert.Equal(measured["combine_payload_bytes"]!.GetValue<long>(), emulated["combine_payload_bytes"]!.GetValue<long>());
                    Assert.Equal(measured["routed_rows"]!.GetValue<long>(), emulated["routed_rows"]!.GetValue<long>());
                }
            }
        }
    }

    [Theory]
    [InlineData("fp32", 1e-4)]
    [InlineData("bf16", 1e-2)]
    public async Task Forward_on_a_cluster_serving_an_independent_checkpoint_matches_the_float64_reference(string wire, double tolerance)
    {
        using var dir = new TempDirectory();
        // Over a bf16 wire the stack's second layer routes an input rounded in the first; the model keeps every top-K
        // boundary at least 5e-3 wide then, so the check is of the arithmetic, not of a routing coin flip (a 4e-4 gap
        // flipped once: stack error 1.9e-2).
        var model = IndependentModel.Generate(dir.Path, "--latent --moe-layers 2 --tokens 9" + (wire == "bf16" ? " --min-gap 5e-3" : ""));
        using var cluster = BackgroundProcess.Moecluster(["run", "--model", model.ModelPath, "--tokens", "4", "--shards", "3", .. Ports(out string url)]);
        Assert.True(await cluster.WaitForOutputAsync("serving at", TimeSpan.FromMinutes(3)), cluster.Output);
        int[] pids = SiloPids(cluster.Output);
        try
        {
            foreach (int layer in model.MoeLayers)
            {
                string output = dir.File($"cluster-{layer}.safetensors");
                var fwd = ChildProcess.Moecluster("forward", "--cluster", url, "--input", model.InputPath, "--output", output,
                    "--layer", layer.ToString(CultureInfo.InvariantCulture), "--wire", wire);
                Assert.True(fwd.ExitCode == 0, fwd.ToString());
                double error = Metrics.RelativeError(IndependentModel.ReadOutput(output), model.Expected($"layer_{layer}"));
                Assert.True(error <= tolerance, $"seed {model.Seed} layer {layer} wire {wire}: {error:E2}");
            }

            var stack = ChildProcess.Moecluster("forward", "--cluster", url, "--input", model.InputPath, "--output", dir.File("cluster-stack.safetensors"), "--stack", "--wire", wire);
            Assert.True(stack.ExitCode == 0, stack.ToString());
            double stackError = Metrics.RelativeError(IndependentModel.ReadOutput(dir.File("cluster-stack.safetensors")), model.Expected("stack"));
            Assert.True(stackError <= tolerance, $"seed {model.Seed} stack wire {wire}: {stackError:E2}");

            // The default layer on the cluster is the first MoE layer, as in process.
            var byDefault = ChildProcess.Moecluster("forward", "--cluster", url, "--input", model.InputPath, "--output", dir.File("cluster-default.safetensors"), "--wire", wire);
            Assert.True(byDefault.ExitCode == 0, byDefault.ToString());
            using var local = MoeModel.Open(model.ModelPath);
            float[] x = MoECluster.Model.Checkpoints.HiddenStatesFile.Read(model.InputPath, model.HiddenSize, out int tokens);
            float[] inProcess = local.ForwardLayer(model.MoeLayers[0], x, tokens);
            double vsLocal = Metrics.RelativeError(IndependentModel.ReadOutput(dir.File("cluster-default.safetensors")), [.. inProcess.Select(v => (double)v)]);
            Assert.True(vsLocal <= tolerance, $"cluster vs in-process: {vsLocal:E2}");

            var refused = ChildProcess.Moecluster("forward", "--cluster", url, "--input", model.InputPath, "--output", dir.File("x.safetensors"), "--layer", "9999");
            Assert.Equal(2, refused.ExitCode);
            Assert.Contains("not an MoE layer", refused.Stderr, StringComparison.Ordinal);
        }
        finally
        {
            Assert.True(cluster.Stop(TimeSpan.FromSeconds(30)), "moecluster run did not stop on SIGTERM:\n" + cluster.Output);
            AssertAllGone(pids);
        }
    }

    [GeneratedRegex(@"\(pids ([0-9, ]+)\)")]
    private static partial Regex PidsLine();
}
