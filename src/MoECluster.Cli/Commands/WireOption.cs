using System.CommandLine;
using MoECluster.Wire;

namespace MoECluster.Cli.Commands;

/// <summary>The <c>--wire</c> option of the verbs that send over a cluster: its values are the codec registry's names.</summary>
internal static class WireOption
{
    /// <summary>A <c>--wire</c> with a default (<see cref="WireCodecs.Default"/>).</summary>
    public static Option<string> Create(string description)
    {
        var wire = new Option<string>("--wire") { Description = description, DefaultValueFactory = _ => WireCodecs.Default.Name };
        wire.AcceptOnlyFromAmong([.. WireCodecs.Names]);
        return wire;
    }

    /// <summary>A <c>--wire</c> that may be left out (the cluster's default then applies).</summary>
    public static Option<string?> CreateOptional(string description)
    {
        var wire = new Option<string?>("--wire") { Description = description };
        wire.AcceptOnlyFromAmong([.. WireCodecs.Names]);
        return wire;
    }
}
