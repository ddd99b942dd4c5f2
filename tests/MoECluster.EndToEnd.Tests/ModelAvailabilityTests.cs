using System.Globalization;
using MoECluster.Gateway;
using MoECluster.Model.Layers;
using MoECluster.Model.Presets;
using MoECluster.Testing;

namespace MoECluster.EndToEnd.Tests;

/// <summary>
/// An expert silo whose model directory is not there yet says so in its readiness (<c>/health</c> 503 naming the
/// model), a forward that needs it fails as the server's fault (5xx, not 4xx), and once the directory appears the silo
/// opens it on the next use: health turns 200 and forwards are answered, with no restart.
/// </summary>
public sealed class ModelAvailabilityTests
{
    [Fact]
    public async Task An_expert_silo_picks_up_a_model_directory_that_appears_after_its_first_use()
    {
        using var dir = new TempDirectory("moecluster-late-model-");
        string present = dir.File("present");
        string late = dir.File("late");
        SyntheticCheckpoint.Write(present, ModelPresets.Get("tiny").Build(experts: 8), 17);
        int[] ports = FreePorts.Take(4);
        string P(int p) => p.ToString(CultureInfo.InvariantCulture);
        string url = $"http://127.0.0.1:{P(ports[2])}";
        string expertUrl = $"http://127.0.0.1:{P(ports[3])}";
        var silos = new List<BackgroundProcess>
        {
            BackgroundProcess.Moecluster(["silo", "--role", "frontend", "--name", "frontend", "--silo-port", P(ports[0]), "--gateway-port", "0",
                "--urls", url, "--model", $"lat={present}", "--shards", "2"]),
        };
        try
        {
            using var http = new HttpClient { BaseAddress = new Uri(url), Timeout = TimeSpan.FromSeconds(60) };
            var client = new GatewayClient(http);
            await ProcessWait.UntilAsync("front-end", async () => (await http.GetAsync("/alive")).IsSuccessStatusCode, TimeSpan.FromSeconds(90), silos);
            silos.Add(BackgroundProcess.Moecluster(["silo", "--role", "expert", "--name", "expert-1", "--silo-port", P(ports[1]), "--gateway-port", "0",
                "--primary", $"127.0.0.1:{P(ports[0])}", "--urls", expertUrl, "--model", $"lat={late}", "--shards", "2"]));
            await ProcessWait.UntilAsync("the expert silo in the cluster", async () => (await client.HealthAsync()).Body?["expert_silos"]?.GetValue<int>() == 1, TimeSpan.FromSeconds(90), silos);

            // Not ready: membership says Active, but the model cannot be opened; the body names it.
            using var expertHttp = new HttpClient { BaseAddress = new Uri(expertUrl), Timeout = TimeSpan.FromSeconds(10) };
            await ProcessWait.UntilAsync("the expert's /alive", async () => (await expertHttp.GetAsync("/alive")).IsSuccessStatusCode, TimeSpan.FromSeconds(60), silos);
            using (var health = await expertHttp.GetAsync("/health"))
            {
                string body = await health.Content.ReadAsStringAsync();
                Assert.True((int)health.StatusCode == 503, $"expert /health with its model missing: {(int)health.StatusCode} {body}");
                Assert.Contains("cannot open model(s) lat", body, StringComparison.Ordinal);
            }

            int d = 64;
            float[] x = [.. Enumerable.Range(0, 4 * d).Select(_ => (float)((Random.Shared.NextDouble() * 2) - 1))];
            var refused = await Assert.ThrowsAsync<GatewayException>(() => client.ForwardAsync("lat", 1, x, 4, d, "fp32"));
            Assert.True(refused.StatusCode >= 500, $"a forward the cluster cannot serve is the server's fault, got {refused.StatusCode}: {refused.Message}");
            Assert.Contains(late, refused.Message, StringComparison.Ordinal);

            // The directory appears (written elsewhere and moved in, as a deployment would): no restart needed.
            string staging = dir.File("staging");
            SyntheticCheckpoint.Write(staging, ModelPresets.Get("tiny").Build(experts: 8), 17);
            Directory.Move(staging, late);
            await ProcessWait.UntilAsync("the expert's /health to turn 200", async () => (await expertHttp.GetAsync("/health")).IsSuccessStatusCode, TimeSpan.FromSeconds(15), silos);
            var answer = await client.ForwardAsync("lat", 1, x, 4, d, "fp32");
            using var reference = MoeModel.Open(present);
            double error = Metrics.RelativeError(answer.HiddenStates.Decode(), [.. reference.ForwardLayer(1, x, 4).Select(v => (double)v)]);
            Assert.True(error <= 1e-5, $"after the model appeared: relative error {error:E2}");
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
}
