using System.Diagnostics.CodeAnalysis;

namespace MoECluster.Wire;

/// <summary>
/// The element types of the two directions between a router and its expert shards: <see cref="Dispatch"/> (the routed
/// rows, router → shard, <see cref="ShardRequest.Rows"/>) and <see cref="Combine"/> (the partial sums, shard → router,
/// <see cref="ShardRequest.ResponseDType"/>). Its text is "dispatch/combine" ("bf16/bf16", "fp32/bf16"); every name is
/// parsed by <see cref="WireCodecs"/>, so a codec added there is a valid direction here without change.
/// </summary>
public sealed record WirePair
{
    /// <summary>What separates the directions in <see cref="Text"/>.</summary>
    public const char Separator = '/';

    /// <summary>The request field (and silo option) that sets both directions.</summary>
    public const string WireField = "wire";

    /// <summary>The request field that sets the dispatch direction (router → shard).</summary>
    public const string DispatchField = "wire_dispatch";

    /// <summary>The request field that sets the combine direction (shard → router).</summary>
    public const string CombineField = "wire_combine";

    public WirePair(IWireCodec dispatch, IWireCodec combine)
    {
        ArgumentNullException.ThrowIfNull(dispatch);
        ArgumentNullException.ThrowIfNull(combine);
        Dispatch = dispatch;
        Combine = combine;
    }

    /// <summary>The cluster's default: <see cref="WireCodecs.Default"/> both ways.</summary>
    public static WirePair Default { get; } = Both(WireCodecs.Default);

    /// <summary>The element type of the routed rows, router → shard.</summary>
    public IWireCodec Dispatch { get; }

    /// <summary>The element type of the partial sums, shard → router.</summary>
    public IWireCodec Combine { get; }

    /// <summary>"dispatch/combine" in canonical names ("bf16/bf16", "fp32/bf16"): what <see cref="Parse"/> reads back.</summary>
    public string Text => $"{Dispatch.Name}{Separator}{Combine.Name}";

    /// <summary>
    /// Relative L2 error a forward over this pair must meet against the fp32 in-process reference: the larger of the two
    /// codecs' tolerances (each already covers a forward with both of its directions in it).
    /// </summary>
    public double ParityTolerance => Math.Max(Dispatch.ParityTolerance, Combine.ParityTolerance);

    /// <summary>
    /// What to tell a client whose routed rows leave <see cref="Dispatch"/>'s range: with one type both ways the registry's
    /// advice ("send it with wire fp32 or bf16, or scale it down"), otherwise the direction's field ("send it with
    /// wire_dispatch fp32 or bf16, or scale it down").
    /// </summary>
    public string DispatchOverflowAdvice => Advice(Dispatch, DispatchField);

    /// <summary>As <see cref="DispatchOverflowAdvice"/>, for partial sums that leave <see cref="Combine"/>'s range.</summary>
    public string CombineOverflowAdvice => Advice(Combine, CombineField);

    /// <summary>One codec both ways.</summary>
    public static WirePair Both(IWireCodec codec)
    {
        ArgumentNullException.ThrowIfNull(codec);
        return new WirePair(codec, codec);
    }

    /// <summary>The pair of two defined ids.</summary>
    /// <exception cref="ArgumentOutOfRangeException">Either id is not a defined wire type.</exception>
    public static WirePair Of(WireDType dispatch, WireDType combine) => new(WireCodecs.Get(dispatch), WireCodecs.Get(combine));

    /// <summary>
    /// Parses "dispatch/combine" (each a name or alias of <see cref="WireCodecs"/>, case-insensitive, white space around
    /// a name ignored) or one name, which sets both directions.
    /// </summary>
    public static bool TryParse(string? text, [NotNullWhen(true)] out WirePair? pair) => TryParse(text, out pair, out _);

    /// <summary>As <see cref="TryParse(string?, out WirePair?)"/>, with the refusal when it fails.</summary>
    public static bool TryParse(string? text, [NotNullWhen(true)] out WirePair? pair, [NotNullWhen(false)] out string? error)
    {
        pair = null;
        if (string.IsNullOrWhiteSpace(text))
        {
            error = $"wire pair {Shown(text)} is empty: expected dispatch{Separator}combine, each one of {WireCodecs.NameList}";
            return false;
        }

        string[] parts = text.Split(Separator);
        if (parts.Length > 2)
        {
            error = $"wire pair {Shown(text)} has more than two directions: expected dispatch{Separator}combine, each one of {WireCodecs.NameList}";
            return false;
        }

        if (!WireCodecs.TryParse(parts[0], out IWireCodec? dispatch))
        {
            error = $"wire pair {Shown(text)}: {(parts.Length == 2 ? "dispatch " : string.Empty)}{WireCodecs.NotAWire(parts[0].Trim())}";
            return false;
        }

        IWireCodec? combine = dispatch;
        if (parts.Length == 2 && !WireCodecs.TryParse(parts[1], out combine))
        {
            error = $"wire pair {Shown(text)}: combine {WireCodecs.NotAWire(parts[1].Trim())}";
            return false;
        }

        pair = new WirePair(dispatch, combine);
        error = null;
        return true;
    }

