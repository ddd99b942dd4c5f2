using System.Net.Http.Headers;
using Microsoft.AspNetCore.Http;
using MoECluster.Cluster.Contracts;
using MoECluster.Wire;

namespace MoECluster.Gateway;

/// <summary>
/// How one forward request's body is read and its answer written. <see cref="GatewayEndpoints.ForwardAsync"/> does the
/// rest the same way for every protocol: size limit, admission, model and layer resolution, validation, the router
/// call and the error statuses. One instance serves one request (it may keep what its body asked for the answer).
/// </summary>
internal abstract class ForwardProtocol
{
    /// <summary>The layer asked for as text (null: the whole stack); read after <see cref="Parse"/>.</summary>
    public abstract string? Layer { get; }

    /// <summary>Checks the request's headers before any byte of its body is read.</summary>
    /// <exception cref="GatewayRequestException">415 for a content type the protocol does not read, 400 for bad headers.</exception>
    public abstract void CheckHeaders(HttpRequest request);

    /// <summary>Decodes the body (read whole, at most MoECluster:Gateway:MaxRequestBytes).</summary>
    /// <exception cref="GatewayRequestException">400 for malformed or mis-shaped bodies, 413 past the token limit.</exception>
    public abstract ForwardInput Parse(ReadOnlyMemory<byte> body, GatewayBodyLimits limits);

    /// <summary>The answer to a forward the cluster computed: <paramref name="reply"/> holds input.Tokens × input.Width finite values.</summary>
    public abstract IResult Answer(string model, ForwardReply reply, ForwardInput input, IReadOnlyList<GatewayLayerTraffic> traffic);
}

/// <summary>
/// The gateway's own protocol (<c>/v1/forward</c>, <c>/v1/layers/{layer}/forward</c>): JSON <c>{"model", "wire",
/// "hidden_states": [[...], ...]}</c> or MessagePack (<see cref="GatewayForwardRequest"/>), answered in the same format.
/// </summary>
internal sealed class GatewayForwardProtocol(string? layer) : ForwardProtocol
{
    private bool _messagePack;

    public override string? Layer => layer;

    public override void CheckHeaders(HttpRequest request) => _messagePack = BodyFormat(request.ContentType);

    public override ForwardInput Parse(ReadOnlyMemory<byte> body, GatewayBodyLimits limits) =>
        _messagePack ? GatewayRequestParser.ParseMessagePack(body, limits) : GatewayRequestParser.ParseJson(body.Span, limits);

    public override IResult Answer(string model, ForwardReply reply, ForwardInput input, IReadOnlyList<GatewayLayerTraffic> traffic)
    {
        if (_messagePack)
        {
            var response = new GatewayForwardResponse
            {
                Model = model,
                HiddenStates = ActivationBlock.Encode(reply.Hidden, input.Tokens, input.Width, WireDType.F32),
                Layers = [.. traffic],
            };
            return Results.Bytes(WireFormat.Serialize(response), GatewayEndpoints.MessagePackContentType);
        }

        var rows = new float[input.Tokens][];
        for (int t = 0; t < input.Tokens; t++)
        {
            rows[t] = reply.Hidden.AsSpan(t * input.Width, input.Width).ToArray();
        }

        return Results.Json(new { model, hidden_states = rows, layers = traffic }, GatewayEndpoints.Json);
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

            if (IsJson(media))
            {
                return false;
            }
        }

        throw new GatewayRequestException(StatusCodes.Status415UnsupportedMediaType,
            $"Content-Type {Shown(contentType)} is not supported: send application/json (UTF-8) or {GatewayEndpoints.MessagePackContentType}");
    }

    /// <summary><c>application/json</c> or <c>application/*+json</c>, in UTF-8 (no charset or utf-8).</summary>
    internal static bool IsJson(MediaTypeHeaderValue media)
    {
        string type = media.MediaType ?? string.Empty;
        bool json = type.Equals("application/json", StringComparison.OrdinalIgnoreCase)
            || (type.StartsWith("application/", StringComparison.OrdinalIgnoreCase) && type.EndsWith("+json", StringComparison.OrdinalIgnoreCase));
        string? charset = media.CharSet?.Trim('"');
        return json && (charset is null || charset.Equals("utf-8", StringComparison.OrdinalIgnoreCase) || charset.Equals("utf8", StringComparison.OrdinalIgnoreCase));
    }

    /// <summary>A client's Content-Type as an error message shows it (at most 64 characters).</summary>
    internal static string Shown(string? contentType) =>
        contentType is null ? "none" : contentType.Length <= 64 ? $"'{contentType}'" : $"'{contentType[..64]}...'";

    private static bool IsMessagePack(string mediaType) =>
        mediaType.Equals(GatewayEndpoints.MessagePackContentType, StringComparison.OrdinalIgnoreCase)
        || mediaType.Equals("application/msgpack", StringComparison.OrdinalIgnoreCase)
        || mediaType.Equals("application/vnd.msgpack", StringComparison.OrdinalIgnoreCase);
}
