using MoECluster.Wire;

namespace MoECluster.Cluster.Contracts;

/// <summary>
/// The front end of one model: gating in d, W_down, dispatch of ℓ-wide rows to the expert shards, combine,
/// W_up and the shared expert. A stateless worker keyed by model id: every front-end silo runs its own
/// activations (as many as it has cores), so the router is never a single bottleneck.
/// </summary>
[Alias("moecluster.router")]
public interface IMoeRouterGrain : IGrainWithStringKey
{
    [Alias("forward")]
    Task<ForwardReply> Forward(ForwardCall call, CancellationToken cancellationToken = default);
}

/// <summary>A batch of hidden states [Tokens, d] for one MoE layer's mixer, or for the whole stack when Layer is null.</summary>
[GenerateSerializer]
[Immutable]
[Alias("moecluster.forward-call")]
public sealed record ForwardCall(
    [property: Id(0)] int? Layer,
    [property: Id(1)] float[] Hidden,
    [property: Id(2)] int Tokens,
    [property: Id(3)] WireDType Wire);

[GenerateSerializer]
[Immutable]
[Alias("moecluster.forward-reply")]
public sealed record ForwardReply(
    [property: Id(0)] float[] Hidden,
    [property: Id(1)] IReadOnlyList<LayerTraffic> Layers);

/// <summary>
/// What one layer's dispatch and combine moved, measured (encoded sizes) and predicted (from the routing plan).
/// <para>
/// Under front-end batching (<see cref="BatchRequests"/> &gt; 1) the layer ran once for several requests: <see cref="Tokens"/>
/// is this request's, the byte counts and <see cref="RoutedRows"/> are the batch's shared out per token (batch figure ×
/// Tokens / <see cref="BatchTokens"/>, rounded), <see cref="Messages"/> and <see cref="Milliseconds"/> are the batch's
/// (its messages carried the rows of all its requests). The ledger (<c>/stats</c>) counts each message once.
/// </para>
/// </summary>
[GenerateSerializer]
[Immutable]
[Alias("moecluster.layer-traffic")]
public sealed record LayerTraffic(
    [property: Id(0)] int Layer,
    [property: Id(1)] string Mode,
    [property: Id(2)] string Wire,
    [property: Id(3)] int Tokens,
    [property: Id(4)] int Width,
    [property: Id(5)] int RoutedRows,
    [property: Id(6)] long DispatchPayloadBytes,
    [property: Id(7)] long CombinePayloadBytes,
    [property: Id(8)] long DispatchMessageBytes,
    [property: Id(9)] long CombineMessageBytes,
    [property: Id(10)] long PredictedPayloadBytes,
    [property: Id(11)] int Messages,
    [property: Id(12)] double Milliseconds,
    [property: Id(13)] int BatchRequests,
    [property: Id(14)] int BatchTokens);
