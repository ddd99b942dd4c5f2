using System.Globalization;
using MoECluster.Gateway;
using MoECluster.Model.Presets;
using MoECluster.Testing;

namespace MoECluster.Cluster.Tests;

/// <summary>
/// Silo processes export their telemetry over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set (as the AppHost and
/// operators set it): MoECluster's and Orleans' metrics, grain-call traces and logs, each under its service name.
/// </summary>
public sealed class TelemetryExportTests
{
    [Fact]
    public async Task Silos_export_MoECluster_and_Orleans_metrics_traces_and_logs_over_OTLP()
    {
        await using var receiver = await OtlpReceiver.StartAsync();
        using var dir = new TempDirectory("moecluster-otel-");
        string model = dir.File("lat");
        SyntheticCheckpoint.Write(model, ModelPresets.Get("tiny").Build(experts: 8), 3);
        int[] ports = FreePorts.Take(4);
        string P(int p) => p.ToString(CultureInfo.InvariantCulture);
        string url = $"http://127.0.0.1:{P(ports[3])}";
        string[] common = ["--model", $"lat={model}", "--shards", "2"];
        using var frontend = BackgroundProcess.Moecluster(receiver.EnvironmentFor("otel-frontend"),
            ["silo", "--role", "frontend", "--name", "frontend", "--silo-port", P(ports[0]), "--gateway-port", P(ports[2]), "--urls", url, .. common]);
        using var expert = BackgroundProcess.Moecluster(receiver.EnvironmentFor("otel-expert"),
            ["silo", "--role", "expert", "--name", "expert-1", "--silo-port", P(ports[1]), "--gateway-port", "0", "--primary", $"127.0.0.1:{P(ports[0])}", .. common]);
        try
        {
            using var http = new HttpClient { BaseAddress = new Uri(url), Timeout = TimeSpan.FromSeconds(30) };
            var client = new GatewayClient(http);
            var deadline = DateTime.UtcNow.AddSeconds(90);
            while (true)
            {
                Assert.False(frontend.HasExited || expert.HasExited, $"a silo exited:\n{frontend.Output}\n---\n{expert.Output}");
                try
                {
                    if ((await client.HealthAsync()).Healthy)
                    {
                        break;
                    }
                }
                catch (HttpRequestException)
                {
                }

                Assert.True(DateTime.UtcNow < deadline, "the two silos did not become healthy in 90 s");
                await Task.Delay(200);
            }

            var served = (await client.ModelsAsync()).Single();
            var x = Enumerable.Range(0, 4 * served.HiddenSize).Select(i => MathF.Cos(i * 0.37f)).ToArray();
            await client.ForwardAsync("lat", served.MoeLayers[0], x, 4, served.HiddenSize, "bf16");

            var wait = TimeSpan.FromSeconds(30);
            await receiver.WaitForAsync("/v1/metrics", wait, "otel-frontend", "moecluster.routed.payload.bytes", "moecluster.tokens");
            await receiver.WaitForAsync("/v1/metrics", wait, "otel-expert", "orleans-");
            await receiver.WaitForAsync("/v1/traces", wait, "otel-frontend", "IMoeRouterGrain");
            await receiver.WaitForAsync("/v1/traces", wait, "otel-expert", "IExpertShardGrain");
            await receiver.WaitForAsync("/v1/logs", wait, "otel-expert");
        }
        finally
        {
            expert.Stop(TimeSpan.FromSeconds(10));
            frontend.Stop(TimeSpan.FromSeconds(10));
        }
    }
}
