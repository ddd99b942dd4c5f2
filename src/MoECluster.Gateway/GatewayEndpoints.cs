using System.Diagnostics;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;
using MoECluster.Cluster.Grains;
using MoECluster.Cluster.Hosting;
using MoECluster.Gateway.Health;
using MoECluster.Gateway.Live;
using MoECluster.Wire;
using Orleans.Dashboard;

namespace MoECluster.Gateway;

/// <summary>
/// <c>POST /v1/layers/{layer}/forward</c> (one MoE layer's mixer output for an already-normed input),
/// <c>POST /v1/forward</c> (the whole MoE stack), <c>GET /stats</c>, and the live routing page (<see cref="LivePage"/>).
/// Health (<c>/health</c>, <c>/alive</c>) is served by the service defaults from the health checks registered here.
/// Bodies are JSON (<c>{"model", "wire", "hidden_states": [[...], ...]}</c>) or MessagePack
/// (<see cref="GatewayForwardRequest"/>, Content-Type application/x-msgpack); the answer uses the same format.
/// Bad input gets a 4xx with <c>{"error": "..."}</c>.
/// </summary>
public static class GatewayEndpoints
{
    public const string MessagePackContentType = "application/x-msgpack";

    /// <summary>Where the Orleans Dashboard (Microsoft.Orleans.Dashboard) is mounted.</summary>
    public const string DashboardPath = "/dashboard";

