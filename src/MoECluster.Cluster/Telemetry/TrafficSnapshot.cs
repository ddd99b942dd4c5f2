using MoECluster.Cluster.Contracts;
namespace MoECluster.Cluster.Telemetry;

/// <summary>
/// Payload traffic of one (model, layer, direction, silo pair, wire type), as measured by the router that sent or received it;
/// <see cref="Wire"/> is the element type of this direction's bytes (the dispatch or the combine type of the requests).
/// </summary>
[GenerateSerializer]
[Immutable]
[Alias("moecluster.payload-traffic")]
public sealed record PayloadTraffic(
    [property: Id(0)] string Model,
    [property: Id(1)] string Mode,
    [property: Id(2)] int Layer,
    [property: Id(3)] string Direction,
    [property: Id(4)] string FromSilo,
    [property: Id(5)] string ToSilo,
    [property: Id(6)] long PayloadBytes,
    [property: Id(7)] long MessageBytes,
    [property: Id(8)] long Messages,
    [property: Id(9)] long Rows,
    [property: Id(10)] string Wire);

/// <summary>Per model and layer: tokens and requests served, routed bytes predicted from the routing plans, expert load.</summary>
[GenerateSerializer]
[Immutable]
[Alias("moecluster.layer-totals")]
public sealed record LayerTotals(
    [property: Id(0)] string Model,
    [property: Id(1)] string Mode,
    [property: Id(2)] int Layer,
    [property: Id(3)] int HiddenSize,
    [property: Id(4)] int RoutedWidth,
    [property: Id(5)] int TopK,
    [property: Id(6)] long Tokens,
    [property: Id(7)] long Batches,
    [property: Id(8)] long PredictedPayloadBytes,
    [property: Id(9)] long[] ExpertTokens);

/// <summary>What Orleans put on the socket from this silo to one remote silo (meter Microsoft.Orleans).</summary>
[GenerateSerializer]
[Immutable]
[Alias("moecluster.socket-traffic")]
public sealed record SocketTraffic(
    [property: Id(0)] string FromSilo,
    [property: Id(1)] string ToSilo,
    [property: Id(2)] string MessageDirection,
    [property: Id(3)] long Messages,
    [property: Id(4)] long MessageBytes,
    [property: Id(5)] long FrameBytes);

[GenerateSerializer]
[Immutable]
[Alias("moecluster.silo-traffic")]
public sealed record SiloTraffic(
    [property: Id(0)] string Silo,
    [property: Id(1)] string Name,
    [property: Id(2)] string Role,
    [property: Id(3)] IReadOnlyList<PayloadTraffic> Payload,
    [property: Id(4)] IReadOnlyList<LayerTotals> Layers,
    [property: Id(5)] IReadOnlyList<SocketTraffic> Socket,
    [property: Id(6)] IReadOnlyList<Contracts.ShardDescription> Shards,
    [property: Id(7)] IReadOnlyList<TcpTraffic> Tcp,
    [property: Id(8)] IReadOnlyList<ShardBatchTotals> ShardBatches,
    [property: Id(9)] IReadOnlyList<FrontEndBatchTotals> FrontEndBatches);

/// <summary>
/// Continuous batching at one expert shard (or alternate) since its silo started: grouped passes run, the requests and rows
/// they merged, passes that merged more than one request, the largest pass in requests and in rows, and the passes'
/// compute time and (row, expert) pairs.
/// </summary>
[GenerateSerializer]
[Immutable]
[Alias("moecluster.shard-batch-totals")]
public sealed record ShardBatchTotals(
    [property: Id(0)] string Shard,
    [property: Id(1)] string Silo,
    [property: Id(2)] long Batches,
    [property: Id(3)] long Requests,
    [property: Id(4)] long Rows,
    [property: Id(5)] long MergedBatches,
    [property: Id(6)] long MaxRequests,
    [property: Id(7)] long MaxRows,
    [property: Id(8)] long ComputeMicroseconds = 0,
    [property: Id(9)] long Pairs = 0)
{
    /// <summary>Requests per pass, on average (1: no batching happened).</summary>
    public double MeanRequests => Batches == 0 ? 0 : (double)Requests / Batches;

    /// <summary>Rows per pass, on average.</summary>
    public double MeanRows => Batches == 0 ? 0 : (double)Rows / Batches;
}

/// <summary>
/// Batching at the front-end for one (model, layer or "stack", wire pair) on one front-end silo since it started: forwards
/// run, the requests and tokens they merged, forwards that merged more than one request, and the largest forward in
/// requests and in tokens (see Requests/ForwardBatcher). <see cref="Wire"/> is the pair's text ("dispatch/combine",
/// e.g. "fp32/bf16"), <see cref="WireDispatch"/> and <see cref="WireCombine"/> its directions.
/// </summary>
[GenerateSerializer]
[Immutable]
[Alias("moecluster.frontend-batch-totals")]
public sealed record FrontEndBatchTotals(
    [property: Id(0)] string Model,
    [property: Id(1)] string Target,
    [property: Id(2)] string Wire,
    [property: Id(3)] string Silo,
    [property: Id(4)] long Batches,
    [property: Id(5)] long Requests,
    [property: Id(6)] long Tokens,
    [property: Id(7)] long MergedBatches,
    [property: Id(8)] long MaxRequests,
    [property: Id(9)] long MaxTokens,
    [property: Id(10)] string WireDispatch,
    [property: Id(11)] string WireCombine)
{
    /// <summary>Requests per forward, on average (1: no batching happened).</summary>
    public double MeanRequests => Batches == 0 ? 0 : (double)Requests / Batches;

    /// <summary>Tokens per forward, on average.</summary>
    public double MeanTokens => Batches == 0 ? 0 : (double)Tokens / Batches;
}

/// <summary>What this silo's Orleans connections of one kind (silo, gateway) wrote to TCP: beneath TLS, so TLS records and handshakes count.</summary>
[GenerateSerializer]
[Immutable]
[Alias("moecluster.tcp-traffic")]
public sealed record TcpTraffic(
    [property: Id(0)] string FromSilo,
    [property: Id(1)] string Kind,
    [property: Id(2)] long Connections,
    [property: Id(3)] long BytesWritten,
    [property: Id(4)] bool Tls);

/// <summary>Tokens per expert of one MoE layer over the balancing window, as one silo's routers sent them.</summary>
[GenerateSerializer]
[Immutable]
[Alias("moecluster.layer-expert-load")]
public sealed record LayerExpertLoad(
    [property: Id(0)] int Layer,
    [property: Id(1)] IReadOnlyList<long> Tokens);
