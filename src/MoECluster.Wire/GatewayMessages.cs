using MessagePack;

namespace MoECluster.Wire;

/// <summary>
/// The gateway's MessagePack body for <c>POST /v1/layers/{layer}/forward</c> and <c>POST /v1/forward</c>
/// (Content-Type application/x-msgpack): a map with string keys, so any MessagePack client can build it.
/// </summary>
[MessagePackObject]
public sealed class GatewayForwardRequest
{
    /// <summary>Model id served by the cluster; null for the default model.</summary>
    [Key("model")]
    public string? Model { get; set; }

    /// <summary>Payload element type between router and shards, both directions: a name of <see cref="WireCodecs"/>; null for the cluster default.</summary>
    [Key("wire")]
    public string? Wire { get; set; }

    /// <summary>Element type of the routed rows (router → shard), over <see cref="Wire"/>; null: <see cref="Wire"/>, else the cluster default.</summary>
    [Key("wire_dispatch")]
    public string? WireDispatch { get; set; }

    /// <summary>Element type of the partial sums (shard → router), over <see cref="Wire"/>; null: <see cref="Wire"/>, else the cluster default.</summary>
    [Key("wire_combine")]
    public string? WireCombine { get; set; }

    /// <summary>[T, d] hidden states (fp32, bf16 or fp16 elements).</summary>
    [Key("hidden_states")]
    public ActivationBlock HiddenStates { get; set; } = new();
}

[MessagePackObject]
public sealed class GatewayForwardResponse
{
    [Key("model")]
    public string Model { get; set; } = string.Empty;

    /// <summary>[T, d] fp32 output.</summary>
    [Key("hidden_states")]
    public ActivationBlock HiddenStates { get; set; } = new();

    [Key("layers")]
    public List<GatewayLayerTraffic> Layers { get; set; } = [];
}

/// <summary>What one layer of the request routed: measured (encoded) and predicted bytes.</summary>
[MessagePackObject]
public sealed class GatewayLayerTraffic
{
    [Key("layer")]
    public int Layer { get; set; }

    [Key("mode")]
    public string Mode { get; set; } = string.Empty;

    /// <summary>The wire pair's text, "dispatch/combine" (<see cref="WirePair.Text"/>: "bf16/bf16", "fp32/bf16").</summary>
    [Key("wire")]
    public string Wire { get; set; } = string.Empty;

    /// <summary>Element type of this layer's dispatch bytes (the routed rows).</summary>
    [Key("wire_dispatch")]
    public string WireDispatch { get; set; } = string.Empty;

    /// <summary>Element type of this layer's combine bytes (the partial sums).</summary>
    [Key("wire_combine")]
    public string WireCombine { get; set; } = string.Empty;

    [Key("tokens")]
    public int Tokens { get; set; }

    [Key("width")]
    public int Width { get; set; }

    [Key("routed_rows")]
    public int RoutedRows { get; set; }

    [Key("dispatch_payload_bytes")]
    public long DispatchPayloadBytes { get; set; }

    [Key("combine_payload_bytes")]
    public long CombinePayloadBytes { get; set; }

    [Key("dispatch_message_bytes")]
    public long DispatchMessageBytes { get; set; }

    [Key("combine_message_bytes")]
    public long CombineMessageBytes { get; set; }

    [Key("predicted_payload_bytes")]
    public long PredictedPayloadBytes { get; set; }

    [Key("messages")]
    public int Messages { get; set; }

    [Key("milliseconds")]
    public double Milliseconds { get; set; }

    /// <summary>Requests that shared this layer's forward at the front-end (1: this request alone); see <see cref="BatchTokens"/>.</summary>
    [Key("batch_requests")]
    public int BatchRequests { get; set; }

    /// <summary>
    /// Tokens of the forward this request shared (its own when alone). When more than <see cref="Tokens"/>, the byte counts and
    /// routed rows are the batch's shared out per token; messages and milliseconds are the batch's.
    /// </summary>
    [Key("batch_tokens")]
    public int BatchTokens { get; set; }
}

/// <summary>Decoding of gateway bodies: same bounds and untrusted-data rules as the shard messages.</summary>
public static class GatewayWire
{
    public static GatewayForwardRequest DecodeRequest(ReadOnlyMemory<byte> bytes, WireLimits limits)
    {
        var request = WireFormat.Deserialize<GatewayForwardRequest>(bytes, limits)
            ?? throw new WireFormatException("GatewayForwardRequest is nil.");
        WireFormat.ValidateBlock("hidden_states", request.HiddenStates, limits);
        return request;
    }

    public static GatewayForwardResponse DecodeResponse(ReadOnlyMemory<byte> bytes, WireLimits limits)
    {
        var response = WireFormat.Deserialize<GatewayForwardResponse>(bytes, limits)
            ?? throw new WireFormatException("GatewayForwardResponse is nil.");
        WireFormat.ValidateBlock("hidden_states", response.HiddenStates, limits);
        return response;
    }
}