    public static JsonSerializerOptions Json { get; } = new(JsonSerializerDefaults.Web)
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        WriteIndented = false,
    };

    /// <summary>The gateway's services: request statistics, the live stats feed and the front-end readiness check.</summary>
    public static IServiceCollection AddMoeGateway(this IServiceCollection services)
    {
        services.TryAddSingleton(TimeProvider.System);
        services.AddSingleton<GatewayRequestStatistics>();
        services.AddSingleton<LiveStatsFeed>();
        services.AddHealthChecks().AddCheck<ExpertSilosHealthCheck>("expert-silos");
        return services;
    }

    public static IEndpointRouteBuilder MapMoeGateway(this IEndpointRouteBuilder app)
    {
        app.MapPost("/v1/layers/{layer:int}/forward", (int layer, HttpContext http) => ForwardAsync(http, layer));
        app.MapPost("/v1/forward", (Delegate)((HttpContext http) => ForwardAsync(http, layer: null)));
        app.MapGet("/v1/models", (ModelCatalog catalog, IOptions<MoeClusterOptions> options) => Results.Json(
            options.Value.Models.Keys.Select(id => catalog.Get(id).Config).Zip(options.Value.Models.Keys, (c, id) => new
            {
                id,
                mode = c.IsLatent ? "latent" : "standard",
                hidden_size = c.HiddenSize,
                latent_size = c.MoeLatentSize,
                experts = c.NRoutedExperts,
                top_k = c.NumExpertsPerTok,
                moe_layers = c.MoeLayers,
                shards_per_layer = Math.Min(options.Value.ShardsPerLayer, c.NRoutedExperts),
                is_default = id == options.Value.ResolveModel(null),
            }), Json));
        app.MapGet("/stats", async (LiveStatsFeed feed, CancellationToken cancel) => Results.Json(await feed.CollectAsync(cancel), Json));
        app.MapLivePage();
        app.MapOrleansDashboard(routePrefix: DashboardPath);
        return app;
    }

    private static async Task<IResult> ForwardAsync(HttpContext http, int? layer)
    {
        var statistics = http.RequestServices.GetRequiredService<GatewayRequestStatistics>();
        long started = Stopwatch.GetTimestamp();
        var outcome = new ForwardOutcome();
        var result = await ForwardCoreAsync(http, layer, outcome);
        int status = (result as IStatusCodeHttpResult)?.StatusCode ?? StatusCodes.Status200OK;
        if (status < 300)
        {
            statistics.RecordAnswered(outcome.Model, outcome.Tokens, Stopwatch.GetElapsedTime(started));
        }
        else if (status < 500)
        {
            statistics.RecordRejected(outcome.Model);
        }
        else
        {
            statistics.RecordFailed(outcome.Model);
        }

        return result;
    }

    private static async Task<IResult> ForwardCoreAsync(HttpContext http, int? layer, ForwardOutcome outcome)
    {
        var options = http.RequestServices.GetRequiredService<IOptions<MoeClusterOptions>>().Value;
        var catalog = http.RequestServices.GetRequiredService<ModelCatalog>();
        var grains = http.RequestServices.GetRequiredService<IGrainFactory>();
        bool msgpack = IsMessagePack(http.Request.ContentType);
        ForwardInput input;
        try
        {
            byte[] body = await ReadBodyAsync(http.Request, options.WireLimits.MaxMessageBytes);
            input = msgpack ? FromMessagePack(body, options.WireLimits) : FromJson(body);
        }
        catch (BadRequestException e)
        {
            return Error(e.StatusCode, e.Message);
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
        outcome.Tokens = input.Tokens;
        var config = catalog.Get(modelId).Config;
        if (input.Width != config.HiddenSize)
        {
            return Error(StatusCodes.Status400BadRequest, $"hidden_states rows are {input.Width} wide; model {modelId} has hidden_size {config.HiddenSize}");
        }

        if (layer is int l && !config.MoeLayers.Contains(l))
        {
            return Error(StatusCodes.Status404NotFound, $"layer {l} is not an MoE layer of {modelId}; MoE layers: {string.Join(", ", config.MoeLayers)}");
        }

        int bad = Array.FindIndex(input.Hidden, v => !float.IsFinite(v));
        if (bad >= 0)
        {
            return Error(StatusCodes.Status400BadRequest, $"hidden_states[{bad / input.Width}][{bad % input.Width}] is not finite");
        }

        string wire = input.Wire ?? options.DefaultWire;
        if (!WireDTypes.TryParse(wire, out _))
        {
            return Error(StatusCodes.Status400BadRequest, $"wire '{wire}' is not one of fp32, bf16, fp16");
        }

        ForwardReply reply;
        try
        {
            reply = await grains.GetGrain<IMoeRouterGrain>(modelId).Forward(new ForwardCall(layer, input.Hidden, input.Tokens, wire), http.RequestAborted);
        }
        catch (ArgumentException e)
        {
            return Error(StatusCodes.Status400BadRequest, e.Message);
        }
        catch (TimeoutException e)
        {
            return Error(StatusCodes.Status504GatewayTimeout, e.Message);
        }
        catch (OrleansException e)
        {
            return Error(StatusCodes.Status503ServiceUnavailable, e.Message);
        }

        var traffic = reply.Layers.Select(t => new GatewayLayerTraffic
        {
            Layer = t.Layer,
            Mode = t.Mode,
            Wire = t.Wire,
            Tokens = t.Tokens,
            Width = t.Width,
            RoutedRows = t.RoutedRows,
            DispatchPayloadBytes = t.DispatchPayloadBytes,
            CombinePayloadBytes = t.CombinePayloadBytes,
            DispatchMessageBytes = t.DispatchMessageBytes,
            CombineMessageBytes = t.CombineMessageBytes,
            PredictedPayloadBytes = t.PredictedPayloadBytes,
            Messages = t.Messages,
            Milliseconds = t.Milliseconds,
        }).ToList();

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

    private static bool IsMessagePack(string? contentType) =>
        contentType is not null && (contentType.StartsWith(MessagePackContentType, StringComparison.OrdinalIgnoreCase)
            || contentType.StartsWith("application/msgpack", StringComparison.OrdinalIgnoreCase)
            || contentType.StartsWith("application/vnd.msgpack", StringComparison.OrdinalIgnoreCase));

    private static async Task<byte[]> ReadBodyAsync(HttpRequest request, int limit)
    {
        if (request.ContentLength is long declared && declared > limit)
        {
            throw new BadRequestException(StatusCodes.Status413PayloadTooLarge, $"request body of {declared} bytes exceeds the limit of {limit} bytes");
        }

        using var buffer = new MemoryStream();
        var chunk = new byte[81920];
        int read;
        while ((read = await request.Body.ReadAsync(chunk)) > 0)
        {
            if (buffer.Length + read > limit)
            {
                throw new BadRequestException(StatusCodes.Status413PayloadTooLarge, $"request body exceeds the limit of {limit} bytes");
            }

            buffer.Write(chunk, 0, read);
        }

        if (buffer.Length == 0)
        {
            throw new BadRequestException(StatusCodes.Status400BadRequest, "empty request body");
        }

        return buffer.ToArray();
    }

    private static ForwardInput FromMessagePack(byte[] body, WireLimits limits)
    {
        try
        {
            var request = GatewayWire.DecodeRequest(body, limits);
            return new ForwardInput(request.Model, request.Wire, request.HiddenStates.Decode(), request.HiddenStates.Rows, request.HiddenStates.Width);
        }
        catch (WireFormatException e)
        {
            throw new BadRequestException(StatusCodes.Status400BadRequest, $"malformed MessagePack body: {e.Message}");
        }
    }

    private static ForwardInput FromJson(byte[] body)
    {
        JsonForwardRequest? request;
        try
        {
            request = JsonSerializer.Deserialize<JsonForwardRequest>(body, Json);
        }
        catch (JsonException e)
        {
            throw new BadRequestException(StatusCodes.Status400BadRequest, $"malformed JSON body: {e.Message}");
        }

        if (request?.HiddenStates is not { Length: > 0 } rows)
        {
            throw new BadRequestException(StatusCodes.Status400BadRequest, "hidden_states is missing or empty: expected [[...], ...] of shape [T, d]");
        }

        int width = rows[0]?.Length ?? 0;
        if (width == 0)
        {
            throw new BadRequestException(StatusCodes.Status400BadRequest, "hidden_states[0] is empty");
        }

        var hidden = new float[(long)rows.Length * width];
        for (int t = 0; t < rows.Length; t++)
        {
            if (rows[t] is not { } row || row.Length != width)
            {
                throw new BadRequestException(StatusCodes.Status400BadRequest, $"hidden_states[{t}] has {rows[t]?.Length ?? 0} values; row 0 has {width}");
            }

            row.CopyTo(hidden, (long)t * width);
        }

        return new ForwardInput(request.Model, request.Wire, hidden, rows.Length, width);
    }

    private static IResult Error(int status, string message) => Results.Json(new { error = message }, Json, statusCode: status);

    /// <summary>What the request statistics need to know of a forward request once it is answered.</summary>
    private sealed class ForwardOutcome
    {
        public string Model { get; set; } = string.Empty;

        public int Tokens { get; set; }
    }

    private sealed record ForwardInput(string? Model, string? Wire, float[] Hidden, int Tokens, int Width);

    private sealed class JsonForwardRequest
    {
        public string? Model { get; set; }

        public string? Wire { get; set; }

        public float[]?[]? HiddenStates { get; set; }
    }

    private sealed class BadRequestException(int statusCode, string message) : Exception(message)
    {
        public int StatusCode { get; } = statusCode;
    }
}
