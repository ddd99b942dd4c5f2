using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Diagnostics.HealthChecks;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using OpenTelemetry;
using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;
using OpenTelemetry.Trace;

namespace MoECluster.ServiceDefaults;

/// <summary>
/// The defaults every MoECluster process adds, after Aspire's ServiceDefaults template: OpenTelemetry logs, metrics
/// and traces (exported over OTLP when <c>OTEL_EXPORTER_OTLP_ENDPOINT</c> is set, e.g. by the AppHost or an
/// operator pointing at the standalone Aspire dashboard), a liveness health check, and service discovery for
/// outgoing HTTP clients; and the same metrics in Prometheus text exposition at <c>GET /metrics</c>
/// (<see cref="MapMetricsEndpoint"/>, OpenTelemetry's Prometheus exporter), whether or not OTLP is configured.
/// </summary>
public static class ServiceDefaultsExtensions
{
    /// <summary>Health checks with this tag are the liveness checks served at <c>/alive</c>.</summary>
    public const string LiveTag = "live";

    public const string HealthPath = "/health";

    public const string AlivePath = "/alive";

    /// <summary>Where every silo serves its metrics in Prometheus text exposition.</summary>
    public const string MetricsPath = "/metrics";

    /// <summary>
    /// How long a stopping process waits for its last traces, metrics and logs to reach the OTLP collector. A collector that
    /// is down or hung must not hold the stop (Aspire's stop command gives a process 20 s, a supervisor's restart waits on
    /// it): what is not exported by then is dropped.
    /// </summary>
    public static readonly TimeSpan TelemetryFlushOnStop = TimeSpan.FromSeconds(2);

    /// <summary>How many new traces per second a process records at most (environment: <c>MoECluster__Telemetry__TracesPerSecond</c>).</summary>
    public const string TracesPerSecondKey = "MoECluster:Telemetry:TracesPerSecond";

    /// <summary>
    /// Every request traced at a few per second; under load about 10 forwards' traces a second (tracing every forward
    /// cost 10–15% of the throughput of 8 closed-loop workers on the 2-core build machine, the dashboard ingesting them).
    /// </summary>
    public const double DefaultTracesPerSecond = 10;

    /// <summary>
    /// How many new traces per second a process records of anything but requests: Orleans' own work (membership, timers,
    /// statistics), on a budget of its own so that it never takes a request's (environment:
    /// <c>MoECluster__Telemetry__HousekeepingTracesPerSecond</c>).
    /// </summary>
    public const string HousekeepingTracesPerSecondKey = "MoECluster:Telemetry:HousekeepingTracesPerSecond";

    /// <summary>One housekeeping trace a second: the runtime's life shows in the trace view without crowding it.</summary>
    public const double DefaultHousekeepingTracesPerSecond = 1;

    public static TBuilder AddServiceDefaults<TBuilder>(this TBuilder builder, Action<TelemetrySources>? sources = null)
        where TBuilder : IHostApplicationBuilder
    {
        var telemetry = new TelemetrySources();
        sources?.Invoke(telemetry);
        builder.ConfigureOpenTelemetry(telemetry);
        builder.Services.AddHealthChecks().AddCheck("self", () => HealthCheckResult.Healthy("process is running"), [LiveTag]);
        builder.Services.AddServiceDiscovery();
        builder.Services.ConfigureHttpClientDefaults(http => http.AddServiceDiscovery());
        return builder;
    }

    public static TBuilder ConfigureOpenTelemetry<TBuilder>(this TBuilder builder, TelemetrySources sources)
        where TBuilder : IHostApplicationBuilder
    {
        builder.Logging.AddOpenTelemetry(logging =>
        {
            logging.IncludeFormattedMessage = true;
            logging.IncludeScopes = true;
        });

        var otel = builder.Services.AddOpenTelemetry()
            .ConfigureResource(resource => resource.AddService(
                serviceName: builder.Configuration["OTEL_SERVICE_NAME"] ?? builder.Environment.ApplicationName,
                serviceInstanceId: Environment.MachineName + ":" + Environment.ProcessId))
            .WithMetrics(metrics =>
            {
                metrics.AddAspNetCoreInstrumentation().AddHttpClientInstrumentation().AddRuntimeInstrumentation();
                foreach (string meter in sources.Meters)
                {
                    metrics.AddMeter(meter);
                }

                foreach (var (instrument, limit) in sources.CardinalityLimits)
                {
                    metrics.AddView(instrument, new MetricStreamConfiguration { CardinalityLimit = limit });
                }

                // GET /metrics (MapMetricsEndpoint). A scrape collects at most once per 300 ms (the exporter's cache), so
                // scrapes in a burst cost one collection.
                metrics.AddPrometheusExporter();
            })
            .WithTracing(tracing =>
            {
                var budget = TraceBudget(builder.Configuration);
                if (budget is not null)
                {
                    tracing.SetSampler(new ParentBasedSampler(budget));
                }

                tracing.AddSource(builder.Environment.ApplicationName)
                    .AddAspNetCoreInstrumentation(o => o.Filter = http => Traced(http, budget))
                    .AddHttpClientInstrumentation();
                foreach (string source in sources.ActivitySources)
                {
                    tracing.AddSource(source);
                }
            });

        if (OtlpEndpoint(builder) is not null)
        {
            otel.UseOtlpExporter();
            builder.Services.AddHostedService<TelemetryFlush>();
        }

        return builder;
    }

