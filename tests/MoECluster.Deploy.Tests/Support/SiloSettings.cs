using System.Globalization;
using Microsoft.Extensions.Configuration;
using MoECluster.Cluster.Hosting;
using MoECluster.Cluster.Security;

namespace MoECluster.Deploy.Tests.Support;

/// <summary>The ports one silo uses, read from its settings: HTTP (Urls), silo-to-silo, Orleans client gateway (0 = none).</summary>
public sealed record SiloPorts(int Http, int Silo, int Gateway)
{
    /// <summary>The ports something listens on (a gateway port of 0 means none).</summary>
    public IReadOnlySet<int> Listening => Gateway == 0 ? new HashSet<int> { Http, Silo } : new HashSet<int> { Http, Silo, Gateway };
}

/// <summary>
/// One silo's environment as a deployment file sets it (Kubernetes container, compose service, systemd environment
/// files), and the checks every deployment format shares: every name is a configuration key the code reads, the
/// settings a silo of that role needs are there, and the ports they name.
/// </summary>
public static class SiloSettings
{
    /// <summary>Variables that are not configuration keys but are read by something else in the process (named, with the reader).</summary>
    public static readonly IReadOnlyDictionary<string, string> External = new Dictionary<string, string>(StringComparer.Ordinal)
    {
        ["CUDA_VISIBLE_DEVICES"] = "the CUDA driver: the GPUs this process sees",
        ["PATH"] = "the shell (Dockerfile)",
    };

    public static string Env(string key) => ConfigurationKeys.ToEnvironmentName(key);

    /// <summary>Fails with every name in <paramref name="names"/> that neither the code nor <see cref="External"/> reads.</summary>
    public static void AssertKnown(string where, IEnumerable<string> names)
    {
        var unknown = names.Where(n => !ConfigurationKeys.IsKnown(n) && !External.ContainsKey(n)).ToList();
        Assert.True(unknown.Count == 0, $"{where} sets variables that are no configuration key of the code: {string.Join(", ", unknown)} (known keys: {string.Join(", ", ConfigurationKeys.All.Select(Env))})");
    }

