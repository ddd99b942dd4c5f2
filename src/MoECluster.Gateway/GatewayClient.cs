using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text.Json;
using System.Text.Json.Nodes;
using MoECluster.Wire;

namespace MoECluster.Gateway;

/// <summary>A client of the gateway's HTTP API (MessagePack bodies for hidden states).</summary>
public sealed class GatewayClient(HttpClient http, WireLimits? limits = null)
{
    private readonly WireLimits _limits = limits ?? new WireLimits();

    /// <summary>
    /// The served models as the gateway lists them (<c>GET /v1/models</c>): the <c>data</c> of its
    /// <c>{"object": "list", "data": [...]}</c>, or the bare array older gateways answered.
    /// </summary>
    public async Task<IReadOnlyList<ServedModel>> ModelsAsync(CancellationToken cancellationToken = default)
    {
        using var response = await http.GetAsync("/v1/models", cancellationToken);
        await ThrowOnErrorAsync(response, cancellationToken);
        var document = await response.Content.ReadFromJsonAsync<JsonNode>(GatewayEndpoints.Json, cancellationToken);
        JsonNode? list = document is JsonObject page ? page["data"] : document;
        return list?.Deserialize<List<ServedModel>>(GatewayEndpoints.Json) ?? [];
    }

    /// <summary>
    /// Sends [tokens, width] hidden states for one MoE layer (or, with layer null, the whole stack) and returns the
    /// output and what each layer routed. Throws <see cref="GatewayException"/> with the gateway's message on a 4xx/5xx.
    /// </summary>
    public Task<GatewayForwardResponse> ForwardAsync(string? model, int? layer, float[] hidden, int tokens, int width, string? wire, CancellationToken cancellationToken = default) =>
        ForwardAsync(new GatewayForwardRequest { Model = model, Wire = wire }, layer, hidden, tokens, width, cancellationToken);

    /// <summary>
    /// As <see cref="ForwardAsync(string?, int?, float[], int, int, string?, CancellationToken)"/>, with the element type of
    /// each direction (<c>wire_dispatch</c>, <c>wire_combine</c>; null: the cluster's default for that direction).
    /// </summary>
    public Task<GatewayForwardResponse> ForwardAsync(string? model, int? layer, float[] hidden, int tokens, int width, string? wireDispatch, string? wireCombine, CancellationToken cancellationToken = default) =>
        ForwardAsync(new GatewayForwardRequest { Model = model, WireDispatch = wireDispatch, WireCombine = wireCombine }, layer, hidden, tokens, width, cancellationToken);

    private async Task<GatewayForwardResponse> ForwardAsync(GatewayForwardRequest request, int? layer, float[] hidden, int tokens, int width, CancellationToken cancellationToken)
    {
        request.HiddenStates = ActivationBlock.Encode(hidden, tokens, width, WireDType.F32);
        using var content = new ByteArrayContent(WireFormat.Serialize(request));
        content.Headers.ContentType = new MediaTypeHeaderValue(GatewayEndpoints.MessagePackContentType);
        string path = layer is int l ? $"/v1/layers/{l}/forward" : "/v1/forward";
        using var response = await http.PostAsync(path, content, cancellationToken);
        byte[] body = await response.Content.ReadAsByteArrayAsync(cancellationToken);
        if (!response.IsSuccessStatusCode)
        {
            throw new GatewayException((int)response.StatusCode, ErrorText(response, body)) { RetryAfter = RetryAfterOf(response) };
        }

        return GatewayWire.DecodeResponse(body, _limits);
    }

    public async Task<JsonNode> StatsAsync(CancellationToken cancellationToken = default)
    {
        using var response = await http.GetAsync("/stats", cancellationToken);
        await ThrowOnErrorAsync(response, cancellationToken);
        return JsonNode.Parse(await response.Content.ReadAsStringAsync(cancellationToken)) ?? new JsonObject();
    }

