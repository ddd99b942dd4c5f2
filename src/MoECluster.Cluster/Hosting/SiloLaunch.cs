using System.Globalization;
using MoECluster.Cluster.Security;

namespace MoECluster.Cluster.Hosting;

/// <summary>
/// The one description of a silo process of a local cluster, <c>moecluster silo …</c>: its command line and environment,
/// shared by <c>moecluster run</c> (the Aspire-free launcher) and the Aspire AppHost. What serves where (role, name, models,
/// shards, backend, wire, the expert silos a front-end expects, its HTTP URLs) is here; ports and clustering are not:
/// <c>moecluster run</c> adds them as flags (<see cref="PortArguments"/>), the AppHost through Aspire.Hosting.Orleans'
/// environment (<c>Orleans__Endpoints__*</c>, <c>Orleans__Clustering__*</c>).
/// </summary>
/// <param name="Role"><see cref="SiloRoles.Frontend"/> or <see cref="SiloRoles.Expert"/>.</param>
/// <param name="Name">The silo's name (Orleans:Name): "frontend", "expert-1" … (pins refer to it).</param>
/// <param name="Models">The served models: id and checkpoint directory.</param>
/// <param name="Shards">Expert shards per MoE layer.</param>
/// <param name="Backend">Compute backend (<see cref="ComputeBackends.Names"/>).</param>
/// <param name="Wire">Default payload element type, both directions (<c>--wire</c>; null: the silo's default).</param>
/// <param name="ExpectedExpertSilos">A front-end's /health says degraded while fewer expert silos serve (null: not set).</param>
/// <param name="Urls">Where the silo's HTTP listens (null: left to the environment or the silo's default).</param>
/// <param name="WireDispatch">Default element type of the dispatch direction, over <paramref name="Wire"/> (<c>--wire-dispatch</c>; null: not given).</param>
/// <param name="WireCombine">Default element type of the combine direction, over <paramref name="Wire"/> (<c>--wire-combine</c>; null: not given).</param>
/// <param name="RedundantExperts">Replicas a re-plan may add per MoE layer (<c>--redundant-experts</c>; null: the silo's default).</param>
/// <param name="RebalanceEverySeconds">Periodic re-plan (<c>--rebalance-every</c>; null: on demand only).</param>
/// <param name="ReplicaBytesPerSilo">The replica budget in bytes per expert silo (<c>--replica-bytes-per-silo</c>; null: not given).</param>
public sealed record SiloLaunch(
    string Role,
    string Name,
    IReadOnlyList<(string Id, string Path)> Models,
    int Shards,
    string Backend,
    string? Wire = null,
    int? ExpectedExpertSilos = null,
    string? Urls = null,
    string? WireDispatch = null,
    string? WireCombine = null,
    int? RedundantExperts = null,
    double? RebalanceEverySeconds = null,
    long? ReplicaBytesPerSilo = null)
{
    /// <summary>The verb and its flags: <c>silo --role … --name … --model id=dir … --shards … --backend …</c>.</summary>
    public IReadOnlyList<string> Arguments()
    {
        if (Role is not (SiloRoles.Frontend or SiloRoles.Expert))
        {
            throw new ArgumentException($"role '{Role}': expected {SiloRoles.Frontend} or {SiloRoles.Expert}");
        }

        var args = new List<string> { "silo", "--role", Role, "--name", Name };
        foreach (var (id, path) in Models)
        {
            args.AddRange(["--model", $"{id}={Path.GetFullPath(path)}"]);
        }

        args.AddRange(["--shards", Shards.ToString(CultureInfo.InvariantCulture), "--backend", Backend]);
        if (Wire is not null)
        {
            args.AddRange(["--wire", Wire]);
        }

        if (WireDispatch is not null)
        {
            args.AddRange(["--wire-dispatch", WireDispatch]);
        }

        if (WireCombine is not null)
        {
            args.AddRange(["--wire-combine", WireCombine]);
        }

        if (ExpectedExpertSilos is int expected)
        {
            args.AddRange(["--expected-expert-silos", expected.ToString(CultureInfo.InvariantCulture)]);
        }

        if (Urls is not null)
        {
            args.AddRange(["--urls", Urls]);
        }

        if (RedundantExperts is int redundant)
        {
            args.AddRange(["--redundant-experts", redundant.ToString(CultureInfo.InvariantCulture)]);
        }

        if (RebalanceEverySeconds is double every)
        {
            args.AddRange(["--rebalance-every", every.ToString(CultureInfo.InvariantCulture)]);
        }

        if (ReplicaBytesPerSilo is long bytes)
        {
            args.AddRange(["--replica-bytes-per-silo", bytes.ToString(CultureInfo.InvariantCulture)]);
        }

        return args;
    }

    /// <summary>
    /// Ports and localhost clustering as flags (<c>moecluster run</c>): the silo port, the Orleans client gateway port (0:
    /// none) and, on every silo but the primary, the primary silo's endpoint.
    /// </summary>
    public static IReadOnlyList<string> PortArguments(int siloPort, int gatewayPort, string? primary)
    {
        var args = new List<string>
        {
            "--silo-port", siloPort.ToString(CultureInfo.InvariantCulture),
            "--gateway-port", gatewayPort.ToString(CultureInfo.InvariantCulture),
        };
        if (primary is not null)
        {
            args.AddRange(["--primary", primary]);
        }

        return args;
    }

    /// <summary>The environment every silo of the cluster gets: the mutual-TLS material in <paramref name="tlsDirectory"/>.</summary>
    public static IReadOnlyDictionary<string, string> Environment(string tlsDirectory) => LocalClusterTls.Environment(tlsDirectory);
}
