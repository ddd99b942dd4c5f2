using System.Globalization;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Mvc;
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
using MoECluster.Gateway.KServe;
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
/// <c>POST /v1/forward</c> (the whole MoE stack), <c>GET /v1/models</c>, <c>GET /stats</c>, KServe's Open Inference Protocol
/// v2 on the same forward handler (<see cref="KServeEndpoints"/>), the OpenAPI document (<see cref="OpenApiPath"/>), and the
/// live routing page (<see cref="LivePage"/>).
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
        services.AddMoeOpenApi();
        return services;
    }

    /// <summary>
    /// The OpenAPI document (<see cref="OpenApiPath"/>, document "v1"): every endpoint of <see cref="MapMoeApi"/>; the
    /// Orleans Dashboard's and the live page's are left out.
    /// </summary>
    public static IServiceCollection AddMoeOpenApi(this IServiceCollection services)
    {
        services.AddOpenApi(options =>
        {
            options.ShouldInclude = description => description.RelativePath is { } path
                && (path.StartsWith("v1/", StringComparison.Ordinal) || path.StartsWith("v2", StringComparison.Ordinal)
                    || path.StartsWith("openapi/", StringComparison.Ordinal) || path == "stats");
            options.AddDocumentTransformer((document, _, _) =>
            {
                document.Info.Title = "MoECluster gateway";
                document.Info.Description = "Forward requests of MoE layers (our own JSON and MessagePack API under /v1) and KServe's Open Inference Protocol v2 (/v2).";
                return Task.CompletedTask;
            });
        });
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

        app.MapMoeApi();
        app.MapLivePage();
        app.MapOrleansDashboard(routePrefix: DashboardPath);
        return app;
    }

    /// <summary>
    /// The HTTP API without the guard, the live page and the dashboard: <c>POST /v1/layers/{layer}/forward</c>,
    /// <c>POST /v1/forward</c>, <c>GET /v1/models</c>, <c>GET /stats</c>, KServe's Open Inference Protocol v2
    /// (<see cref="KServeEndpoints"/>) and the OpenAPI document of all of them (<see cref="OpenApiPath"/>).
    /// </summary>
    public static IEndpointRouteBuilder MapMoeApi(this IEndpointRouteBuilder endpoints)
    {
        ArgumentNullException.ThrowIfNull(endpoints);

        // {layer} is taken as text so that a layer that is no integer gets the same clear 404 as an unknown one.
        endpoints.MapPost("/v1/layers/{layer}/forward", (string layer, HttpContext http) => ForwardAsync(http, new GatewayForwardProtocol(layer)))
            .WithName("forward-layer").WithSummary("One MoE layer's mixer output for already-normed hidden states [T, d] (JSON or MessagePack)").WithTags("v1");
        endpoints.MapPost("/v1/forward", (Delegate)((HttpContext http) => ForwardAsync(http, new GatewayForwardProtocol(null))))
            .WithName("forward-stack").WithSummary("The whole MoE stack x <- x + mixer_l(RMSNorm_l(x)) over every MoE layer (JSON or MessagePack)").WithTags("v1");
        endpoints.MapGet("/v1/models", (Delegate)((HttpContext http) => ListModels(http)))
            .WithName("list-models").WithSummary("The served models, in the list shape OpenAI-compatible tools read").WithTags("v1");
        endpoints.MapGet("/stats", async ([FromServices] LiveStatsFeed feed, CancellationToken cancel) => Results.Json(await feed.CollectAsync(cancel), Json))
            .WithName("stats").WithSummary("Traffic of every silo and this gateway's request figures").WithTags("v1");
        endpoints.MapKServe();
        Admin.PlacementEndpoints.MapPlacement(endpoints);
        endpoints.MapOpenApi(OpenApiPath).WithName("openapi").WithSummary("This document").WithTags("openapi");
        return endpoints;
    }

    /// <summary>Where the gateway serves its OpenAPI document (Microsoft.AspNetCore.OpenApi).</summary>
    public const string OpenApiPath = "/openapi/{documentName}.json";

    /// <summary>
    /// <c>GET /v1/models</c>: <c>{"object": "list", "data": [{"id", "object": "model", "created", "owned_by", ...}]}</c>, the
    /// shape OpenAI-compatible tools read, each entry with our own fields beside (mode, hidden_size, latent_size, experts,
    /// top_k, moe_layers, shards_per_layer, is_default). <c>created</c> is the Unix time (seconds) of the model's config.json.
    /// </summary>
    private static IResult ListModels(HttpContext http)
    {
        var catalog = http.RequestServices.GetRequiredService<ModelCatalog>();
        var options = http.RequestServices.GetRequiredService<IOptions<MoeClusterOptions>>().Value;
        var models = new List<object>();
        foreach (var (id, entry) in options.Models)
        {
            MoECluster.Model.Configuration.MoeModelConfig config;
            try
            {
                config = catalog.Get(id).Config;
            }
            catch (Exception e) when (IsModelUnavailable(e))
            {
                return Error(StatusCodes.Status503ServiceUnavailable, $"model {id} cannot be opened on this front-end: {e.Message}");
            }

            models.Add(new
            {
                id,
                @object = "model",
                created = CreatedOf(entry.Path),
                owned_by = ModelOwner,
                mode = MoeModes.Of(config),
                hidden_size = config.HiddenSize,
                latent_size = config.MoeLatentSize,
                experts = config.NRoutedExperts,
                top_k = config.NumExpertsPerTok,
                moe_layers = config.MoeLayers,
                shards_per_layer = Math.Min(options.ShardsPerLayer, config.NRoutedExperts),
                is_default = id == options.ResolveModel(null),
            });
        }

        return Results.Json(new { @object = "list", data = models }, Json);
    }

    /// <summary>The <c>owned_by</c> of every model in <c>/v1/models</c>.</summary>
    public const string ModelOwner = "moecluster";

    /// <summary>Unix seconds of the model directory's config.json (0 when it cannot be read).</summary>
    private static long CreatedOf(string directory)
    {
        try
        {
            var written = File.GetLastWriteTimeUtc(Path.Combine(directory, "config.json"));
            return written.Year <= 1601 ? 0 : new DateTimeOffset(written, TimeSpan.Zero).ToUnixTimeSeconds();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException)
        {
            return 0;
        }
    }

    /// <summary>
    /// Every forward request, whatever its protocol (<see cref="ForwardProtocol"/>: ours or KServe v2's): the same
    /// limits, admission, validation, router call and error statuses; only the body's format and the answer's differ.
    /// </summary>
    internal static async Task<IResult> ForwardAsync(HttpContext http, ForwardProtocol protocol)
    {
        // The guard counts the request once it is answered; it reads what was resolved here.
        var outcome = http.Features.Get<ForwardOutcome>() ?? new ForwardOutcome();
        try
        {
            return await ForwardCoreAsync(http, protocol, outcome);
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

    private static async Task<IResult> ForwardCoreAsync(HttpContext http, ForwardProtocol protocol, ForwardOutcome outcome)
    {
        var options = http.RequestServices.GetRequiredService<IOptions<MoeClusterOptions>>().Value;
        var catalog = http.RequestServices.GetRequiredService<ModelCatalog>();
        var grains = http.RequestServices.GetRequiredService<IGrainFactory>();
        protocol.CheckHeaders(http.Request);
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
            input = protocol.Parse(body.Memory, limits);
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
        if (protocol.Layer is string layerText)
        {
            if (!int.TryParse(layerText, NumberStyles.None, CultureInfo.InvariantCulture, out int l))
            {
                string shown = layerText.Length <= 32 ? layerText : layerText[..32] + "...";
                return Error(StatusCodes.Status404NotFound, ForwardRequestValidator.NotAnMoeLayer(shown, modelId, config));
            }

            layer = l;
        }

        // The wire types are parsed here, once: the router gets the typed values. The request's fields win, per direction;
        // the silo's default (MoECluster:DefaultWire, DefaultWireDispatch, DefaultWireCombine) fills what it leaves out.
        if (!input.TryResolveWire(options.DefaultWirePair(), out WirePair? wire, out string? wireError))
        {
            return Error(StatusCodes.Status400BadRequest, wireError);
        }

        ForwardReply reply;
        try
        {
            // The router's own check, run here first so that a bad request never waits in the router queue.
            ForwardRequestValidator.Validate(modelId, config, layer, input.Hidden, input.Tokens, wire.Dispatch.Id, wire.Combine.Id, options.Gateway.MaxTokensPerRequest);

            // The bounded queue in front of the routers: wait until this request's tokens fit (or 503).
            using var routers = await admission.EnterRoutersAsync(input.Tokens, http.RequestAborted);
            reply = await grains.GetGrain<IMoeRouterGrain>(modelId).Forward(new ForwardCall(layer, input.Hidden, input.Tokens, wire), http.RequestAborted);
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

        return protocol.Answer(modelId, reply, input, traffic);
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

    /// <summary>Why a configured model may fail to open: its files are missing, unreadable or corrupt.</summary>
    internal static bool IsModelUnavailable(Exception e) => e is IOException or InvalidDataException or UnauthorizedAccessException
        or MoECluster.Model.Configuration.ModelConfigException or MoECluster.Model.Checkpoints.SafetensorsFormatException;

    internal static IResult Error(int status, string message) => Results.Json(new { error = message }, Json, statusCode: status);
}
