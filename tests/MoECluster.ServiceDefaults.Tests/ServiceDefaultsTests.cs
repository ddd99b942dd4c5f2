using System.Diagnostics;
using System.Diagnostics.Metrics;
using System.Net;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Logging;
using MoECluster.Testing;

namespace MoECluster.ServiceDefaults.Tests;

public sealed class ServiceDefaultsTests
{
    [Fact]
    public async Task Health_is_503_with_the_failing_checks_description_and_every_checks_data()
    {
        await using var app = await StartAsync(new Dictionary<string, string?>(), builder => builder.Services.AddHealthChecks()
            .AddCheck("cluster", () => HealthCheckResult.Unhealthy("waiting for expert silos", data: new Dictionary<string, object> { ["expert_silos"] = 0 })));
        using var http = new HttpClient { BaseAddress = app.Url };

        var health = await http.GetAsync("/health");
        Assert.Equal(HttpStatusCode.ServiceUnavailable, health.StatusCode);
        var body = JsonNode.Parse(await health.Content.ReadAsStringAsync())!;
        Assert.Equal("waiting for expert silos", body["status"]!.GetValue<string>());
        Assert.Equal(0, body["expert_silos"]!.GetValue<int>());
        Assert.Equal("Unhealthy", body["checks"]!["cluster"]!["status"]!.GetValue<string>());
        Assert.Equal("Healthy", body["checks"]!["self"]!["status"]!.GetValue<string>());

        // Liveness runs only the checks tagged "live": the process itself is fine.
        var alive = await http.GetAsync("/alive");
        Assert.Equal(HttpStatusCode.OK, alive.StatusCode);
        var aliveBody = JsonNode.Parse(await alive.Content.ReadAsStringAsync())!;
        Assert.Equal("ok", aliveBody["status"]!.GetValue<string>());
        Assert.Null(aliveBody["checks"]!["cluster"]);
    }

    [Fact]
    public async Task Health_is_200_ok_when_every_check_passes()
    {
        await using var app = await StartAsync(new Dictionary<string, string?>(), builder => builder.Services.AddHealthChecks()
            .AddCheck("cluster", () => HealthCheckResult.Healthy("ready", new Dictionary<string, object> { ["expert_silos"] = 2 })));
        using var http = new HttpClient { BaseAddress = app.Url };

        var health = await http.GetAsync("/health");
        Assert.Equal(HttpStatusCode.OK, health.StatusCode);
        var body = JsonNode.Parse(await health.Content.ReadAsStringAsync())!;
        Assert.Equal("ok", body["status"]!.GetValue<string>());
        Assert.Equal(2, body["expert_silos"]!.GetValue<int>());
    }

    [Fact]
    public async Task With_an_OTLP_endpoint_traces_metrics_and_logs_reach_it_under_the_service_name()
    {
        await using var receiver = await OtlpReceiver.StartAsync();
        string service = "svc-" + Guid.NewGuid().ToString("N")[..8];
        string meterName = "MoECluster.Tests." + service;
        await using var app = await StartAsync(
            receiver.EnvironmentFor(service).ToDictionary(kv => kv.Key, kv => (string?)kv.Value),
            builder => { },
            sources => sources.Meters.Add(meterName),
            app => app.MapGet("/work", (ILoggerFactory logs) =>
            {
                TestLog.Routed(logs.CreateLogger("MoECluster.Tests"), 4096);
                return "done";
            }));
        using var meter = new Meter(meterName);
        var counter = meter.CreateCounter<long>("moecluster.test.bytes");
        counter.Add(123);
        using var http = new HttpClient { BaseAddress = app.Url };
        Assert.Equal("done", await http.GetStringAsync("/work"));

        await receiver.WaitForAsync("/v1/traces", TimeSpan.FromSeconds(20), "/work", service);
        await receiver.WaitForAsync("/v1/logs", TimeSpan.FromSeconds(20), "routed", service);
        await receiver.WaitForAsync("/v1/metrics", TimeSpan.FromSeconds(20), "moecluster.test.bytes", service);
    }

