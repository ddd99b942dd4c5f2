using System.Collections.Concurrent;
using System.Reflection;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Logging;
using MoECluster.Cluster.Contracts;
using MoECluster.Cluster.Hosting;
using MoECluster.Gateway.KServe;
using MoECluster.Gateway.Limits;
using MoECluster.Gateway.Live;
using MoECluster.Gateway.Security;
using MoECluster.Model.Presets;

namespace MoECluster.Gateway.Tests;

/// <summary>
/// The gateway's API (<see cref="GatewayEndpoints.MapMoeApi"/>: /v1, KServe v2, OpenAPI) behind the real guard with API
/// keys, on a real Kestrel port, serving two synthetic models ("latent", a tiny LatentMoE, and "standard", its twin).
/// The router grain is a stand-in (<see cref="ModelRouter"/>) that computes the requested layer, or the stack, with the
/// in-process model: every forward runs the gateway's real handler (parsing, limits, admission, validation, answer) and
/// gets an answer that depends on the input and on the layer asked for. <see cref="Fail"/> makes it throw instead.
/// </summary>
public sealed class KServeGatewayFixture : IAsyncLifetime
{
    public const string Key = "kserve-test-key-0123456789";
    public const string Latent = "latent";
    public const string Standard = "standard";
    public const int MaxTokens = 64;

    private readonly string _dir = Path.Combine(Path.GetTempPath(), $"moecluster-kserve-{Guid.NewGuid():N}");
    private WebApplication? _app;

    /// <summary>The calls the stand-in router received, in order.</summary>
    public ConcurrentQueue<(string Model, ForwardCall Call)> Calls { get; } = new();

    /// <summary>When set, the stand-in router throws what this returns (null: computes).</summary>
    public Func<Exception?>? Fail { get; set; }

    /// <summary>What the readiness check (one of /health's) answers.</summary>
    public bool Ready { get; set; } = true;

    public Uri Url { get; private set; } = null!;

    /// <summary>A client that sends the API key on every request.</summary>
    public HttpClient Http { get; private set; } = null!;

    public IServiceProvider Services => _app!.Services;

    public WebApplication App => _app!;

    public string PathOf(string model) => Path.Combine(_dir, model);

    public Model.Layers.MoeModel Reference(string model) => Services.GetRequiredService<ModelCatalog>().Get(model);

    public async Task InitializeAsync()
    {
        SyntheticCheckpoint.Write(PathOf(Latent), ModelPresets.Get("tiny").Build(experts: 8), 31);
        SyntheticCheckpoint.Write(PathOf(Standard), ModelPresets.Get("tiny-standard").Build(experts: 8), 32);
        var builder = WebApplication.CreateBuilder(new WebApplicationOptions { Args = [] });
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        builder.Logging.ClearProviders();
        builder.Configuration.AddInMemoryCollection(new Dictionary<string, string?>
        {
            [ConfigurationKeys.ModelPath(Latent)] = PathOf(Latent),
            [ConfigurationKeys.ModelPath(Standard)] = PathOf(Standard),
            ["MoECluster:Compute:Backend"] = "reference",
            ["MoECluster:Gateway:ApiKeys:0"] = Key,
            ["MoECluster:Gateway:MaxTokensPerRequest"] = MaxTokens.ToString(System.Globalization.CultureInfo.InvariantCulture),
        });
        builder.Services.Configure<MoeClusterOptions>(builder.Configuration.GetSection(MoeClusterOptions.Section));
        builder.Services.AddSingleton(TimeProvider.System);
        builder.Services.AddSingleton<GatewayRequestStatistics>();
        builder.Services.AddSingleton<GatewayAdmission>();
        builder.Services.AddSingleton<ModelCatalog>();
        builder.Services.AddMoeGatewaySecurity();
        builder.Services.AddMoeOpenApi();
        builder.Services.AddHealthChecks()
            .AddCheck("self", () => HealthCheckResult.Healthy("process is running"), [KServeEndpoints.LiveTag])
            .AddCheck("switch", () => Ready ? HealthCheckResult.Healthy("ready") : HealthCheckResult.Unhealthy("waiting for expert silos"));
        var grains = DispatchProxy.Create<IGrainFactory, GrainFactoryStandIn>();
        ((GrainFactoryStandIn)(object)grains).Router = model => new ModelRouter(this, model);
        builder.Services.AddSingleton(grains);
        _app = builder.Build();
        _app.UseMiddleware<GatewayRequestGuard>();
        _app.MapMoeApi();
        await _app.StartAsync();
        Url = new Uri(_app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First());
        Http = new HttpClient { BaseAddress = Url, Timeout = TimeSpan.FromSeconds(60) };
        Http.DefaultRequestHeaders.Add(GatewayRequestGuard.ApiKeyHeader, Key);
    }

    public async Task DisposeAsync()
    {
        Http?.Dispose();
        if (_app is not null)
        {
            await _app.StopAsync();
            await _app.DisposeAsync();
        }

        try
        {
            Directory.Delete(_dir, recursive: true);
        }
        catch (IOException)
        {
        }
    }

    /// <summary>The router grain: the requested layer (or the stack) of the in-process model, or <see cref="Fail"/>'s exception.</summary>
    private sealed class ModelRouter(KServeGatewayFixture fixture, string model) : IMoeRouterGrain
    {
        public Task<ForwardReply> Forward(ForwardCall call, CancellationToken cancellationToken = default)
        {
            fixture.Calls.Enqueue((model, call));
            if (fixture.Fail?.Invoke() is { } failure)
            {
                return Task.FromException<ForwardReply>(failure);
            }

            var reference = fixture.Reference(model);
            float[] output = call.Layer is int layer ? reference.ForwardLayer(layer, call.Hidden, call.Tokens) : reference.ForwardStack(call.Hidden, call.Tokens);
            return Task.FromResult(new ForwardReply(output, []));
        }
    }
}

/// <summary>An <see cref="IGrainFactory"/> that answers <c>GetGrain&lt;IMoeRouterGrain&gt;(model)</c> only.</summary>
public class GrainFactoryStandIn : DispatchProxy
{
    internal Func<string, IMoeRouterGrain> Router { get; set; } = _ => throw new InvalidOperationException("no router");

    protected override object? Invoke(MethodInfo? targetMethod, object?[]? args)
    {
        if (targetMethod is { Name: nameof(IGrainFactory.GetGrain), IsGenericMethod: true } && targetMethod.GetGenericArguments()[0] == typeof(IMoeRouterGrain)
            && args is [string key, ..])
        {
            return Router(key);
        }

        throw new NotSupportedException($"the stand-in grain factory does not serve {targetMethod}");
    }
}

[CollectionDefinition(Name)]
public sealed class KServeGatewayGroup : ICollectionFixture<KServeGatewayFixture>
{
    public const string Name = "KServe gateway";
}
