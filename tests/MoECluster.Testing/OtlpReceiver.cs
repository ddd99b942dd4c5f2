using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace MoECluster.Testing;

/// <summary>
/// An OTLP/HTTP receiver on 127.0.0.1 (protocol http/protobuf: POST /v1/traces, /v1/metrics, /v1/logs) that keeps
/// every body it is sent. Bodies are protobuf; they are kept as Latin-1 text so tests can look for the strings
/// (service names, metric names, span names) they carry.
/// </summary>
public sealed class OtlpReceiver : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly ConcurrentQueue<(string Path, string Body)> _received = new();

    private OtlpReceiver(WebApplication app) => _app = app;

    /// <summary>The value for OTEL_EXPORTER_OTLP_ENDPOINT (no trailing slash).</summary>
    public string Endpoint { get; private set; } = string.Empty;

    public static async Task<OtlpReceiver> StartAsync()
    {
        var builder = WebApplication.CreateBuilder(new WebApplicationOptions { Args = [] });
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        builder.Logging.ClearProviders();
        var app = builder.Build();
        var receiver = new OtlpReceiver(app);
        app.MapPost("/v1/{signal}", async (HttpContext http) =>
        {
            using var buffer = new MemoryStream();
            await http.Request.Body.CopyToAsync(buffer);
            receiver._received.Enqueue((http.Request.Path.Value!, Encoding.Latin1.GetString(buffer.ToArray())));
            return Results.Ok();
        });
        await app.StartAsync();
        receiver.Endpoint = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First().TrimEnd('/');
        return receiver;
    }

    /// <summary>Environment for a process that should export here quickly (short batch and metric intervals).</summary>
    public Dictionary<string, string> EnvironmentFor(string serviceName) => new()
    {
        ["OTEL_EXPORTER_OTLP_ENDPOINT"] = Endpoint,
        ["OTEL_EXPORTER_OTLP_PROTOCOL"] = "http/protobuf",
        ["OTEL_SERVICE_NAME"] = serviceName,
        ["OTEL_BSP_SCHEDULE_DELAY"] = "200",
        ["OTEL_BLRP_SCHEDULE_DELAY"] = "200",
        ["OTEL_METRIC_EXPORT_INTERVAL"] = "500",
    };

    public IReadOnlyList<string> Bodies(string path) => [.. _received.Where(r => r.Path == path).Select(r => r.Body)];

    /// <summary>Every span received so far (decoded from the trace exports).</summary>
    public IReadOnlyList<OtlpSpan> Spans() => [.. Bodies("/v1/traces").SelectMany(b => OtlpSpans.Read(Encoding.Latin1.GetBytes(b)))];

    /// <summary>Waits until some body sent to <paramref name="path"/> contains every one of <paramref name="texts"/>.</summary>
    public async Task WaitForAsync(string path, TimeSpan timeout, params string[] texts)
    {
        var clock = Stopwatch.StartNew();
        while (!Bodies(path).Any(b => texts.All(t => b.Contains(t, StringComparison.Ordinal))))
        {
            if (clock.Elapsed > timeout)
            {
                throw new TimeoutException($"no OTLP export to {path} containing [{string.Join(", ", texts)}] within {timeout.TotalSeconds} s; " +
                    $"received {_received.Count} bodies: {string.Join(", ", _received.GroupBy(r => r.Path).Select(g => $"{g.Key} x{g.Count()}"))}" +
                    (path == "/v1/traces" ? "; spans by service and name: " + SpanCensus() : string.Empty));
            }

            await Task.Delay(100);
        }
    }

    /// <summary>The spans received so far, counted by service and name, most frequent first (for failure messages).</summary>
    public string SpanCensus() => string.Join("; ", Spans()
        .GroupBy(s => $"{s.Service} {s.Name} kind {s.Kind}" + (s.ParentSpanId.Length == 0 ? " (root)" : string.Empty))
        .OrderByDescending(g => g.Count()).Take(40).Select(g => $"{g.Key} x{g.Count()}"));

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
    }
}
