using System.Collections.Concurrent;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using MoECluster.Cluster.Hosting;
using MoECluster.Gateway;
using MoECluster.Gateway.Live;
using MoECluster.Gateway.Security;
using MoECluster.ServiceDefaults;
using MoECluster.Wire;

namespace MoECluster.Cli.Tests;

/// <summary>
/// A gateway for <c>moecluster load</c> tests on a real Kestrel port: one 8-wide latent model listed by
/// <c>/v1/models</c> (as a bare array or, with <c>listShape</c>, as <c>{"object":"list","data":[...]}</c>), a small
/// <c>/stats</c>, forwards answered with a zero block after <c>forwardDelay</c>. Instrumented: the forwards seen, the most
/// in flight at once, the headers of every forward. With <c>apiKey</c> the gateway's own request guard stands in front,
/// configured as a keyed gateway is (MoECluster:Gateway:ApiKeys).
/// </summary>
internal sealed class LoadStandInGateway : IAsyncDisposable
{
    public const int Width = 8;
    public const string ModelId = "lat";

    private readonly WebApplication _app;
    private int _inFlight;
    private int _peak;
    private long _forwards;

    private LoadStandInGateway(WebApplication app) => _app = app;

    public string Url { get; private set; } = string.Empty;

    public long Forwards => Interlocked.Read(ref _forwards);

    /// <summary>The most forwards the server was handling at once.</summary>
    public int PeakInFlight => Volatile.Read(ref _peak);

    /// <summary>The request headers of every forward, names lower-case.</summary>
    public ConcurrentQueue<IReadOnlyDictionary<string, string>> ForwardHeaders { get; } = new();

    public static async Task<LoadStandInGateway> StartAsync(string? apiKey = null, TimeSpan forwardDelay = default, bool listShape = false)
    {
        var builder = WebApplication.CreateBuilder(new WebApplicationOptions { Args = [] });
        var settings = new Dictionary<string, string?>();
        if (apiKey is not null)
        {
            settings["MoECluster:Gateway:ApiKeys:0"] = apiKey;
        }

        builder.Configuration.AddInMemoryCollection(settings);
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        builder.Logging.ClearProviders();
        builder.AddServiceDefaults();
        builder.Services.Configure<MoeClusterOptions>(builder.Configuration.GetSection(MoeClusterOptions.Section));
        builder.Services.AddSingleton(TimeProvider.System);
        builder.Services.AddSingleton<GatewayRequestStatistics>();
        builder.Services.AddMoeGatewaySecurity();
        var app = builder.Build();
        var gateway = new LoadStandInGateway(app);
        app.MapDefaultEndpoints();
        app.UseMiddleware<GatewayRequestGuard>();
        const string Model = $"{{\"id\":\"{ModelId}\",\"mode\":\"latent\",\"hidden_size\":8,\"latent_size\":4,\"experts\":4,\"top_k\":2,\"moe_layers\":[1],\"shards_per_layer\":1,\"is_default\":true}}";
        string models = listShape ? $"{{\"object\":\"list\",\"data\":[{Model}]}}" : $"[{Model}]";
        app.MapGet("/v1/models", () => Results.Text(models, "application/json"));
        app.MapGet("/stats", () => Results.Text(
            "{\"silos\":[{\"address\":\"127.0.0.1:11111\",\"name\":\"frontend\",\"role\":\"frontend\",\"shards\":[],\"alternates\":[]},"
            + "{\"address\":\"127.0.0.1:11112\",\"name\":\"expert-1\",\"role\":\"expert\",\"shards\":[\"lat/1/s0/0-4\"],\"alternates\":[]}],"
            + "\"models\":[],\"totals\":{\"tls\":false,\"messages\":0,\"payload_bytes\":0,\"message_bytes\":0}}",
            "application/json"));
        app.MapPost("/v1/layers/{layer}/forward", async (HttpContext http) =>
        {
            Interlocked.Increment(ref gateway._forwards);
            gateway.ForwardHeaders.Enqueue(http.Request.Headers.ToDictionary(h => h.Key.ToLowerInvariant(), h => h.Value.ToString()));
            int now = Interlocked.Increment(ref gateway._inFlight);
            int peak;
            while (now > (peak = Volatile.Read(ref gateway._peak)) && Interlocked.CompareExchange(ref gateway._peak, now, peak) != peak)
            {
            }

            try
            {
                await http.Request.Body.CopyToAsync(Stream.Null);
                if (forwardDelay > TimeSpan.Zero)
                {
                    await Task.Delay(forwardDelay);
                }
            }
            finally
            {
                Interlocked.Decrement(ref gateway._inFlight);
            }

            byte[] body = WireFormat.Serialize(new GatewayForwardResponse { Model = ModelId, HiddenStates = ActivationBlock.Encode(new float[Width], 1, Width, WireDType.F32) });
            return Results.Bytes(body, GatewayEndpoints.MessagePackContentType);
        });
        await app.StartAsync();
        gateway.Url = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First().TrimEnd('/');
        return gateway;
    }

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
    }
}
