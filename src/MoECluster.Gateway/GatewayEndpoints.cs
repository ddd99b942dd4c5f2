using System.Globalization;
using System.Net.Http.Headers;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;
using MoECluster.Cluster.Contracts;
using MoECluster.Cluster.Dispatch;
using MoECluster.Cluster.Grains;
using MoECluster.Cluster.Hosting;
using MoECluster.Cluster.Requests;
using MoECluster.Gateway.Health;
using MoECluster.Gateway.Limits;
using MoECluster.Gateway.Live;
using MoECluster.Gateway.Security;
using MoECluster.Model.Configuration;
using MoECluster.Model.Numerics;
using MoECluster.Wire;
using Orleans.Dashboard;

namespace MoECluster.Gateway;

/// <summary>
/// <c>POST /v1/layers/{layer}/forward</c> (one MoE layer's mixer output for an already-normed input),
/// <c>POST /v1/forward</c> (the whole MoE stack), <c>GET /stats</c>, and the live routing page (<see cref="LivePage"/>).
/// Health (<c>/health</c>, <c>/alive</c>) is served by the service defaults from the health checks registered here.
/// Bodies are JSON (<c>{"model", "wire", "hidden_states": [[...], ...]}</c>) or MessagePack
/// (<see cref="GatewayForwardRequest"/>, Content-Type application/x-msgpack); the answer uses the same format.
/// Bad input gets a 4xx with <c>{"error": "..."}</c>; API keys, accounting and the body-size limit are
/// <see cref="GatewayRequestGuard"/>'s, which <see cref="MapMoeGateway"/> puts ahead of every endpoint. A forward
/// request is admitted by <see cref="GatewayAdmission"/> before its body is read (requests and body bytes in flight)
/// and again before it reaches a router (the bounded queue); beyond either, 503 with Retry-After. Its body is read into
/// one pooled buffer (<see cref="PooledRequestBody"/>), given back as soon as it is decoded.
/// </summary>
public static class GatewayEndpoints
{
    public const string MessagePackContentType = "application/x-msgpack";

    /// <summary>The most characters of an unknown model name an error message repeats.</summary>
    public const int MaxModelNameShown = 64;

    /// <summary>Where the Orleans Dashboard (Microsoft.Orleans.Dashboard) is mounted.</summary>
    public const string DashboardPath = "/dashboard";

