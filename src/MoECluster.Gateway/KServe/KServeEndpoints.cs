using System.Globalization;
using System.Net.Http.Headers;
using System.Reflection;
using System.Text.Json;
using System.Text.Json.Serialization;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Options;
using MoECluster.Cluster.Contracts;
using MoECluster.Cluster.Hosting;
using MoECluster.Model.Configuration;
using MoECluster.Wire;

namespace MoECluster.Gateway.KServe;

/// <summary>
/// KServe's Open Inference Protocol v2 (REST) beside our own API, on the same handlers:
/// <list type="bullet">
/// <item><c>GET /v2</c>: server metadata (name, version, extensions: <c>binary_tensor_data</c>).</item>
/// <item><c>GET /v2/health/live</c>: the liveness checks of <c>/alive</c>; <c>GET /v2/health/ready</c>: every check of
/// <c>/health</c> (200 when healthy or degraded, 503 otherwise). Both are open without an API key, like those.</item>
/// <item><c>GET /v2/models/{model}</c>: metadata, one input and one output <c>hidden_states</c>, FP32, shape [-1, d].</item>
/// <item><c>GET /v2/models/{model}/ready</c>: the gateway is ready and the model opens on this front-end.</item>
/// <item>The model routes with a version, <c>/v2/models/{model}/versions/{version}[/ready|/infer]</c>: every model has one
/// version, <see cref="ModelVersion"/>; another is a 404.</item>
/// <item><c>POST /v2/models/{model}/infer</c>: a forward through <see cref="GatewayEndpoints.ForwardAsync"/> (the same
/// limits, admission, API keys, validation and error statuses as <c>/v1/forward</c>): request parameter <c>layer</c>
/// (an integer) runs that MoE layer, as <c>/v1/layers/{layer}/forward</c>; without it, the whole stack, as
/// <c>/v1/forward</c>. JSON tensors or the binary tensor extension (<see cref="KServeInferParser"/>).</item>
/// </list>
/// Errors are <c>{"error": "..."}</c>, the protocol's error object and our own.
/// </summary>
public static class KServeEndpoints
{
    /// <summary>The model version every model has (the protocol names versions; a served model has one).</summary>
    public const string ModelVersion = "1";

    /// <summary>The platform <c>GET /v2/models/{model}</c> names.</summary>
    public const string Platform = "moecluster";

    /// <summary>The tag of the liveness checks (<c>/alive</c> serves those): the service defaults' LiveTag.</summary>
    public const string LiveTag = "live";

    /// <summary>The content type of an answer with binary tensor data (JSON header, then raw bytes).</summary>
    public const string BinaryContentType = "application/octet-stream";

    /// <summary>The gateway's JSON conventions (snake_case), leaving out nulls (an answer without an id has no id).</summary>
    internal static JsonSerializerOptions Json { get; } = new(GatewayEndpoints.Json)
    {
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    };

