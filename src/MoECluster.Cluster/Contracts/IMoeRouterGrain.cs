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

/// <summary>
/// A batch of hidden states [Tokens, d] for one MoE layer's mixer, or for the whole stack when Layer is null, with the
/// element type of each direction between router and shards: <see cref="WireDispatch"/> for the routed rows (router →
/// shard), <see cref="WireCombine"/> for the partial sums (shard → router). Both are read off an Orleans message: the
/// router checks they are defined (<c>ForwardRequestValidator</c>) before <see cref="Wire"/> is used.
/// </summary>
[GenerateSerializer]
[Immutable]
[Alias("moecluster.forward-call")]
public sealed record ForwardCall(
    [property: Id(0)] int? Layer,
    [property: Id(1)] float[] Hidden,
    [property: Id(2)] int Tokens,
    [property: Id(3)] WireDType WireDispatch,
    [property: Id(4)] WireDType WireCombine)
{
    /// <summary>One element type both ways.</summary>
    public ForwardCall(int? layer, float[] hidden, int tokens, WireDType wire)
        : this(layer, hidden, tokens, wire, wire)
    {
    }

    /// <summary>Both directions' element types.</summary>
    public ForwardCall(int? layer, float[] hidden, int tokens, WirePair wire)
        : this(layer, hidden, tokens, (wire ?? throw new ArgumentNullException(nameof(wire))).Dispatch.Id, wire.Combine.Id)
    {
    }

    /// <summary>The pair of <see cref="WireDispatch"/> and <see cref="WireCombine"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException">Either is not a defined wire type (check first).</exception>
    public WirePair Wire => WirePair.Of(WireDispatch, WireCombine);
}

[GenerateSerializer]
[Immutable]
[Alias("moecluster.forward-reply")]
public sealed record ForwardReply(
    [property: Id(0)] float[] Hidden,
    [property: Id(1)] IReadOnlyList<LayerTraffic> Layers);

/// <summary>
/// What one layer's dispatch and combine moved, measured (encoded sizes) and predicted (from the routing plan).
/// <see cref="Wire"/> is the pair's text, "dispatch/combine" (<see cref="WirePair.Text"/>: "bf16/bf16", "fp32/bf16");
/// <see cref="WireDispatch"/> and <see cref="WireCombine"/> are the element types of the dispatch bytes (routed rows) and
/// of the combine bytes (partial sums).
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
    [property: Id(14)] int BatchTokens,
    [property: Id(15)] string WireDispatch,
    [property: Id(16)] string WireCombine);