    /// <summary>
    /// Telemetry for a client process without a host (<c>moecluster load</c>): traces and metrics of its outgoing HTTP
    /// calls, exported over OTLP with the standard <c>OTEL_*</c> variables when <c>OTEL_EXPORTER_OTLP_ENDPOINT</c> is
    /// set; null (nothing collected) otherwise. The client spans carry W3C trace context to the gateway, so a request
    /// shows as one trace from the client through the router grain to the expert shards; at most as many new traces per
    /// second as a silo records (<see cref="TraceSampler"/>), the rest go out unsampled and the cluster drops them too.
    /// Disposing flushes.
    /// </summary>
    public static IDisposable? StartClientTelemetry(string defaultServiceName)
    {
        if (string.IsNullOrWhiteSpace(Environment.GetEnvironmentVariable("OTEL_EXPORTER_OTLP_ENDPOINT")))
        {
            return null;
        }

        string service = Environment.GetEnvironmentVariable("OTEL_SERVICE_NAME") is { Length: > 0 } name ? name : defaultServiceName;
        void Resource(ResourceBuilder resource) => resource.AddService(service, serviceInstanceId: Environment.MachineName + ":" + Environment.ProcessId);
        return new ClientTelemetry(
            WithSampler(Sdk.CreateTracerProviderBuilder(), TraceSampler(new ConfigurationBuilder().AddEnvironmentVariables().Build()))
                .ConfigureResource(Resource).AddHttpClientInstrumentation().AddOtlpExporter().Build(),
            Sdk.CreateMeterProviderBuilder().ConfigureResource(Resource).AddHttpClientInstrumentation().AddRuntimeInstrumentation().AddOtlpExporter().Build());
    }

    /// <summary>
    /// The trace sampler: with <c>OTEL_TRACES_SAMPLER</c> set, none here (OpenTelemetry applies the standard variable and
    /// its <c>OTEL_TRACES_SAMPLER_ARG</c>); otherwise parent-based with at most <see cref="TracesPerSecondKey"/> new request
    /// traces per second (default <see cref="DefaultTracesPerSecond"/>; 0: only requests that arrive with a sampled parent)
    /// and <see cref="HousekeepingTracesPerSecondKey"/> new traces of anything else (<see cref="TraceBudgetSampler"/>).
    /// </summary>
    public static Sampler? TraceSampler(IConfiguration configuration) => TraceBudget(configuration) is { } budget ? new ParentBasedSampler(budget) : null;

    /// <summary>
    /// The root sampler of <see cref="TraceSampler"/>: <see cref="TracesPerSecondKey"/> new request traces per second and
    /// <see cref="HousekeepingTracesPerSecondKey"/> new traces of anything else (<see cref="TraceBudgetSampler"/>); null
    /// when <c>OTEL_TRACES_SAMPLER</c> decides.
    /// </summary>
    public static TraceBudgetSampler? TraceBudget(IConfiguration configuration)
    {
        ArgumentNullException.ThrowIfNull(configuration);
        return string.IsNullOrWhiteSpace(configuration["OTEL_TRACES_SAMPLER"])
            ? new TraceBudgetSampler(
                PerSecond(configuration, TracesPerSecondKey, DefaultTracesPerSecond, "0: only requests with a sampled traceparent"),
                PerSecond(configuration, HousekeepingTracesPerSecondKey, DefaultHousekeepingTracesPerSecond, "0: none"))
            : null;
    }

    private static double PerSecond(IConfiguration configuration, string key, double fallback, string zero)
    {
        double perSecond = fallback;
        if (configuration[key] is { Length: > 0 } text
            && (!double.TryParse(text, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out perSecond) || perSecond < 0 || !double.IsFinite(perSecond)))
        {
            throw new InvalidOperationException($"{key} is '{text}': traces per second must be a number >= 0 ({zero})");
        }

        return perSecond;
    }

    /// <summary>
    /// Whether a request to this process is traced: not a health probe or a metrics scrape. Those were sampled as new
    /// requests before their path was known, and give their credit back.
    /// </summary>
    private static bool Traced(HttpContext http, TraceBudgetSampler? budget)
    {
        if (!IsHealthProbe(http.Request.Path) && !http.Request.Path.StartsWithSegments(MetricsPath, StringComparison.Ordinal))
        {
            return true;
        }

        // The instrumentation asks while it starts the request's activity: the current one. Only a root (no parent span,
        // local or remote) took a credit.
        if (budget is not null && System.Diagnostics.Activity.Current is { Recorded: true } activity && activity.ParentSpanId == default)
        {
            budget.ReturnRequestCredit();
        }

        return false;
    }