    /// <summary>Maps the protocol's endpoints on <paramref name="endpoints"/>.</summary>
    public static IEndpointRouteBuilder MapKServe(this IEndpointRouteBuilder endpoints)
    {
        ArgumentNullException.ThrowIfNull(endpoints);
        endpoints.MapGet("/v2", (Delegate)(() => Results.Json(new
        {
            name = Platform,
            version = typeof(KServeEndpoints).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion ?? "0",
            extensions = new[] { "binary_tensor_data" },
        }, Json))).WithName("v2-server-metadata").WithSummary("KServe v2 server metadata").WithTags("KServe v2");
        endpoints.MapGet("/v2/health/live", (Delegate)((HttpContext http) => HealthAsync(http, "live", r => r.Tags.Contains(LiveTag))))
            .WithName("v2-live").WithSummary("KServe v2 liveness (the checks of /alive)").WithTags("KServe v2");
        endpoints.MapGet("/v2/health/ready", (Delegate)((HttpContext http) => HealthAsync(http, "ready", null)))
            .WithName("v2-ready").WithSummary("KServe v2 readiness (every check of /health)").WithTags("KServe v2");
        endpoints.MapGet("/v2/models/{model}", (string model, HttpContext http) => Metadata(http, model))
            .WithName("v2-model-metadata").WithSummary("KServe v2 model metadata: input and output hidden_states, FP32, [-1, d]").WithTags("KServe v2");
        endpoints.MapGet("/v2/models/{model}/ready", (string model, HttpContext http) => ModelReadyAsync(http, model))
            .WithName("v2-model-ready").WithSummary("KServe v2 model readiness").WithTags("KServe v2");
        endpoints.MapPost("/v2/models/{model}/infer", (string model, HttpContext http) => GatewayEndpoints.ForwardAsync(http, new KServeInferProtocol(model)))
            .WithName("v2-infer")
            .WithSummary("KServe v2 inference: parameters.layer runs one MoE layer (as /v1/layers/{layer}/forward), none the whole stack (as /v1/forward)")
            .WithTags("KServe v2");

        // The same with a version in the path: every model has one, ModelVersion; another is a 404.
        endpoints.MapGet("/v2/models/{model}/versions/{version}", (string model, string version, HttpContext http) =>
            UnknownVersion(http, model, version) ?? Metadata(http, model))
            .WithName("v2-model-version-metadata").WithSummary("KServe v2 model metadata of a version (every model has version 1)").WithTags("KServe v2");
        endpoints.MapGet("/v2/models/{model}/versions/{version}/ready", async (string model, string version, HttpContext http) =>
            UnknownVersion(http, model, version) ?? await ModelReadyAsync(http, model))
            .WithName("v2-model-version-ready").WithSummary("KServe v2 model readiness of a version").WithTags("KServe v2");
        endpoints.MapPost("/v2/models/{model}/versions/{version}/infer", async (string model, string version, HttpContext http) =>
            UnknownVersion(http, model, version) ?? await GatewayEndpoints.ForwardAsync(http, new KServeInferProtocol(model)))
            .WithName("v2-model-version-infer").WithSummary("KServe v2 inference on a version (every model has version 1)").WithTags("KServe v2");
        return endpoints;
    }

    private static async Task<IResult> HealthAsync(HttpContext http, string name, Func<HealthCheckRegistration, bool>? predicate)
    {
        var health = http.RequestServices.GetRequiredService<HealthCheckService>();
        var report = await health.CheckHealthAsync(predicate, http.RequestAborted);
        bool up = report.Status != HealthStatus.Unhealthy;
        var body = new Dictionary<string, object?> { [name] = up };
        if (!up)
        {
            body["error"] = report.Entries.Values.Where(e => e.Status == HealthStatus.Unhealthy).Select(e => e.Description).FirstOrDefault(d => d is not null) ?? "unhealthy";
        }

        return Results.Json(body, Json, statusCode: up ? StatusCodes.Status200OK : StatusCodes.Status503ServiceUnavailable);
    }

    /// <summary>A 404 for a version other than <see cref="ModelVersion"/> of a served model (null when the version is served).</summary>
    private static IResult? UnknownVersion(HttpContext http, string model, string version)
    {
        if (version == ModelVersion || !TryOpen(http, model, out _, out IResult? error) && error is IStatusCodeHttpResult { StatusCode: StatusCodes.Status404NotFound })
        {
            // The right version, or a model that is not served (whose 404 the handler answers).
            return null;
        }

        string shown = version.Length <= 32 ? version : version[..32] + "...";
        return GatewayEndpoints.Error(StatusCodes.Status404NotFound, $"model {model} has no version '{shown}'; its one version is {ModelVersion}");
    }