    /// <summary>
    /// A collector that refuses connections or accepts them and never answers must not hold a stopping process: the last
    /// flush gets <see cref="ServiceDefaultsExtensions.TelemetryFlushOnStop"/>, then the process goes (Aspire's stop command
    /// gives a process 20 s; before, traces, metrics and logs each waited out their exporter's 10-s timeout and retries).
    /// </summary>
    [Theory]
    [InlineData("refuses")]
    [InlineData("never answers")]
    public async Task A_process_whose_OTLP_collector_refuses_or_never_answers_stops_within_its_flush_budget(string collector)
    {
        using var listener = new System.Net.Sockets.TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        int port = ((IPEndPoint)listener.LocalEndpoint).Port;
        var accepted = new List<System.Net.Sockets.TcpClient>();
        if (collector == "refuses")
        {
            listener.Stop();
        }
        else
        {
            _ = Task.Run(async () =>
            {
                try
                {
                    while (true)
                    {
                        var client = await listener.AcceptTcpClientAsync();
                        lock (accepted)
                        {
                            accepted.Add(client);
                        }
                    }
                }
                catch (Exception e) when (e is ObjectDisposedException or System.Net.Sockets.SocketException)
                {
                }
            });
        }

        string service = "svc-" + Guid.NewGuid().ToString("N")[..8];
        var settings = new Dictionary<string, string?>
        {
            ["OTEL_EXPORTER_OTLP_ENDPOINT"] = $"http://127.0.0.1:{port}",
            ["OTEL_EXPORTER_OTLP_PROTOCOL"] = "grpc",
            ["OTEL_DOTNET_EXPERIMENTAL_OTLP_RETRY"] = "in_memory",   // as Aspire sets it
            ["OTEL_SERVICE_NAME"] = service,
        };
        var app = await StartAsync(settings, builder => builder.Logging.SetMinimumLevel(LogLevel.Information), map: a => a.MapGet("/work", (ILoggerFactory logs) =>
        {
            TestLog.Routed(logs.CreateLogger("MoECluster.Tests"), 4096);
            return "done";
        }));
        using (var http = new HttpClient { BaseAddress = app.Url })
        {
            for (int i = 0; i < 5; i++)
            {
                Assert.Equal("done", await http.GetStringAsync("/work"));
            }
        }

        var clock = Stopwatch.StartNew();
        await app.DisposeAsync();
        clock.Stop();
        listener.Stop();
        lock (accepted)
        {
            accepted.ForEach(c => c.Dispose());
        }

        var budget = ServiceDefaultsExtensions.TelemetryFlushOnStop;
        Assert.True(clock.Elapsed < budget + TimeSpan.FromSeconds(2), $"stop and dispose took {clock.Elapsed.TotalSeconds:F1} s with a collector that {collector} (flush budget {budget.TotalSeconds:F0} s)");
    }

    [Fact]
    public async Task A_client_whose_OTLP_collector_never_answers_exits_within_its_flush_budget()
    {
        using var listener = new System.Net.Sockets.TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var accepted = Task.Run(async () => await listener.AcceptTcpClientAsync());
        await using var app = await StartAsync([], builder => { });
        string[] variables = ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL"];
        var before = variables.ToDictionary(v => v, Environment.GetEnvironmentVariable);
        Environment.SetEnvironmentVariable("OTEL_EXPORTER_OTLP_ENDPOINT", $"http://127.0.0.1:{((IPEndPoint)listener.LocalEndpoint).Port}");
        Environment.SetEnvironmentVariable("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc");
        try
        {
            var telemetry = ServiceDefaultsExtensions.StartClientTelemetry("client-test");
            Assert.NotNull(telemetry);
            using (var http = new HttpClient { BaseAddress = app.Url })
            {
                await http.GetAsync("/health");
            }

            var clock = Stopwatch.StartNew();
            telemetry.Dispose();
            var budget = ServiceDefaultsExtensions.TelemetryFlushOnStop;
            Assert.True(clock.Elapsed < budget + TimeSpan.FromSeconds(2), $"the client's telemetry took {clock.Elapsed.TotalSeconds:F1} s to stop (flush budget {budget.TotalSeconds:F0} s)");
            Assert.True(accepted.IsCompleted, "the exporter never connected to the collector");
        }
        finally
        {
            foreach (var (variable, value) in before)
            {
                Environment.SetEnvironmentVariable(variable, value);
            }

            listener.Stop();
            if (accepted.IsCompletedSuccessfully)
            {
                (await accepted).Dispose();
            }
        }
    }