    /// <summary>A 4xx/5xx becomes a <see cref="GatewayException"/> carrying the status and the gateway's message.</summary>
    private static async Task ThrowOnErrorAsync(HttpResponseMessage response, CancellationToken cancellationToken)
    {
        if (!response.IsSuccessStatusCode)
        {
            byte[] body = await response.Content.ReadAsByteArrayAsync(cancellationToken);
            throw new GatewayException((int)response.StatusCode, ErrorText(response, body));
        }
    }

    /// <summary>The Retry-After of an answer (seconds or a date), null when it has none.</summary>
    internal static TimeSpan? RetryAfterOf(HttpResponseMessage response) => response.Headers.RetryAfter switch
    {
        { Delta: TimeSpan delta } => delta,
        { Date: DateTimeOffset date } => date - DateTimeOffset.UtcNow is { Ticks: > 0 } left ? left : TimeSpan.Zero,
        _ => null,
    };

    /// <summary>The health document and whether the gateway answered 200.</summary>
    public async Task<(bool Healthy, JsonNode? Body)> HealthAsync(CancellationToken cancellationToken = default)
    {
        using var response = await http.GetAsync("/health", cancellationToken);
        string text = await response.Content.ReadAsStringAsync(cancellationToken);
        JsonNode? body = null;
        try
        {
            body = JsonNode.Parse(text);
        }
        catch (JsonException)
        {
        }

        return (response.IsSuccessStatusCode, body);
    }

    /// <summary>
    /// Polls <c>/health</c> (every 250 ms, 5 s per attempt) until it counts <paramref name="expected"/> expert silos and
    /// <paramref name="alsoReady"/> (when given) holds; a <see cref="TimeoutException"/> naming the last answer after
    /// <paramref name="timeout"/>.
    /// </summary>
    public async Task WaitForExpertSilosAsync(int expected, TimeSpan timeout, Func<bool>? alsoReady = null, CancellationToken cancellationToken = default)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        string last = "no answer";
        while (true)
        {
            try
            {
                using var attempt = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
                attempt.CancelAfter(TimeSpan.FromSeconds(5));
                var (_, body) = await HealthAsync(attempt.Token);
                int? seen = body?["expert_silos"]?.GetValue<int>();
                if (seen == expected && (alsoReady is null || alsoReady()))
                {
                    return;
                }

                last = body?.ToJsonString() ?? "no body";
            }
            catch (HttpRequestException e)
            {
                last = e.Message;
            }
            catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
            {
                last = "no answer within 5 s";
            }

            if (clock.Elapsed > timeout)
            {
                throw new TimeoutException(string.Create(System.Globalization.CultureInfo.InvariantCulture,
                    $"the gateway's /health did not count {expected} expert silos within {timeout.TotalSeconds:F0} s (last: {last})"));
            }

            await Task.Delay(250, cancellationToken);
        }
    }

    /// <summary>The gateway's message (its JSON "error", or the body's text); never empty: an answer without one says its status.</summary>
    internal static string ErrorText(HttpResponseMessage response, byte[] body)
    {
        string text;
        try
        {
            text = JsonNode.Parse(body)?["error"]?.GetValue<string>() ?? System.Text.Encoding.UTF8.GetString(body);
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException)
        {
            text = System.Text.Encoding.UTF8.GetString(body);
        }

        return string.IsNullOrWhiteSpace(text)
            ? $"the gateway answered {(int)response.StatusCode} {response.ReasonPhrase ?? response.StatusCode.ToString()} with no message (see the front-end silo's log)"
            : text;
    }
}

public sealed record ServedModel(string Id, string Mode, int HiddenSize, int? LatentSize, int Experts, int TopK, IReadOnlyList<int> MoeLayers, int ShardsPerLayer, bool IsDefault);

public sealed class GatewayException(int statusCode, string message) : Exception(message)
{
    public GatewayException()
        : this(0, "gateway error")
    {
    }

    public GatewayException(string message)
        : this(0, message)
    {
    }

    public GatewayException(string message, Exception innerException)
        : this(0, message + ": " + innerException.Message)
    {
    }

    public int StatusCode { get; } = statusCode;

    /// <summary>The answer's Retry-After (a 429 or 503 carries one), null when it had none.</summary>
    public TimeSpan? RetryAfter { get; init; }
}