    /// <summary>Parses what <see cref="TryParse(string?, out WirePair?)"/> accepts.</summary>
    /// <exception cref="FormatException">Not a wire pair; the message says why, with the registry's names.</exception>
    public static WirePair Parse(string? text) => TryParse(text, out var pair, out string? error) ? pair : throw new FormatException(error);

    /// <summary>
    /// The pair a request (or a command line) asks for: <paramref name="wire"/> sets both directions, <paramref name="dispatch"/>
    /// and <paramref name="combine"/> override theirs, and a direction named by none of them is <paramref name="fallback"/>'s.
    /// Every name given is checked, an overridden <paramref name="wire"/> too.
    /// </summary>
    /// <param name="wire">A name for both directions, or null.</param>
    /// <param name="dispatch">A name for the dispatch direction, or null.</param>
    /// <param name="combine">A name for the combine direction, or null.</param>
    /// <param name="fallback">The directions nothing names (the cluster's default).</param>
    /// <param name="pair">The resolved pair.</param>
    /// <param name="error">
    /// The refusal of the first unknown name: <see cref="WireCodecs.NotAWire"/>'s message, after "wire_dispatch: " or
    /// "wire_combine: " (<paramref name="dispatchField"/>, <paramref name="combineField"/>) for a direction's name.
    /// </param>
    /// <param name="dispatchField">How the dispatch name is called in <paramref name="error"/>.</param>
    /// <param name="combineField">How the combine name is called in <paramref name="error"/>.</param>
    public static bool TryResolve(
        string? wire,
        string? dispatch,
        string? combine,
        WirePair fallback,
        [NotNullWhen(true)] out WirePair? pair,
        [NotNullWhen(false)] out string? error,
        string dispatchField = DispatchField,
        string combineField = CombineField)
    {
        ArgumentNullException.ThrowIfNull(fallback);
        pair = null;
        IWireCodec? both = null, d = null, c = null;
        if (wire is not null && !WireCodecs.TryParse(wire, out both))
        {
            error = WireCodecs.NotAWire(wire);
            return false;
        }

        if (dispatch is not null && !WireCodecs.TryParse(dispatch, out d))
        {
            error = $"{dispatchField}: {WireCodecs.NotAWire(dispatch)}";
            return false;
        }

        if (combine is not null && !WireCodecs.TryParse(combine, out c))
        {
            error = $"{combineField}: {WireCodecs.NotAWire(combine)}";
            return false;
        }

        pair = new WirePair(d ?? both ?? fallback.Dispatch, c ?? both ?? fallback.Combine);
        error = null;
        return true;
    }

    /// <summary>As <see cref="TryResolve"/>, throwing its refusal.</summary>
    /// <exception cref="FormatException">A name is not a wire type.</exception>
    public static WirePair Resolve(string? wire, string? dispatch, string? combine, WirePair fallback) =>
        TryResolve(wire, dispatch, combine, fallback, out var pair, out string? error) ? pair : throw new FormatException(error);

    /// <summary>The same directions: codecs are compared by id.</summary>
    public bool Equals(WirePair? other) => other is not null && Dispatch.Id == other.Dispatch.Id && Combine.Id == other.Combine.Id;

    public override int GetHashCode() => HashCode.Combine(Dispatch.Id, Combine.Id);

    /// <summary><see cref="Text"/>.</summary>
    public override string ToString() => Text;

    private string Advice(IWireCodec codec, string field)
    {
        if (Dispatch.Id == Combine.Id)
        {
            return WireCodecs.OverflowAdvice(codec);
        }

        string wider = WireCodecs.Wider(codec);
        return wider.Length == 0 ? "scale it down" : $"send it with {field} {wider}, or scale it down";
    }

    private static string Shown(string? text) => text is null ? "(none)" : text.Length <= 32 ? $"'{text}'" : $"'{text[..32]}...'";
}