    [Fact]
    public void The_rate_limiting_sampler_keeps_at_most_its_rate_of_new_traces_and_refills_with_time()
    {
        long now = 0;
        var sampler = new RateLimitingSampler(10, () => now);
        int Sampled(int calls) => Enumerable.Range(0, calls).Count(_ =>
            sampler.ShouldSample(new OpenTelemetry.Trace.SamplingParameters(default, ActivityTraceId.CreateRandom(), "span", ActivityKind.Server)).Decision
                == OpenTelemetry.Trace.SamplingDecision.RecordAndSample);

        Assert.Equal(10, Sampled(100));                  // a burst of up to one second's worth
        now += Stopwatch.Frequency / 2;
        Assert.Equal(5, Sampled(100));                   // half a second later, half as many
        now += Stopwatch.Frequency * 60;
        Assert.Equal(10, Sampled(100));                  // a quiet minute does not save up more than the burst
        Assert.Equal(0, Sampled(100));
        Assert.Equal(0, Enumerable.Range(0, 5).Count(_ => new RateLimitingSampler(0).ShouldSample(
            new OpenTelemetry.Trace.SamplingParameters(default, ActivityTraceId.CreateRandom(), "span", ActivityKind.Server)).Decision == OpenTelemetry.Trace.SamplingDecision.RecordAndSample));
    }

    [Fact]
    public void Housekeeping_traces_draw_on_their_own_budget_and_never_take_a_requests_credit()
    {
        long now = 0;
        var sampler = new TraceBudgetSampler(requestsPerSecond: 2, housekeepingPerSecond: 1, () => now);
        bool Sampled(string name, ActivityKind kind) => sampler.ShouldSample(
            new OpenTelemetry.Trace.SamplingParameters(default, ActivityTraceId.CreateRandom(), name, kind)).Decision == OpenTelemetry.Trace.SamplingDecision.RecordAndSample;
        int Count(int calls, string name, ActivityKind kind) => Enumerable.Range(0, calls).Count(_ => Sampled(name, kind));

        // Orleans' own work (membership reads, timers, statistics) every second: one trace a second of it at most...
        Assert.Equal(1, Count(50, "IMembershipTable/ReadAllAsync", ActivityKind.Client));
        Assert.Equal(0, Count(50, "IGrainTimerInvoker/InvokeCallbackAsync", ActivityKind.Server));
        // ...and a request after it still finds its budget: an incoming HTTP request, or moecluster load's outgoing one.
        Assert.True(Sampled(TraceBudgetSampler.HttpServerActivity, ActivityKind.Server));
        Assert.True(Sampled(TraceBudgetSampler.HttpClientActivity, ActivityKind.Client));
        Assert.False(Sampled(TraceBudgetSampler.HttpServerActivity, ActivityKind.Server));
        Assert.False(TraceBudgetSampler.IsRequest(TraceBudgetSampler.HttpServerActivity, ActivityKind.Client));

        // A probe known only after sampling gives its credit back, never beyond the burst.
        sampler.ReturnRequestCredit();
        Assert.True(Sampled(TraceBudgetSampler.HttpServerActivity, ActivityKind.Server));
        Assert.False(Sampled(TraceBudgetSampler.HttpServerActivity, ActivityKind.Server));
        now += Stopwatch.Frequency * 10;
        for (int i = 0; i < 5; i++)
        {
            sampler.ReturnRequestCredit();
        }

        Assert.Equal(2, Count(10, TraceBudgetSampler.HttpServerActivity, ActivityKind.Server));
        Assert.Equal(1, Count(10, "ISiloControl/GetRuntimeStatistics", ActivityKind.Client));
    }