    private static IResult Metadata(HttpContext http, string model)
    {
        if (!TryOpen(http, model, out MoeModelConfig? config, out IResult? error))
        {
            return error;
        }

        var tensor = new[] { new { name = KServeInferParser.TensorName, datatype = "FP32", shape = new long[] { -1, config.HiddenSize } } };
        return Results.Json(new
        {
            name = model,
            versions = new[] { ModelVersion },
            platform = Platform,
            inputs = tensor,
            outputs = tensor,
            parameters = new
            {
                mode = MoeModes.Of(config),
                hidden_size = config.HiddenSize,
                latent_size = config.MoeLatentSize,
                experts = config.NRoutedExperts,
                top_k = config.NumExpertsPerTok,
                moe_layers = string.Join(",", config.MoeLayers.Select(l => l.ToString(CultureInfo.InvariantCulture))),
                input_datatypes = "FP32 (JSON or binary), FP16 and BF16 (binary)",
            },
        }, Json);
    }

    private static async Task<IResult> ModelReadyAsync(HttpContext http, string model)
    {
        if (!TryOpen(http, model, out _, out IResult? error))
        {
            if (error is IStatusCodeHttpResult { StatusCode: StatusCodes.Status404NotFound })
            {
                return error;
            }

            return Results.Json(new { name = model, ready = false, error = "the model cannot be opened on this front-end" }, Json, statusCode: StatusCodes.Status503ServiceUnavailable);
        }

        var report = await http.RequestServices.GetRequiredService<HealthCheckService>().CheckHealthAsync(http.RequestAborted);
        bool ready = report.Status != HealthStatus.Unhealthy;
        return Results.Json(new { name = model, ready }, Json, statusCode: ready ? StatusCodes.Status200OK : StatusCodes.Status503ServiceUnavailable);
    }

    /// <summary>The config of a served model: 404 for a model not served, 503 for one whose files cannot be opened here.</summary>
    private static bool TryOpen(HttpContext http, string model, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out MoeModelConfig? config,
        [System.Diagnostics.CodeAnalysis.NotNullWhen(false)] out IResult? error)
    {
        var options = http.RequestServices.GetRequiredService<IOptions<MoeClusterOptions>>().Value;
        config = null;
        if (!options.Models.ContainsKey(model))
        {
            string shown = model.Length <= GatewayEndpoints.MaxModelNameShown ? model : model[..GatewayEndpoints.MaxModelNameShown] + "...";
            error = GatewayEndpoints.Error(StatusCodes.Status404NotFound, $"unknown model '{shown}'; served models: {string.Join(", ", options.Models.Keys)}");
            return false;
        }

        try
        {
            config = http.RequestServices.GetRequiredService<ModelCatalog>().Get(model).Config;
        }
        catch (Exception e) when (GatewayEndpoints.IsModelUnavailable(e))
        {
            error = GatewayEndpoints.Error(StatusCodes.Status503ServiceUnavailable, $"model {model} cannot be opened on this front-end: {e.Message}");
            return false;
        }

        error = null;
        return true;
    }
}

/// <summary>
/// The body and answer of <c>POST /v2/models/{model}/infer</c>: a JSON inference request, or one with binary tensor
/// data (<c>Inference-Header-Content-Length</c>); the answer is JSON, or binary when the request asked for it.
/// </summary>
internal sealed class KServeInferProtocol(string model) : ForwardProtocol
{
    private long? _headerLength;
    private KServeInferRequest? _request;

    public override string? Layer => _request?.Layer;

    public override void CheckHeaders(HttpRequest request)
    {
        var lengths = request.Headers[KServeInferParser.HeaderContentLength];
        if (lengths.Count > 1)
        {
            throw new GatewayRequestException(StatusCodes.Status400BadRequest, $"{KServeInferParser.HeaderContentLength} is given {lengths.Count} times");
        }

        if (lengths.Count == 1)
        {
            string text = lengths[0] ?? string.Empty;
            if (!long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out long length))
            {
                string shown = text.Length <= 32 ? text : text[..32] + "...";
                throw new GatewayRequestException(StatusCodes.Status400BadRequest, $"{KServeInferParser.HeaderContentLength} '{shown}' is not a byte count");
            }

            _headerLength = length;
        }

