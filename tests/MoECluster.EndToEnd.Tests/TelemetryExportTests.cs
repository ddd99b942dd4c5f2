using System.Globalization;
using MoECluster.Cluster.Contracts;
using MoECluster.Gateway;
using MoECluster.Model.Presets;
using MoECluster.Testing;

namespace MoECluster.EndToEnd.Tests;

/// <summary>
/// Silo processes export their telemetry over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set (as the AppHost and
/// operators set it): MoECluster's and Orleans' metrics, grain-call traces and logs, each under its service name; so does
/// <c>moecluster load</c>, whose request spans are the parents of the gateway's.
/// </summary>
public sealed class TelemetryExportTests
{
    [Fact]
    public async Task Silos_and_the_load_client_export_over_OTLP_and_a_load_request_is_one_trace_from_client_to_expert_shard()
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
            await ProcessWait.UntilAsync("a healthy cluster of two silos", async () => (await client.HealthAsync()).Healthy, TimeSpan.FromSeconds(90), frontend, expert);

            var served = (await client.ModelsAsync()).Single();
            var x = Enumerable.Range(0, 4 * served.HiddenSize).Select(i => MathF.Cos(i * 0.37f)).ToArray();
            await client.ForwardAsync("lat", served.MoeLayers[0], x, 4, served.HiddenSize, "bf16");

            var wait = TimeSpan.FromSeconds(30);
            await receiver.WaitForAsync("/v1/metrics", wait, "otel-frontend", "moecluster.routed.payload.bytes", "moecluster.tokens");
            await receiver.WaitForAsync("/v1/metrics", wait, "otel-expert", "orleans-");
            await receiver.WaitForAsync("/v1/traces", wait, "otel-frontend", "IMoeRouterGrain");
            await receiver.WaitForAsync("/v1/traces", wait, "otel-expert", "IExpertShardGrain");
            await receiver.WaitForAsync("/v1/logs", wait, "otel-expert");

            // The load client exports too, and its requests carry the trace into the cluster: a client span of
            // moecluster load is the parent of the gateway's server span, whose trace reaches the expert shard.
            // It samples 2 new traces a second, so most of its requests arrive with a traceparent that says "not sampled".
            var loadEnvironment = receiver.EnvironmentFor("otel-load");
            loadEnvironment["MoECluster__Telemetry__TracesPerSecond"] = "2";
            using var load = BackgroundProcess.Moecluster(loadEnvironment,
                "load", "--url", url, "--mode", "closed", "--concurrency", "2", "--duration", "2", "--warmup", "0", "--tokens", "4");
            Assert.True(load.WaitForExit(TimeSpan.FromSeconds(60)), "the load run did not finish:\n" + load.Output);
            Assert.True(load.ExitCode == 0, load.Output);
            await receiver.WaitForAsync("/v1/metrics", wait, "otel-load", "http.client.request.duration");
            var spans = receiver.Spans();
            var clientSpans = spans.Where(s => s.Service == "otel-load" && s.Kind == OtlpSpan.KindClient).ToList();
            Assert.NotEmpty(clientSpans);
            var serverSpans = spans.Where(s => s.Service == "otel-frontend" && s.Kind == OtlpSpan.KindServer && s.Name.Contains("/forward", StringComparison.Ordinal));
            var joined = serverSpans.Where(server => clientSpans.Any(c => c.SpanId == server.ParentSpanId && c.TraceId == server.TraceId)).ToList();
            Assert.NotEmpty(joined);
            Assert.Contains(spans, s => s.Service == "otel-expert" && joined.Any(j => j.TraceId == s.TraceId) && s.Name.Contains("IExpertShardGrain", StringComparison.Ordinal));

            // Housekeeping makes no traces: every silo reads the placement every second (PlacementRefresher), untraced,
            // so the trace view holds requests and the sampler's budget goes to them. (A request reads it too: /stats,
            // which moecluster load asks before and after its run; those spans belong to the request's trace.)
            var requests = spans.Where(s => s.Name.StartsWith("GET ", StringComparison.Ordinal) || s.Name.StartsWith("POST ", StringComparison.Ordinal))
                .Select(s => s.TraceId).ToHashSet();
            var housekeeping = spans.Where(s => s.Name.Contains("IExpertPlacementGrain", StringComparison.Ordinal) && !requests.Contains(s.TraceId)).ToList();
            Assert.True(housekeeping.Count == 0, $"{housekeeping.Count} placement spans were exported, e.g. {string.Join("; ", housekeeping.Take(4))}");

            // A trace is kept or dropped whole: the load client samples at most its budget of requests, and the grain calls
            // of a request it did not sample are not traced either (they used to start traces of their own at the router
            // grain and the expert shards, on the budget of the requests that are traced).
            int sent = int.Parse(load.Output.Split('\n').Single(l => l.StartsWith("all ", StringComparison.Ordinal)).Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture);
            Assert.True(clientSpans.Count < sent, $"the load client traced {clientSpans.Count} of {sent} requests: none was left unsampled");
            var orphans = spans.Where(s => (s.Name.StartsWith("IMoeRouterGrain/", StringComparison.Ordinal) || s.Name.StartsWith("IExpertShardGrain/", StringComparison.Ordinal))
                && s.ParentSpanId.Length == 0).ToList();
            Assert.True(orphans.Count == 0, $"{orphans.Count} grain spans of a forward began a trace of their own, e.g. {string.Join("; ", orphans.Take(4))}");
        }
        finally
        {
            expert.Stop(TimeSpan.FromSeconds(10));
            frontend.Stop(TimeSpan.FromSeconds(10));
        }
    }
}
