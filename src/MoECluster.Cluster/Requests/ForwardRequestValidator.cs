using System.Globalization;
using MoECluster.Model.Configuration;
using MoECluster.Model.Numerics;
using MoECluster.Wire;

namespace MoECluster.Cluster.Requests;

/// <summary>
/// The one check of a forward request, run by the gateway (before the request reaches a router) and by the router
/// grain (which an Orleans client may call directly): the layer is an MoE layer of the model, 1 ≤ tokens ≤
/// MaxTokensPerRequest, the hidden states are [tokens, hidden_size], the wire type of each direction (dispatch, combine)
/// is defined and every value is finite. Whether the routed rows fit the dispatch type and the partial sums the combine type
/// is known only once they are computed: the router checks the rows before it sends them, the shard its sums before it
/// answers (both 422 with advice that names the direction).
/// Both refuse with the same <see cref="ForwardRequestException"/> and message.
/// </summary>
public static class ForwardRequestValidator
{
    /// <summary>Throws <see cref="ForwardRequestException"/> naming the first problem of the request; returns when it is acceptable.</summary>
    /// <param name="modelId">The model's id, for messages.</param>
    /// <param name="config">The model's configuration.</param>
    /// <param name="layer">The MoE layer to run, or null for the whole stack.</param>
    /// <param name="hidden">The hidden states, row-major.</param>
    /// <param name="tokens">The rows of <paramref name="hidden"/>.</param>
    /// <param name="wire">The wire type between router and shards, both ways.</param>
    /// <param name="maxTokens">The most tokens a request may carry (MoECluster:Gateway:MaxTokensPerRequest).</param>
    public static void Validate(string modelId, MoeModelConfig config, int? layer, ReadOnlySpan<float> hidden, int tokens, WireDType wire, int maxTokens) =>
        Validate(modelId, config, layer, hidden, tokens, wire, wire, maxTokens);

    /// <summary>Throws <see cref="ForwardRequestException"/> naming the first problem of the request; returns when it is acceptable.</summary>
    /// <param name="modelId">The model's id, for messages.</param>
    /// <param name="config">The model's configuration.</param>
    /// <param name="layer">The MoE layer to run, or null for the whole stack.</param>
    /// <param name="hidden">The hidden states, row-major.</param>
    /// <param name="tokens">The rows of <paramref name="hidden"/>.</param>
    /// <param name="dispatch">The wire type of the routed rows (router → shard).</param>
    /// <param name="combine">The wire type of the partial sums (shard → router).</param>
    /// <param name="maxTokens">The most tokens a request may carry (MoECluster:Gateway:MaxTokensPerRequest).</param>
    public static void Validate(string modelId, MoeModelConfig config, int? layer, ReadOnlySpan<float> hidden, int tokens, WireDType dispatch, WireDType combine, int maxTokens)
    {
        ArgumentNullException.ThrowIfNull(config);
        if (layer is int l && !config.MoeLayers.Contains(l))
        {
            throw new ForwardRequestException(ForwardRequestProblem.UnknownLayer, NotAnMoeLayer(l.ToString(CultureInfo.InvariantCulture), modelId, config));
        }

        if (tokens > maxTokens)
        {
            throw new ForwardRequestException(ForwardRequestProblem.TooLarge, TooManyTokens(tokens.ToString(CultureInfo.InvariantCulture), maxTokens));
        }

        int d = config.HiddenSize;
        if (tokens < 1)
        {
            throw new ForwardRequestException(Invariant($"hidden_states has {tokens} rows: a request carries at least one token"));
        }

        if (hidden.Length != (long)tokens * d)
        {
            throw new ForwardRequestException(hidden.Length % tokens == 0
                ? WrongWidth(hidden.Length / tokens, modelId, d)
                : Invariant($"hidden_states holds {hidden.Length} values, not {tokens} rows of hidden_size {d}"));
        }

        // One type both ways is named as the request's "wire"; a direction of its own by its field.
        if (!WireCodecs.IsDefined(dispatch))
        {
            throw new ForwardRequestException(Invariant($"{(dispatch == combine ? WirePair.WireField : WirePair.DispatchField)} {WireCodecs.Describe(dispatch)} is not one of {WireCodecs.NameList}"));
        }

        if (!WireCodecs.IsDefined(combine))
        {
            throw new ForwardRequestException(Invariant($"{WirePair.CombineField} {WireCodecs.Describe(combine)} is not one of {WireCodecs.NameList}"));
        }

        int bad = FloatRange.FirstNonFinite(hidden);
        if (bad >= 0)
        {
            throw new ForwardRequestException(NotFinite(bad / d, bad % d));
        }
    }

    /// <summary>"layer 2 is not an MoE layer of lat; MoE layers: 1, 3".</summary>
    public static string NotAnMoeLayer(string layer, string modelId, MoeModelConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        return $"layer {layer} is not an MoE layer of {modelId}; MoE layers: {string.Join(", ", config.MoeLayers)}";
    }

    /// <summary>"hidden_states has 1025 rows: a request may carry at most 1024 tokens (MoECluster:Gateway:MaxTokensPerRequest)".</summary>
    public static string TooManyTokens(string rows, int maxTokens) =>
        Invariant($"hidden_states has {rows} rows: a request may carry at most {maxTokens} tokens (MoECluster:Gateway:MaxTokensPerRequest)");

    /// <summary>"hidden_states rows are 32 wide; model lat has hidden_size 64".</summary>
    public static string WrongWidth(int width, string modelId, int hiddenSize) =>
        Invariant($"hidden_states rows are {width} wide; model {modelId} has hidden_size {hiddenSize}");

    /// <summary>"hidden_states[1][7] is not finite".</summary>
    public static string NotFinite(int row, int column) => Invariant($"hidden_states[{row}][{column}] is not finite");

    private static string Invariant(FormattableString text) => text.ToString(CultureInfo.InvariantCulture);
}