    /// <summary>The port of the first URL in <paramref name="urls"/>, which must listen on every interface at a fixed port.</summary>
    public static int UrlsPort(string where, string urls)
    {
        string first = urls.Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)[0];
        Assert.True(Uri.TryCreate(first.Replace("://+", "://0.0.0.0", StringComparison.Ordinal).Replace("://*", "://0.0.0.0", StringComparison.Ordinal), UriKind.Absolute, out Uri? uri), $"{where}: Urls {urls} is not a URL");
        Assert.True(uri!.Host is "0.0.0.0" or "[::]", $"{where}: Urls {urls} must listen on every interface (0.0.0.0), or probes and other hosts cannot reach it");
        Assert.True(uri.Port > 0, $"{where}: Urls {urls} must name a fixed port (probes and Services point at it)");
        return uri.Port;
    }

    /// <summary>
    /// Checks the settings a silo of <paramref name="role"/> needs in a deployment (Redis membership with its
    /// connection string, identity, fixed ports, an advertised address, a served model, a valid compute backend)
    /// and returns its ports. <paramref name="env"/> holds every variable the silo gets, by environment name.
    /// </summary>
    public static SiloPorts Check(string where, string role, IReadOnlyDictionary<string, string?> env)
    {
        var e = new Dictionary<string, string?>(env, StringComparer.OrdinalIgnoreCase);
        AssertKnown(where, e.Keys);
        string Required(string key)
        {
            Assert.True(e.TryGetValue(Env(key), out string? v) && v is not null, $"{where} does not set {Env(key)}");
            return v!;
        }

        Assert.False(string.IsNullOrWhiteSpace(Required(ConfigurationKeys.ClusterId)), $"{where}: empty cluster id");
        Assert.False(string.IsNullOrWhiteSpace(Required(ConfigurationKeys.ServiceId)), $"{where}: empty service id");
        Assert.Equal("Redis", Required(ConfigurationKeys.ClusteringProviderType));
        string serviceKey = Required(ConfigurationKeys.ClusteringServiceKey);
        string connection = Required(ConfigurationKeys.ConnectionString(serviceKey));
        Assert.Matches("^[A-Za-z0-9._-]+:[0-9]+", connection);
        Required(ConfigurationKeys.AdvertisedIPAddress);
        Assert.Contains(e.Keys, k => k.StartsWith("MoECluster__Models__", StringComparison.OrdinalIgnoreCase) && k.EndsWith("__Path", StringComparison.OrdinalIgnoreCase));
        Assert.False(e.ContainsKey(Env(ConfigurationKeys.PrimarySiloEndPoint)), $"{where}: PrimarySiloEndPoint belongs to Development clustering, not Redis");
        Assert.False(e.ContainsKey(Env(ConfigurationKeys.Role)), $"{where}: the role comes from `silo --role`, not from the environment");

        // The MoECluster settings pass the check every silo makes when it starts (or the silo would exit at once).
        var section = new ConfigurationBuilder().AddInMemoryCollection(e
            .Where(kv => kv.Key.StartsWith(MoeClusterOptions.Section + "__", StringComparison.OrdinalIgnoreCase))
            .Select(kv => KeyValuePair.Create(kv.Key.Replace("__", ":", StringComparison.Ordinal), kv.Value))).Build().GetSection(MoeClusterOptions.Section);
        var validated = new MoeClusterOptionsValidator().Validate(null, section.Get<MoeClusterOptions>() ?? new MoeClusterOptions());
        Assert.True(validated.Succeeded, $"{where}: a silo with these settings would not start: {validated.FailureMessage}");

        int http = UrlsPort(where, Required(ConfigurationKeys.Urls));
        int silo = int.Parse(Required(ConfigurationKeys.SiloPort), CultureInfo.InvariantCulture);
        int gateway = e.TryGetValue(Env(ConfigurationKeys.GatewayPort), out string? g) && g is not null
            ? int.Parse(g, CultureInfo.InvariantCulture)
            : ConfigurationKeys.DefaultGatewayPort;
        if (role == SiloRoles.Frontend)
        {
            Assert.True(gateway > 0, $"{where}: a front-end serves Orleans clients on its gateway port");
            Assert.False(e.ContainsKey(Env($"{MoeClusterOptions.Section}:Compute:Backend")), $"{where}: a front-end holds no experts; the compute backend is an expert setting");
        }
        else
        {
            Assert.Equal(SiloRoles.Expert, role);
            string backend = Required($"{MoeClusterOptions.Section}:{nameof(MoeClusterOptions.Compute)}:{nameof(ComputeOptions.Backend)}");
            Assert.Contains(backend, ComputeBackends.Names);
        }

        // Mutual TLS on every Orleans connection: never turned off in a deployment, the material from files.
        Assert.False(e.TryGetValue(Env(TlsKey(nameof(ClusterTlsOptions.Enabled))), out string? tlsOn) && !string.Equals(tlsOn, "true", StringComparison.OrdinalIgnoreCase),
            $"{where}: turns TLS off ({Env(TlsKey(nameof(ClusterTlsOptions.Enabled)))}={tlsOn}): any process that reaches its Orleans ports could join");
        Assert.True(TlsDirectory(e) is not null || new[] { nameof(ClusterTlsOptions.CertificatePath), nameof(ClusterTlsOptions.KeyPath), nameof(ClusterTlsOptions.CaPath) }.All(p => e.ContainsKey(Env(TlsKey(p)))),
            $"{where}: sets neither {Env(TlsKey(nameof(ClusterTlsOptions.Directory)))} nor the three TLS file paths");

        // API keys on by default on the gateway: from a file (a mounted Secret, a 0640 file), never a literal key in the deployment.
        if (role == SiloRoles.Frontend)
        {
            Assert.True(ApiKeysFile(e) is not null, $"{where}: a front-end in deploy/ must turn API keys on ({Env(GatewayKey(nameof(GatewayOptions.ApiKeysFile)))})");
        }

        Assert.DoesNotContain(e.Keys, k => k.StartsWith(Env(GatewayKey(nameof(GatewayOptions.ApiKeys))) + "__", StringComparison.OrdinalIgnoreCase));

        var ports = new SiloPorts(http, silo, gateway);
        Assert.True(ports.Listening.Count == (gateway == 0 ? 2 : 3), $"{where}: HTTP, silo and gateway ports must differ ({ports})");
        return ports;
    }

    /// <summary>The directory MoECluster__Tls__Directory names, if set.</summary>
    public static string? TlsDirectory(IReadOnlyDictionary<string, string?> env) =>
        env.FirstOrDefault(kv => string.Equals(kv.Key, Env(TlsKey(nameof(ClusterTlsOptions.Directory))), StringComparison.OrdinalIgnoreCase)).Value;

    /// <summary>The file MoECluster__Gateway__ApiKeysFile names, if set.</summary>
    public static string? ApiKeysFile(IReadOnlyDictionary<string, string?> env) =>
        env.FirstOrDefault(kv => string.Equals(kv.Key, Env(GatewayKey(nameof(GatewayOptions.ApiKeysFile))), StringComparison.OrdinalIgnoreCase)).Value;

    private static string TlsKey(string property) => $"{ClusterTlsOptions.Section}:{property}";

    private static string GatewayKey(string property) => $"{MoeClusterOptions.Section}:{nameof(MoeClusterOptions.Gateway)}:{property}";

    /// <summary>The role a `moecluster silo --role R` command line runs.</summary>
    public static string RoleOf(string where, IReadOnlyList<string> args)
    {
        int verb = args.ToList().IndexOf("silo");
        Assert.True(verb >= 0, $"{where} does not run `moecluster silo` (args: {string.Join(' ', args)})");
        int flag = args.ToList().IndexOf("--role");
        Assert.True(flag > verb && flag + 1 < args.Count, $"{where} runs a silo without --role");
        string role = args[flag + 1];
        Assert.Contains(role, new[] { SiloRoles.Frontend, SiloRoles.Expert });
        return role;
    }
}