        // No type, or JSON; with the binary extension also application/octet-stream.
        string? contentType = request.ContentType;
        if (contentType is null)
        {
            return;
        }

        if (MediaTypeHeaderValue.TryParse(contentType, out var media)
            && (GatewayForwardProtocol.IsJson(media) || (_headerLength is not null && string.Equals(media.MediaType, KServeEndpoints.BinaryContentType, StringComparison.OrdinalIgnoreCase))))
        {
            return;
        }

        throw new GatewayRequestException(StatusCodes.Status415UnsupportedMediaType,
            $"Content-Type {GatewayForwardProtocol.Shown(contentType)} is not supported: send application/json (UTF-8), or with {KServeInferParser.HeaderContentLength} {KServeEndpoints.BinaryContentType}");
    }

    public override ForwardInput Parse(ReadOnlyMemory<byte> body, GatewayBodyLimits limits)
    {
        _request = KServeInferParser.Parse(body, _headerLength, model, limits);
        return _request.Input;
    }

    public override IResult Answer(string model, ForwardReply reply, ForwardInput input, IReadOnlyList<GatewayLayerTraffic> traffic)
    {
        var request = _request ?? throw new InvalidOperationException("the request was not parsed");
        int[] shape = [input.Tokens, input.Width];
        var first = traffic.Count > 0 ? traffic[0] : null;
        var parameters = new InferParameters(request.Layer is null ? "stack" : "layer", traffic.Count, first?.Wire, first?.WireDispatch, first?.WireCombine);
        if (!request.BinaryOutput)
        {
            var output = new InferOutput(KServeInferParser.TensorName, "FP32", shape, reply.Hidden, null);
            return Results.Json(new InferResponse(model, KServeEndpoints.ModelVersion, request.Id, parameters, [output]), KServeEndpoints.Json);
        }

        byte[] data = ActivationBlock.Encode(reply.Hidden, input.Tokens, input.Width, WireDType.F32).Data;
        var binary = new InferOutput(KServeInferParser.TensorName, "FP32", shape, null, new OutputParameters(data.Length));
        byte[] header = JsonSerializer.SerializeToUtf8Bytes(new InferResponse(model, KServeEndpoints.ModelVersion, request.Id, parameters, [binary]), KServeEndpoints.Json);
        var body = new byte[header.Length + data.Length];
        header.CopyTo(body, 0);
        data.CopyTo(body, header.Length);
        return new BinaryInferResult(body, header.Length);
    }

    private sealed record InferResponse(string ModelName, string ModelVersion, string? Id, InferParameters Parameters, IReadOnlyList<InferOutput> Outputs);

    /// <summary>What ran: <c>run</c> "layer" or "stack", how many MoE layers, on which wire ("dispatch/combine", and each direction).</summary>
    private sealed record InferParameters(string Run, int Layers, string? Wire, string? WireDispatch, string? WireCombine);

    private sealed record InferOutput(string Name, string Datatype, int[] Shape, float[]? Data, OutputParameters? Parameters);

    private sealed record OutputParameters(long BinaryDataSize);

    /// <summary>The binary extension's answer: the JSON header's length in Inference-Header-Content-Length, then the bytes.</summary>
    private sealed class BinaryInferResult(byte[] body, int headerLength) : IResult, IStatusCodeHttpResult
    {
        public int? StatusCode => StatusCodes.Status200OK;

        public Task ExecuteAsync(HttpContext httpContext)
        {
            var response = httpContext.Response;
            response.StatusCode = StatusCodes.Status200OK;
            response.ContentType = KServeEndpoints.BinaryContentType;
            response.ContentLength = body.Length;
            response.Headers[KServeInferParser.HeaderContentLength] = headerLength.ToString(CultureInfo.InvariantCulture);
            return response.Body.WriteAsync(body).AsTask();
        }
    }
}
