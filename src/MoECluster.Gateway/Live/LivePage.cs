using System.Reflection;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.Hosting;

namespace MoECluster.Gateway.Live;

/// <summary>
/// The live routing page at <c>/</c> (HTML, script and style embedded in this assembly: no CDN, works offline) and
/// its feed, <c>GET /v1/stats/stream</c>: server-sent events, one <c>stats</c> event with the <c>/stats</c>
/// document per interval (<c>?interval_ms=</c>, 250–10000, default 1000).
/// With API keys configured, the page, its assets and the stream need a key like every other path but the health
/// probes: a browser sends it as the password of HTTP Basic credentials after one login prompt, since an
/// <c>EventSource</c> cannot carry a header (see <see cref="Security.GatewayRequestGuard"/> for why not a query string).
/// </summary>
public static class LivePage
{
    public const string StreamPath = "/v1/stats/stream";

    private static readonly (string Path, string Resource, string ContentType)[] Assets =
    [
        ("/", "live/index.html", "text/html; charset=utf-8"),
        ("/live/live.js", "live/live.js", "text/javascript; charset=utf-8"),
        ("/live/live.css", "live/live.css", "text/css; charset=utf-8"),
        ("/live/favicon.svg", "live/favicon.svg", "image/svg+xml"),
    ];

    public static IEndpointRouteBuilder MapLivePage(this IEndpointRouteBuilder app)
    {
        foreach (var (path, resource, contentType) in Assets)
        {
            byte[] content = Read(resource);
            app.MapGet(path, () => Results.Bytes(content, contentType));
        }

        app.MapGet(StreamPath, StreamAsync);
        return app;
    }

    private static byte[] Read(string resource)
    {
        using var stream = typeof(LivePage).Assembly.GetManifestResourceStream(resource)
            ?? throw new InvalidOperationException($"embedded resource {resource} is missing from {typeof(LivePage).Assembly.GetName().Name}");
        using var buffer = new MemoryStream();
        stream.CopyTo(buffer);
        return buffer.ToArray();
    }

    private static async Task StreamAsync(HttpContext http, LiveStatsFeed feed, IHostApplicationLifetime lifetime, int? interval_ms)
    {
        http.Response.ContentType = "text/event-stream";
        http.Response.Headers.CacheControl = "no-cache";
        http.Response.Headers["X-Accel-Buffering"] = "no";
        var interval = TimeSpan.FromMilliseconds(Math.Clamp(interval_ms ?? 1000, 250, 10_000));

        // A stream lasts until the page goes away or the silo stops (a graceful stop must not wait for open pages).
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(http.RequestAborted, lifetime.ApplicationStopping);
        var cancel = stop.Token;
        using var timer = new PeriodicTimer(interval);
        try
        {
            await http.Response.WriteAsync("retry: 2000\n\n", cancel);
            do
            {
                string name, data;
                try
                {
                    name = "stats";
                    data = (await feed.LatestAsync(cancel)).ToJsonString(GatewayEndpoints.Json);
                }
                catch (OrleansException e)
                {
                    name = "problem";
                    data = System.Text.Json.JsonSerializer.Serialize(new { error = e.Message.ReplaceLineEndings(" ") });
                }

                await http.Response.WriteAsync($"event: {name}\ndata: {data}\n\n", cancel);
                await http.Response.Body.FlushAsync(cancel);
            }
            while (await timer.WaitForNextTickAsync(cancel));
        }
        catch (OperationCanceledException) when (cancel.IsCancellationRequested)
        {
            // the page closed or the silo is stopping
        }
    }
}