    public static JsonSerializerOptions Json { get; } = new(JsonSerializerDefaults.Web)
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        WriteIndented = false,
    };

    /// <summary>The gateway's services: request statistics, the live stats feed, the front-end readiness check, API keys.</summary>
    public static IServiceCollection AddMoeGateway(this IServiceCollection services)
    {
        services.TryAddSingleton(TimeProvider.System);
        services.AddSingleton<GatewayRequestStatistics>();
        services.AddSingleton<LiveStatsFeed>();
        services.AddSingleton<GatewayAdmission>();
        services.AddHealthChecks().AddCheck<ExpertSilosHealthCheck>("expert-silos");
        services.AddMoeGatewaySecurity();
        return services;
    }

    /// <summary>API keys (loaded and checked at start-up) and the start-up warning for an open gateway beyond loopback.</summary>
    public static IServiceCollection AddMoeGatewaySecurity(this IServiceCollection services)
    {
        services.TryAddSingleton<GatewayApiKeys>();
        services.AddHostedService<GatewaySecurityCheck>();
        return services;
    }

    /// <summary>
    /// Puts <see cref="GatewayRequestGuard"/> (API keys, accounting, body-size limit) ahead of every endpoint of
    /// <paramref name="app"/> and maps the gateway's endpoints. The health probes mapped by the service defaults stay open.
    /// </summary>
    public static WebApplication MapMoeGateway(this WebApplication app)
    {
        ArgumentNullException.ThrowIfNull(app);

        // Resolved now so that limits that cannot work together fail the start, not the first request.
        _ = app.Services.GetRequiredService<GatewayAdmission>();
        app.UseMiddleware<GatewayRequestGuard>();

        // {layer} is taken as text so that a layer that is no integer gets the same clear 404 as an unknown one.
        app.MapPost("/v1/layers/{layer}/forward", (string layer, HttpContext http) => ForwardAsync(http, layer));
        app.MapPost("/v1/forward", (Delegate)((HttpContext http) => ForwardAsync(http, layer: null)));
        app.MapGet("/v1/models", (ModelCatalog catalog, IOptions<MoeClusterOptions> options) =>
        {
            var configs = new List<(string Id, MoECluster.Model.Configuration.MoeModelConfig Config)>();
            foreach (string id in options.Value.Models.Keys)
            {
                try
                {
                    configs.Add((id, catalog.Get(id).Config));
                }
                catch (Exception e) when (IsModelUnavailable(e))
                {
                    return Error(StatusCodes.Status503ServiceUnavailable, $"model {id} cannot be opened on this front-end: {e.Message}");
                }
            }

            return Results.Json(configs.Select(m => new
            {
                id = m.Id,
                mode = MoeModes.Of(m.Config),
                hidden_size = m.Config.HiddenSize,
                latent_size = m.Config.MoeLatentSize,
                experts = m.Config.NRoutedExperts,
                top_k = m.Config.NumExpertsPerTok,
                moe_layers = m.Config.MoeLayers,
                shards_per_layer = Math.Min(options.Value.ShardsPerLayer, m.Config.NRoutedExperts),
                is_default = m.Id == options.Value.ResolveModel(null),
            }), Json);
        });
        app.MapGet("/stats", async (LiveStatsFeed feed, CancellationToken cancel) => Results.Json(await feed.CollectAsync(cancel), Json));
        app.MapLivePage();
        app.MapOrleansDashboard(routePrefix: DashboardPath);
        return app;
    }

    private static async Task<IResult> ForwardAsync(HttpContext http, string? layer)
    {
        // The guard counts the request once it is answered; it reads what was resolved here.
        var outcome = http.Features.Get<ForwardOutcome>() ?? new ForwardOutcome();
        try
        {
            return await ForwardCoreAsync(http, layer, outcome);
        }
        catch (GatewayRequestException e)
        {
            return Error(e.StatusCode, e.Message);
        }
        catch (GatewayOverloadException e)
        {
            outcome.Overloaded = true;
            http.Response.Headers.RetryAfter = GatewayAdmission.RetryAfterSeconds.ToString(CultureInfo.InvariantCulture);
            return Error(StatusCodes.Status503ServiceUnavailable, e.Message);
        }
    }

    private static async Task<IResult> ForwardCoreAsync(HttpContext http, string? layerText, ForwardOutcome outcome)
    {
        var options = http.RequestServices.GetRequiredService<IOptions<MoeClusterOptions>>().Value;
        var catalog = http.RequestServices.GetRequiredService<ModelCatalog>();
        var grains = http.RequestServices.GetRequiredService<IGrainFactory>();
        bool msgpack = BodyFormat(http.Request.ContentType);
        var limits = new GatewayBodyLimits(options.Gateway.MaxTokensPerRequest, options.Gateway.MaxJsonDepth, options.WireLimits);
        var admission = http.RequestServices.GetRequiredService<GatewayAdmission>();
        int maxBytes = options.Gateway.MaxRequestBytes;
        if (http.Request.ContentLength is long declared && declared > maxBytes)
        {
            // Refused from its Content-Length alone: nothing to reserve, nothing read.
            return Error(StatusCodes.Status413PayloadTooLarge, string.Create(CultureInfo.InvariantCulture,
                $"request body of {declared} bytes exceeds the limit of {maxBytes} bytes (MoECluster:Gateway:MaxRequestBytes)"));
        }

        // Admitted before any byte of the body is read: a body of unknown length (chunked) reserves the whole size limit.
        bool canHaveBody = http.Features.Get<IHttpRequestBodyDetectionFeature>()?.CanHaveBody ?? true;
        using var ticket = admission.Admit(http.Request.ContentLength ?? (canHaveBody ? maxBytes : 0));
        ForwardInput input;
        using (var body = await PooledRequestBody.ReadAsync(http, maxBytes, TimeSpan.FromSeconds(options.Gateway.BodyReadTimeoutSeconds)))
        {
            input = msgpack ? GatewayRequestParser.ParseMessagePack(body.Memory, limits) : GatewayRequestParser.ParseJson(body.Memory.Span, limits);
        }

        ticket.ReleaseBody();
        if (input.Model is { Length: > MaxModelNameShown } name)
        {
            // A model id is short; the client's text is not echoed whole.
            return Error(StatusCodes.Status404NotFound, string.Create(CultureInfo.InvariantCulture,
                $"unknown model '{name[..MaxModelNameShown]}...' ({name.Length} characters); served models: {string.Join(", ", options.Models.Keys)}"));
        }

        string modelId;
        try
        {
            modelId = options.ResolveModel(input.Model);
        }
        catch (ArgumentException e)
        {
            return Error(StatusCodes.Status404NotFound, e.Message);
        }

        outcome.Model = modelId;
        MoECluster.Model.Configuration.MoeModelConfig config;
        try
        {
            config = catalog.Get(modelId).Config;
        }
        catch (Exception e) when (IsModelUnavailable(e))
        {
            // The server's files, not the client's request: tried again on the next request.
            return Error(StatusCodes.Status503ServiceUnavailable, $"model {modelId} cannot be opened on this front-end: {e.Message}");
        }

        int? layer = null;
        if (layerText is not null)
        {
            if (!int.TryParse(layerText, NumberStyles.None, CultureInfo.InvariantCulture, out int l))
            {
                string shown = layerText.Length <= 32 ? layerText : layerText[..32] + "...";
                return Error(StatusCodes.Status404NotFound, ForwardRequestValidator.NotAnMoeLayer(shown, modelId, config));
            }

            layer = l;
        }

        // The wire type is parsed here, once: the router gets the typed value.
        string wireText = input.Wire ?? options.DefaultWire;
        if (!WireCodecs.TryParse(wireText, out IWireCodec? wire))
        {
            return Error(StatusCodes.Status400BadRequest, WireCodecs.NotAWire(wireText));
        }

        ForwardReply reply;
        try
        {
            // The router's own check, run here first so that a bad request never waits in the router queue.
            ForwardRequestValidator.Validate(modelId, config, layer, input.Hidden, input.Tokens, wire.Id, options.Gateway.MaxTokensPerRequest);

            // The bounded queue in front of the routers: wait until this request's tokens fit (or 503).
            using var routers = await admission.EnterRoutersAsync(input.Tokens, http.RequestAborted);
            reply = await grains.GetGrain<IMoeRouterGrain>(modelId).Forward(new ForwardCall(layer, input.Hidden, input.Tokens, wire.Id), http.RequestAborted);
        }
        catch (ShardBusyException e)
        {
            return Busy(http, e);
        }
        catch (Exception e) when (e is not GatewayOverloadException && !(e is OperationCanceledException && http.RequestAborted.IsCancellationRequested))
        {
            var (status, message) = RouterError(e);
            return Error(status, message);
        }

        if (Array.FindIndex(reply.Hidden, v => !float.IsFinite(v)) is int nonFinite and >= 0)
        {
            // The router checks every step; an answer that is not finite anyway is an internal failure, never a 200.
            return Error(StatusCodes.Status502BadGateway, $"the cluster computed a non-finite value at hidden_states[{nonFinite / input.Width}][{nonFinite % input.Width}]");
        }

        outcome.Tokens = input.Tokens;
        var traffic = reply.Layers.Select(GatewayTraffic.From).ToList();

        if (msgpack)
        {
            var response = new GatewayForwardResponse
            {
                Model = modelId,
                HiddenStates = ActivationBlock.Encode(reply.Hidden, input.Tokens, input.Width, WireDType.F32),
                Layers = traffic,
            };
            return Results.Bytes(WireFormat.Serialize(response), MessagePackContentType);
        }

        var rows = new float[input.Tokens][];
        for (int t = 0; t < input.Tokens; t++)
        {
            rows[t] = reply.Hidden.AsSpan(t * input.Width, input.Width).ToArray();
        }

        return Results.Json(new { model = modelId, hidden_states = rows, layers = traffic }, Json);
    }

    /// <summary>
    /// The answer to a forward request refused because an expert shard's queue is full (<see cref="ShardBusyException"/>):
    /// back-pressure, 429 Too Many Requests with the shard's Retry-After (whole seconds), counted as busy by
    /// <see cref="GatewayRequestGuard"/> — neither a failure nor the client's fault.
    /// </summary>
    public static IResult Busy(HttpContext http, ShardBusyException exception)
    {
        ArgumentNullException.ThrowIfNull(http);
        ArgumentNullException.ThrowIfNull(exception);
        if (http.Features.Get<ForwardOutcome>() is { } outcome)
        {
            outcome.Busy = true;
        }

        http.Response.Headers.RetryAfter = exception.RetryAfterSeconds.ToString(CultureInfo.InvariantCulture);
        return Error(StatusCodes.Status429TooManyRequests, exception.Message);
    }

    /// <summary>
    /// The answer to what a forward request's validation or its router threw: a refused request
    /// (<see cref="ForwardRequestException"/>) is the client's (400, 413 or 404 with its message); an input whose forward
    /// leaves the float32 or wire range, 422; a shard whose queue is full, 429; a shard's failure, 502; the deadline, 504; the cluster's state (Orleans),
    /// 503; anything else — an <see cref="ArgumentException"/> from a bug included — is the cluster's fault, 500.
    /// </summary>
    public static (int Status, string Message) RouterError(Exception exception)
    {
        ArgumentNullException.ThrowIfNull(exception);
        return exception switch
        {
            ForwardRequestException e => (e.Problem switch
            {
                ForwardRequestProblem.TooLarge => StatusCodes.Status413PayloadTooLarge,
                ForwardRequestProblem.UnknownLayer => StatusCodes.Status404NotFound,
                _ => StatusCodes.Status400BadRequest,
            }, e.Message),

            // Finite input whose forward leaves the float32 range (or the wire's): the input is too large for the model.
            ForwardOverflowException e => (StatusCodes.Status422UnprocessableEntity, e.Message),

            // An expert shard's queue is full: back-pressure (429 with the shard's Retry-After, see ForwardAsync).
            ShardBusyException e => (StatusCodes.Status429TooManyRequests, e.Message),

            // An expert shard refused or broke a call the router built: the cluster's fault.
            ShardFailureException e => (StatusCodes.Status502BadGateway, e.Message),
            TimeoutException e => (StatusCodes.Status504GatewayTimeout, e.Message),
            OrleansException e => (StatusCodes.Status503ServiceUnavailable, e.Message),
            _ => (StatusCodes.Status500InternalServerError, $"internal error in the cluster ({exception.GetType().Name}): {exception.Message}"),
        };
    }

    /// <summary>
    /// True for a MessagePack body, false for JSON; anything else is refused with 415 before the body is read.
    /// JSON is <c>application/json</c> (or <c>application/*+json</c>) in UTF-8; MessagePack is
    /// <c>application/x-msgpack</c>, <c>application/msgpack</c> or <c>application/vnd.msgpack</c>.
    /// </summary>
    private static bool BodyFormat(string? contentType)
    {
        if (contentType is not null && MediaTypeHeaderValue.TryParse(contentType, out var media) && media.MediaType is { } type)
        {
            if (IsMessagePack(type))
            {
                return true;
            }

            bool json = type.Equals("application/json", StringComparison.OrdinalIgnoreCase)
                || (type.StartsWith("application/", StringComparison.OrdinalIgnoreCase) && type.EndsWith("+json", StringComparison.OrdinalIgnoreCase));
            string? charset = media.CharSet?.Trim('"');
            if (json && (charset is null || charset.Equals("utf-8", StringComparison.OrdinalIgnoreCase) || charset.Equals("utf8", StringComparison.OrdinalIgnoreCase)))
            {
                return false;
            }
        }

        string shown = contentType is null ? "none" : contentType.Length <= 64 ? $"'{contentType}'" : $"'{contentType[..64]}...'";
        throw new GatewayRequestException(StatusCodes.Status415UnsupportedMediaType,
            $"Content-Type {shown} is not supported: send application/json (UTF-8) or {MessagePackContentType}");
    }

    private static bool IsMessagePack(string mediaType) =>
        mediaType.Equals(MessagePackContentType, StringComparison.OrdinalIgnoreCase)
        || mediaType.Equals("application/msgpack", StringComparison.OrdinalIgnoreCase)
        || mediaType.Equals("application/vnd.msgpack", StringComparison.OrdinalIgnoreCase);

    /// <summary>Why a configured model may fail to open: its files are missing, unreadable or corrupt.</summary>
    private static bool IsModelUnavailable(Exception e) => e is IOException or InvalidDataException or UnauthorizedAccessException
        or MoECluster.Model.Configuration.ModelConfigException or MoECluster.Model.Checkpoints.SafetensorsFormatException;

    private static IResult Error(int status, string message) => Results.Json(new { error = message }, Json, statusCode: status);
}
