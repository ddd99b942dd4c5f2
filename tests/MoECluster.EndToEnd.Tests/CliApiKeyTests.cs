using System.Globalization;
using System.Text.Json.Nodes;
using MoECluster.Model.Checkpoints;
using MoECluster.Model.Layers;
using MoECluster.Model.Presets;
using MoECluster.Testing;

namespace MoECluster.EndToEnd.Tests;

/// <summary>
/// Every CLI client of a gateway can send an API key (<c>--api-key</c> or <c>MOECLUSTER_API_KEY</c>): <c>forward
/// --cluster</c>, <c>load</c>, <c>probe</c> against a keyed cluster, and <c>run</c> whose silos have keys turned on in
/// their environment. Without the key each says what is missing and how to give it, and no key is written to a report.
/// </summary>
public sealed class CliApiKeyTests
{
    private const string Key = "cli-key-5c1e8a90d7b3f246";

    [Fact]
    public async Task Forward_load_and_probe_send_the_key_from_the_flag_or_the_environment()
    {
        using var dir = new TempDirectory("moecluster-cli-keys-");
        string model = dir.File("lat");
        SyntheticCheckpoint.Write(model, ModelPresets.Get("tiny").Build(experts: 8), 29);
        int[] ports = FreePorts.Take(3);
        string P(int p) => p.ToString(CultureInfo.InvariantCulture);
        string url = $"http://127.0.0.1:{P(ports[2])}";
        var keyed = new Dictionary<string, string> { ["MoECluster__Gateway__ApiKeys__0"] = Key };
        var silos = new List<BackgroundProcess>
        {
            BackgroundProcess.Moecluster(keyed, "silo", "--role", "frontend", "--name", "frontend", "--silo-port", P(ports[0]), "--gateway-port", "0",
                "--urls", url, "--model", $"lat={model}", "--shards", "2"),
        };
        try
        {
            using var http = new HttpClient { BaseAddress = new Uri(url) };
            await ProcessWait.UntilAsync("front-end", async () => (await http.GetAsync("/alive")).IsSuccessStatusCode, TimeSpan.FromSeconds(90), silos);
            silos.Add(BackgroundProcess.Moecluster(keyed, "silo", "--role", "expert", "--name", "expert-1", "--silo-port", P(ports[1]), "--gateway-port", "0",
                "--primary", $"127.0.0.1:{P(ports[0])}", "--model", $"lat={model}", "--shards", "2"));
            await ProcessWait.UntilAsync("an expert silo", async () => (await http.GetAsync("/health")).IsSuccessStatusCode, TimeSpan.FromSeconds(90), silos);

            string input = dir.File("x.safetensors");
            float[] x = [.. Enumerable.Range(0, 5 * 64).Select(_ => (float)((Random.Shared.NextDouble() * 2) - 1))];
            HiddenStatesFile.Write(input, x, 5, 64);
            using var reference = MoeModel.Open(model);
            double[] expected = [.. reference.ForwardLayer(1, x, 5).Select(v => (double)v)];

            // forward --cluster: refused without a key, with the way to give one; answered with the flag or the variable.
            var refused = Run([], "forward", "--cluster", url, "--model", model, "--input", input, "--output", dir.File("refused.safetensors"), "--wire", "fp32");
            Assert.Equal(1, refused.ExitCode);
            Assert.Contains("401", refused.Output, StringComparison.Ordinal);
            Assert.Contains("pass --api-key or set MOECLUSTER_API_KEY", refused.Output, StringComparison.Ordinal);
            foreach (var (name, env, args) in new[]
            {
                ("flag", new Dictionary<string, string>(), new[] { "--api-key", Key }),
                ("environment", new Dictionary<string, string> { ["MOECLUSTER_API_KEY"] = Key }, Array.Empty<string>()),
            })
            {
                string output = dir.File($"y-{name}.safetensors");
                var answered = Run(env, ["forward", "--cluster", url, "--model", model, "--input", input, "--output", output, "--wire", "fp32", .. args]);
                Assert.True(answered.ExitCode == 0, $"forward with the key from the {name}: {answered.Output}");
                double error = Metrics.RelativeError(HiddenStatesFile.Read(output, 64, out _), expected);
                Assert.True(error <= 1e-5, $"{name}: relative error {error:E2}");
            }

            // load: every request answered with the key; the report does not hold it.
            string json = dir.File("load.json");
            var load = Run([], "load", "--url", url, "--api-key", Key, "--duration", "2", "--warmup", "0.5", "--concurrency", "2", "--json", json);
            Assert.True(load.ExitCode == 0, load.Output);
            var report = JsonNode.Parse(File.ReadAllText(json))!;
            Assert.True(report["requests"]!["ok"]!.GetValue<long>() > 0, load.Output);
            Assert.Equal(0, report["requests"]!["failed"]!.GetValue<long>());
            Assert.DoesNotContain(Key, File.ReadAllText(json), StringComparison.Ordinal);
            Assert.DoesNotContain(Key, load.Output, StringComparison.Ordinal);
            Assert.Equal(0, report["errors"]!["unauthorized"]!.GetValue<long>());

            // Without the key the gateway refuses the model list and every request: each counted as a 401, none as anything else.
            string unkeyedJson = dir.File("unkeyed.json");
            var unkeyedLoad = Run([], "load", "--url", url, "--duration", "1", "--warmup", "0", "--json", unkeyedJson);
            Assert.NotEqual(0, unkeyedLoad.ExitCode);
            Assert.Contains("pass --api-key or set MOECLUSTER_API_KEY", unkeyedLoad.Output, StringComparison.Ordinal);
            var refusedReport = JsonNode.Parse(File.ReadAllText(unkeyedJson))!;
            long refusedSent = refusedReport["requests"]!["sent"]!.GetValue<long>();
            Assert.True(refusedSent > 0, unkeyedLoad.Output);
            Assert.Equal(0, refusedReport["requests"]!["ok"]!.GetValue<long>());
            Assert.Equal(refusedSent, refusedReport["requests"]!["failed"]!.GetValue<long>());
            Assert.Equal(refusedSent, refusedReport["errors"]!["unauthorized"]!.GetValue<long>());
            Assert.Equal(refusedSent, refusedReport["errors"]!["by_status"]!["401"]!.GetValue<long>());

            // probe of a keyed path.
            Assert.Equal(1, Run([], "probe", url + "/v1/models").ExitCode);
            var probe = Run([], "probe", url + "/v1/models", "--api-key", Key);
            Assert.True(probe.ExitCode == 0, probe.Output);
        }
        finally
        {
            foreach (var silo in silos.AsEnumerable().Reverse())
            {
                silo.Stop(TimeSpan.FromSeconds(10));
                silo.Dispose();
            }
        }
    }

