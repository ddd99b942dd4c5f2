using System.Reflection;
using MoECluster.Kernels.Gpu;

namespace MoECluster.Cluster.Hosting;

/// <summary>
/// The configuration keys a MoECluster silo reads, in one place: the Orleans keys the <c>silo</c> verb and Orleans'
/// own configuration binding use, the "MoECluster" section (derived from <see cref="MoeClusterOptions"/> by
/// reflection), connection strings, logging and OpenTelemetry. Keys are written with ':'; the environment form
/// replaces each ':' with "__" (<c>Orleans__Endpoints__SiloPort</c>). Deployment files (deploy/) are checked
/// against <see cref="IsKnown"/>.
/// </summary>
public static class ConfigurationKeys
{
    /// <summary>A segment that stands for any one name (a dictionary key: a model id, a pin, a connection string).</summary>
    public const string Any = "*";

    public const string ClusterId = "Orleans:ClusterId";
    public const string ServiceId = "Orleans:ServiceId";

    /// <summary>Development (localhost clustering; the embedded default) or Redis (the production default of deploy/).</summary>
    public const string ClusteringProviderType = "Orleans:Clustering:ProviderType";

    /// <summary>The connection string name the clustering provider uses: <c>ConnectionStrings:{ServiceKey}</c>.</summary>
    public const string ClusteringServiceKey = "Orleans:Clustering:ServiceKey";

    /// <summary>HOST:PORT of the primary silo (Development clustering only).</summary>
    public const string PrimarySiloEndPoint = "Orleans:Clustering:PrimarySiloEndPoint";

    public const string SiloPort = "Orleans:Endpoints:SiloPort";

    /// <summary>The Orleans client gateway port; 0 = no gateway.</summary>
    public const string GatewayPort = "Orleans:Endpoints:GatewayPort";

    /// <summary>The address other silos reach this one at (and that the silo listens on): an IP address, never a host name.</summary>
    public const string AdvertisedIPAddress = "Orleans:Endpoints:AdvertisedIPAddress";

    /// <summary>The silo's name; pins (<c>MoECluster:Pins</c>) refer to it.</summary>
    public const string SiloName = "Orleans:Name";

    /// <summary>The silo metadata that marks its role (<see cref="SiloRoles.Expert"/> or <see cref="SiloRoles.Frontend"/>).</summary>
    public const string Role = "Orleans:Metadata:" + SiloRoles.MetadataKey;

    /// <summary>Where HTTP listens (ASP.NET Core's <c>Urls</c>): the gateway on a front-end, /health and /alive on an expert.</summary>
    public const string Urls = "Urls";

    public const string ConnectionStrings = "ConnectionStrings";

    public const string OtlpEndpoint = "OTEL_EXPORTER_OTLP_ENDPOINT";

    public const string OtelServiceName = "OTEL_SERVICE_NAME";

    /// <summary>The defaults the silo verb embeds, per role.</summary>
    public const int DefaultSiloPort = 11111;

    public const int DefaultGatewayPort = 30000;

    /// <summary>The front-end's HTTP port (gateway, /health, /alive) in the embedded defaults and in deploy/.</summary>
    public const int DefaultFrontendHttpPort = 8080;

    /// <summary>An expert's HTTP port (/health, /alive) in deploy/ (the embedded default is an ephemeral port).</summary>
    public const int DeployedExpertHttpPort = 8081;

    public static string ModelPath(string id) => $"{MoeClusterOptions.Section}:Models:{id}:Path";

    public static string ConnectionString(string name) => $"{ConnectionStrings}:{name}";

    /// <summary>
    /// Environment variables the process reads directly (not through configuration): the CUDA driver and cuBLAS
    /// library overrides of the GPU kernels.
    /// </summary>
    public static IReadOnlyList<string> ProcessEnvironment { get; } = [CudaDriverLibrary.OverrideVariable, CublasLibrary.OverrideVariable];

    /// <summary>Every known key, with <see cref="Any"/> for a name the operator chooses.</summary>
    public static IReadOnlyList<string> All { get; } = Collect();

    /// <summary>The environment form of a configuration key: ':' becomes "__".</summary>
    public static string ToEnvironmentName(string key) => key.Replace(":", "__", StringComparison.Ordinal);

    /// <summary>The configuration key of an environment variable name: "__" becomes ':'.</summary>
    public static string FromEnvironmentName(string name) => name.Replace("__", ":", StringComparison.Ordinal);

    /// <summary>
    /// Whether <paramref name="keyOrEnvironmentName"/> (either form, case-insensitive as configuration is) is a key
    /// the code reads, or an environment variable it reads directly.
    /// </summary>
    public static bool IsKnown(string keyOrEnvironmentName)
    {
        if (ProcessEnvironment.Contains(keyOrEnvironmentName, StringComparer.Ordinal))
        {
            return true;
        }

        string[] segments = FromEnvironmentName(keyOrEnvironmentName).Split(':');
        return All.Any(known => Matches(known.Split(':'), segments));
    }

    private static bool Matches(string[] pattern, string[] segments) =>
        pattern.Length == segments.Length
        && pattern.Zip(segments).All(p => p.Second.Length > 0 && (p.First == Any || string.Equals(p.First, p.Second, StringComparison.OrdinalIgnoreCase)));

    private static List<string> Collect()
    {
        var keys = new List<string>
        {
            ClusterId, ServiceId, ClusteringProviderType, ClusteringServiceKey, PrimarySiloEndPoint,
            SiloPort, GatewayPort, AdvertisedIPAddress, SiloName, Role, Urls,
            ConnectionString(Any), "Logging:LogLevel:" + Any, OtlpEndpoint, OtelServiceName,
        };
        AddProperties(typeof(MoeClusterOptions), MoeClusterOptions.Section, keys, depth: 0);
        return keys;
    }

    /// <summary>The bindable properties of an options class, as configuration keys (dictionaries take any key).</summary>
    private static void AddProperties(Type type, string prefix, List<string> keys, int depth)
    {
        foreach (var property in type.GetProperties(BindingFlags.Public | BindingFlags.Instance))
        {
            if (property.GetIndexParameters().Length > 0 || (!property.CanWrite && !IsCollection(property.PropertyType)))
            {
                continue;
            }

            AddValue(property.PropertyType, $"{prefix}:{property.Name}", keys, depth);
        }
    }

    private static void AddValue(Type type, string key, List<string> keys, int depth)
    {
        if (depth > 4)
        {
            throw new InvalidOperationException($"configuration type nesting too deep at {key}");
        }

        if (type.IsGenericType && type.GetGenericTypeDefinition() == typeof(Dictionary<,>))
        {
            AddValue(type.GetGenericArguments()[1], $"{key}:{Any}", keys, depth + 1);
        }
        else if (IsScalar(type))
        {
            keys.Add(key);
        }
        else
        {
            AddProperties(type, key, keys, depth + 1);
        }
    }

    private static bool IsCollection(Type type) => type.IsGenericType && type.GetGenericTypeDefinition() == typeof(Dictionary<,>);

    private static bool IsScalar(Type type)
    {
        Type t = Nullable.GetUnderlyingType(type) ?? type;
        return t.IsPrimitive || t.IsEnum || t == typeof(string) || t == typeof(decimal) || t == typeof(TimeSpan);
    }
}