    private static TracerProviderBuilder WithSampler(TracerProviderBuilder tracing, Sampler? sampler) => sampler is null ? tracing : tracing.SetSampler(sampler);

    /// <summary>The OTLP endpoint this process exports to, or null when none is configured (then nothing is exported).</summary>
    public static string? OtlpEndpoint(IHostApplicationBuilder builder) =>
        string.IsNullOrWhiteSpace(builder.Configuration["OTEL_EXPORTER_OTLP_ENDPOINT"]) ? null : builder.Configuration["OTEL_EXPORTER_OTLP_ENDPOINT"];

    /// <summary>
    /// <c>GET /health</c>: every check (200 when all pass, 503 otherwise); <c>GET /alive</c>: the liveness checks.
    /// The body is JSON: <c>status</c> ("ok" or the first failing check's description), the data every check
    /// reported, and each check's own status.
    /// </summary>
    public static WebApplication MapDefaultEndpoints(this WebApplication app)
    {
        app.MapHealthChecks(HealthPath, new HealthCheckOptions { ResponseWriter = WriteHealthAsync });
        app.MapHealthChecks(AlivePath, new HealthCheckOptions { Predicate = r => r.Tags.Contains(LiveTag), ResponseWriter = WriteHealthAsync });
        return app;
    }

    /// <summary>
    /// <c>GET /metrics</c>: every meter this process collects (<see cref="TelemetrySources.Meters"/>, ASP.NET Core, HttpClient,
    /// runtime) in Prometheus text exposition (OpenMetrics when the scraper asks for it). Counters carry the suffix
    /// <c>_total</c>, units become suffixes (<c>_bytes</c>, <c>_seconds</c>). Whoever maps it decides who may read it:
    /// the silos put it behind their API keys when keys are configured.
    /// </summary>
    public static WebApplication MapMetricsEndpoint(this WebApplication app)
    {
        app.MapPrometheusScrapingEndpoint(MetricsPath);
        return app;
    }

    private static bool IsHealthProbe(PathString path) =>
        path.StartsWithSegments(HealthPath, StringComparison.Ordinal) || path.StartsWithSegments(AlivePath, StringComparison.Ordinal);

    private static Task WriteHealthAsync(HttpContext http, HealthReport report)
    {
        http.Response.ContentType = "application/json; charset=utf-8";
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer))
        {
            json.WriteStartObject();
            string status = report.Status == HealthStatus.Healthy
                ? "ok"
                : report.Entries.Values.Where(e => e.Status != HealthStatus.Healthy).Select(e => e.Description).FirstOrDefault(d => d is not null) ?? report.Status.ToString();
            json.WriteString("status", status);
            var written = new HashSet<string>(StringComparer.Ordinal) { "status", "checks" };
            foreach (var entry in report.Entries.Values)
            {
                foreach (var (key, value) in entry.Data)
                {
                    if (written.Add(key))
                    {
                        json.WritePropertyName(key);
                        JsonSerializer.Serialize(json, value, value?.GetType() ?? typeof(object));
                    }
                }
            }

            json.WriteStartObject("checks");
            foreach (var (name, entry) in report.Entries)
            {
                json.WriteStartObject(name);
                json.WriteString("status", entry.Status.ToString());
                json.WriteString("description", entry.Description);
                json.WriteEndObject();
            }

            json.WriteEndObject();
            json.WriteEndObject();
        }

        return http.Response.Body.WriteAsync(buffer.ToArray()).AsTask();
    }
}

/// <summary>
/// The tracer and meter providers of a client process; disposing flushes and stops both, together, within
/// <see cref="ServiceDefaultsExtensions.TelemetryFlushOnStop"/> (a collector that is down must not hold the client's exit).
/// </summary>
internal sealed class ClientTelemetry(TracerProvider tracing, MeterProvider metrics) : IDisposable
{
    public void Dispose()
    {
        TelemetryFlush.ShutDownTogether(("traces", tracing.Shutdown), ("metrics", metrics.Shutdown));
        tracing.Dispose();
        metrics.Dispose();
    }
}

/// <summary>The meters and activity sources a process exports besides ASP.NET Core, HttpClient and the runtime.</summary>
public sealed class TelemetrySources
{
    public IList<string> Meters { get; } = [];

    public IList<string> ActivitySources { get; } = [];

    /// <summary>
    /// Instruments that may have more attribute combinations than OpenTelemetry's default limit of 2000 per metric (beyond
    /// it, measurements fold into one overflow series): the instrument's name and its limit.
    /// </summary>
    public IDictionary<string, int> CardinalityLimits { get; } = new Dictionary<string, int>(StringComparer.Ordinal);
}