    [Fact]
    public async Task Health_probes_and_metrics_scrapes_take_no_trace_credit_from_the_request_after_them()
    {
        await using var receiver = await OtlpReceiver.StartAsync();
        var (service, settings) = TracedAt(receiver, "1");
        // The receiver runs in this process, and its requests are requests to the sampler too: no metric or log export
        // (an HTTP request to it) before /work.
        settings["OTEL_METRIC_EXPORT_INTERVAL"] = "60000";
        settings["OTEL_BLRP_SCHEDULE_DELAY"] = "60000";
        await using var app = await StartAsync(settings, builder => { }, map: a => a.MapGet("/work", () => "w"));
        using var http = new HttpClient(new SocketsHttpHandler { ActivityHeadersPropagator = null }) { BaseAddress = app.Url };
        async Task ProbeAsync(int rounds)
        {
            for (int i = 0; i < rounds; i++)
            {
                (await http.GetAsync("/health")).Dispose();
                (await http.GetAsync("/alive")).Dispose();
                (await http.GetAsync("/metrics")).Dispose();
            }
        }

        await ProbeAsync(1);                          // the first of each is slow (JIT)
        await Task.Delay(TimeSpan.FromSeconds(1.1));  // a full budget: one credit
        var clock = Stopwatch.StartNew();
        await ProbeAsync(10);

        Assert.Equal("w", await http.GetStringAsync("/work"));
        // One credit a second: had a probe kept the one it took, /work (within the same second) would not be traced.
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(1), $"the probes took {clock.Elapsed}: the budget refilled meanwhile, the test shows nothing");
        await receiver.WaitForAsync("/v1/traces", TimeSpan.FromSeconds(20), "/work", service);
        Assert.DoesNotContain(receiver.Bodies("/v1/traces"), body => body.Contains("/health", StringComparison.Ordinal) || body.Contains("/metrics", StringComparison.Ordinal));
    }

    [Fact]
    public void The_trace_sampler_is_rate_limited_by_default_left_to_OTEL_TRACES_SAMPLER_when_set_and_a_bad_rate_is_an_error()
    {
        static IConfiguration Config(params (string Key, string Value)[] pairs) =>
            new ConfigurationBuilder().AddInMemoryCollection(pairs.ToDictionary(p => p.Key, p => (string?)p.Value)).Build();

        Assert.Contains("RateLimitingSampler{10/s}", ServiceDefaultsExtensions.TraceSampler(Config())!.Description, StringComparison.Ordinal);
        Assert.Contains("RateLimitingSampler{2.5/s}", ServiceDefaultsExtensions.TraceSampler(Config((ServiceDefaultsExtensions.TracesPerSecondKey, "2.5")))!.Description, StringComparison.Ordinal);
        Assert.Null(ServiceDefaultsExtensions.TraceSampler(Config(("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"))));
        Assert.Contains("housekeeping: RateLimitingSampler{1/s}", ServiceDefaultsExtensions.TraceSampler(Config())!.Description, StringComparison.Ordinal);
        Assert.Contains("housekeeping: RateLimitingSampler{0/s}", ServiceDefaultsExtensions.TraceSampler(Config((ServiceDefaultsExtensions.HousekeepingTracesPerSecondKey, "0")))!.Description, StringComparison.Ordinal);
        foreach (string key in new[] { ServiceDefaultsExtensions.TracesPerSecondKey, ServiceDefaultsExtensions.HousekeepingTracesPerSecondKey })
        {
            foreach (string bad in new[] { "-1", "many", "NaN", "Infinity" })
            {
                var e = Assert.Throws<InvalidOperationException>(() => ServiceDefaultsExtensions.TraceSampler(Config((key, bad))));
                Assert.Contains($"{key} is '{bad}': traces per second must be a number >= 0", e.Message, StringComparison.Ordinal);
            }
        }
    }

    [Fact]
    public async Task Past_the_trace_rate_requests_are_not_traced_but_one_with_a_sampled_traceparent_is()
    {
        await using var receiver = await OtlpReceiver.StartAsync();
        var (service, settings) = TracedAt(receiver, "0");
        await using var app = await StartAsync(settings, builder => { }, map: a =>
        {
            a.MapGet("/unsampled", () => "u");
            a.MapGet("/sampled", () => "s");
        });
        // This process traces its own HttpClient calls (the app under test is in it): send as another process would, with
        // no trace context but the header set here.
        using var http = new HttpClient(new SocketsHttpHandler { ActivityHeadersPropagator = null }) { BaseAddress = app.Url };
        for (int i = 0; i < 20; i++)
        {
            Assert.Equal("u", await http.GetStringAsync("/unsampled"));
        }

        string traceId = ActivityTraceId.CreateRandom().ToHexString();
        using (var request = new HttpRequestMessage(HttpMethod.Get, "/sampled"))
        {
            request.Headers.Add("traceparent", $"00-{traceId}-{ActivitySpanId.CreateRandom().ToHexString()}-01");
            using var response = await http.SendAsync(request);
            Assert.Equal("s", await response.Content.ReadAsStringAsync());
        }

        await receiver.WaitForAsync("/v1/traces", TimeSpan.FromSeconds(20), "/sampled", service);
        Assert.DoesNotContain(receiver.Bodies("/v1/traces"), body => body.Contains("/unsampled", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Without_an_OTLP_endpoint_nothing_is_exported()
    {
        await using var receiver = await OtlpReceiver.StartAsync();
        await using var app = await StartAsync(new Dictionary<string, string?> { ["OTEL_BSP_SCHEDULE_DELAY"] = "100" }, builder => { });
        using var http = new HttpClient { BaseAddress = app.Url };
        await http.GetAsync("/health");
        await Task.Delay(500);
        Assert.Empty(receiver.Bodies("/v1/traces"));
        Assert.Null(ServiceDefaultsExtensions.OtlpEndpoint(WebApplication.CreateBuilder()));
    }

    [Fact]
    public async Task Metrics_serves_the_process_meters_in_strict_prometheus_text_without_otlp()
    {
        string meterName = "MoECluster.Test." + Guid.NewGuid().ToString("N");
        await using var app = await StartAsync(
            new Dictionary<string, string?>(),
            _ => { },
            sources =>
            {
                sources.Meters.Add(meterName);
                sources.CardinalityLimits["test.wide"] = 5000;
            },
            a => a.MapMetricsEndpoint());
        using var meter = new Meter(meterName);
        var bytes = meter.CreateCounter<long>("test.routed.bytes", "By", "Routed bytes");
        var sizes = meter.CreateHistogram("test.batch.size", "{row}", "Rows per batch", advice: new InstrumentAdvice<int> { HistogramBucketBoundaries = [1, 4, 16] });
        var wide = meter.CreateCounter<long>("test.wide", "{token}", "One series per expert");
        bytes.Add(40, new KeyValuePair<string, object?>("mode", "latent"), new KeyValuePair<string, object?>("note", "a \"quoted\" \\ value\nnext"));
        bytes.Add(2, new KeyValuePair<string, object?>("mode", "latent"), new KeyValuePair<string, object?>("note", "a \"quoted\" \\ value\nnext"));
        foreach (int rows in new[] { 1, 3, 3, 20 })
        {
            sizes.Record(rows);
        }

        // More series than OpenTelemetry's default limit of 2000: the configured limit keeps each its own.
        for (int e = 0; e < 3000; e++)
        {
            wide.Add(1, new KeyValuePair<string, object?>("expert", e));
        }

        using var http = new HttpClient { BaseAddress = app.Url };
        using var response = await http.GetAsync(ServiceDefaultsExtensions.MetricsPath);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var text = PrometheusText.Parse(await response.Content.ReadAsStringAsync());
        Assert.Equal("counter", text.Family("test_routed_bytes_total").Type);
        Assert.Equal("Routed bytes", text.Family("test_routed_bytes_total").Help);
        var routed = Assert.Single(text.Samples("test_routed_bytes_total"));
        Assert.Equal(42, routed.Value);
        Assert.Equal("a \"quoted\" \\ value\nnext", routed.Labels["note"]);
        Assert.Equal("histogram", text.Family("test_batch_size").Type);
        Assert.Equal([1, 3, 3, 4], text.Samples("test_batch_size_bucket").Select(s => s.Value));
        Assert.Equal(["1", "4", "16", "+Inf"], text.Samples("test_batch_size_bucket").Select(s => s.Labels["le"]));
        Assert.Equal(27, text.Sum("test_batch_size_sum"));
        Assert.Equal(3000, text.Samples("test_wide_total").Count(s => s.Labels.ContainsKey("expert")));
        Assert.Equal(3000, text.Sum("test_wide_total"));
    }

    /// <summary>A service of its own exporting to <paramref name="receiver"/>, at <paramref name="tracesPerSecond"/> new request traces a second.</summary>
    private static (string Service, Dictionary<string, string?> Settings) TracedAt(OtlpReceiver receiver, string tracesPerSecond)
    {
        string service = "svc-" + Guid.NewGuid().ToString("N")[..8];
        var settings = receiver.EnvironmentFor(service).ToDictionary(kv => kv.Key, kv => (string?)kv.Value);
        settings[ServiceDefaultsExtensions.TracesPerSecondKey] = tracesPerSecond;
        return (service, settings);
    }

    private static async Task<RunningApp> StartAsync(
        Dictionary<string, string?> settings,
        Action<WebApplicationBuilder> configure,
        Action<TelemetrySources>? sources = null,
        Action<WebApplication>? map = null)
    {
        var builder = WebApplication.CreateBuilder(new WebApplicationOptions { Args = [] });
        builder.Configuration.AddInMemoryCollection(settings);
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        builder.Logging.ClearProviders();
        builder.AddServiceDefaults(sources);
        configure(builder);
        var app = builder.Build();
        app.MapDefaultEndpoints();
        map?.Invoke(app);
        await app.StartAsync();
        return new RunningApp(app);
    }

    private sealed class RunningApp(WebApplication app) : IAsyncDisposable
    {
        public Uri Url { get; } = new(app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First());

        public async ValueTask DisposeAsync()
        {
            await app.StopAsync();
            await app.DisposeAsync();
        }
    }
}

internal static partial class TestLog
{
    [LoggerMessage(Level = LogLevel.Warning, Message = "routed {Bytes} bytes")]
    public static partial void Routed(ILogger logger, long bytes);
}
