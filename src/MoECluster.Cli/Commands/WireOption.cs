using System.CommandLine;
using MoECluster.Wire;

namespace MoECluster.Cli.Commands;

/// <summary>
/// The wire options of the verbs that send over a cluster: <c>--wire</c> (both directions), <c>--wire-dispatch</c> (the
/// routed rows, router → shard) and <c>--wire-combine</c> (the partial sums, shard → router), a specific one overriding
/// <c>--wire</c> for its direction. Their values are the codec registry's names (<see cref="WireCodecs"/>): a new codec
/// needs no change here.
/// </summary>
internal sealed class WireOption
{
    private WireOption(Option<string?> wire, Option<string?> dispatch, Option<string?> combine)
    {
        Wire = wire;
        Dispatch = dispatch;
        Combine = combine;
    }

    /// <summary><c>--wire</c>: both directions.</summary>
    public Option<string?> Wire { get; }

    /// <summary><c>--wire-dispatch</c>: the routed rows, over <see cref="Wire"/>.</summary>
    public Option<string?> Dispatch { get; }

    /// <summary><c>--wire-combine</c>: the partial sums, over <see cref="Wire"/>.</summary>
    public Option<string?> Combine { get; }

    /// <summary>The three options, to add to a command.</summary>
    public IReadOnlyList<Option> All => [Wire, Dispatch, Combine];

    /// <summary>Options whose directions default to <see cref="WirePair.Default"/> (<c>--wire</c> shows bf16 as its default).</summary>
    public static WireOption Create(string description) => Build(description, WireCodecs.Default.Name, "default: --wire's");

    /// <summary>Options that may be left out: a direction none of them names gets the cluster's default.</summary>
    public static WireOption CreateOptional(string description) => Build(description, null, "default: --wire's, else the cluster's");

    /// <summary>The pair asked for, <see cref="WirePair.Default"/> in a direction none of the options names.</summary>
    public WirePair Pair(ParseResult parse)
    {
        ArgumentNullException.ThrowIfNull(parse);
        return WirePair.Resolve(parse.GetValue(Wire), parse.GetValue(Dispatch), parse.GetValue(Combine), WirePair.Default);
    }

    /// <summary>Each direction's name as asked for (a specific option over <c>--wire</c>), null where none names it.</summary>
    public WireChoice Choice(ParseResult parse)
    {
        ArgumentNullException.ThrowIfNull(parse);
        string? both = parse.GetValue(Wire);
        return new WireChoice(Canonical(parse.GetValue(Dispatch) ?? both), Canonical(parse.GetValue(Combine) ?? both));
    }

    private static string? Canonical(string? name) => name is null ? null : WireCodecs.Parse(name).Name;

    private static WireOption Build(string description, string? wireDefault, string directionDefault)
    {
        var wire = new Option<string?>("--wire") { Description = $"{description} Both directions: {WireCodecs.NameList}." };
        if (wireDefault is not null)
        {
            wire.DefaultValueFactory = _ => wireDefault;
        }

        var dispatch = new Option<string?>("--wire-dispatch") { Description = $"Element type of the routed rows, router -> shards, over --wire: {WireCodecs.NameList} ({directionDefault})." };
        var combine = new Option<string?>("--wire-combine") { Description = $"Element type of the partial sums, shards -> router, over --wire: {WireCodecs.NameList} ({directionDefault})." };
        foreach (var option in new[] { wire, dispatch, combine })
        {
            option.AcceptOnlyFromAmong([.. WireCodecs.Names]);
        }

        return new WireOption(wire, dispatch, combine);
    }
}

/// <summary>
/// The wire a client asks for, per direction, in canonical names; null: the cluster's default for that direction (the
/// request then names none).
/// </summary>
internal sealed record WireChoice(string? Dispatch, string? Combine)
{
    /// <summary>Both directions.</summary>
    public static WireChoice Of(WirePair pair)
    {
        ArgumentNullException.ThrowIfNull(pair);
        return new WireChoice(pair.Dispatch.Name, pair.Combine.Name);
    }
}