    [Fact]
    public void Run_serves_and_checks_its_sample_traffic_when_the_silos_have_keys_turned_on()
    {
        using var dir = new TempDirectory("moecluster-run-keys-");
        int[] ports = FreePorts.Take(3);
        string P(int p) => p.ToString(CultureInfo.InvariantCulture);
        var env = new Dictionary<string, string> { ["MoECluster__Gateway__ApiKeys__0"] = Key, ["MOECLUSTER_API_KEY"] = Key };
        var run = Run(env, "run", "--once", "--preset", "tiny", "--models-dir", dir.File("models"), "--expert-silos", "1", "--tokens", "16",
            "--urls", $"http://127.0.0.1:{P(ports[0])}", "--silo-port", P(ports[1]), "--gateway-port", P(ports[2]));
        Assert.True(run.ExitCode == 0, run.Output);
        Assert.DoesNotContain(Key, run.Output, StringComparison.Ordinal);
    }

    private static (int ExitCode, string Output) Run(Dictionary<string, string> environment, params string[] args)
    {
        using var process = BackgroundProcess.Moecluster(environment, args);
        Assert.True(process.WaitForExit(TimeSpan.FromMinutes(3)), $"moecluster {string.Join(' ', args)} did not finish:\n{process.Output}");
        return (process.ExitCode, process.Output);
    }
}
