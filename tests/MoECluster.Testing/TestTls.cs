using MoECluster.Cluster.Security;

namespace MoECluster.Testing;

/// <summary>
/// TLS material for tests: <see cref="Cluster"/> is the cluster's (a CA and a node certificate), made once per test
/// run and given to every process <see cref="BackgroundProcess"/> and <see cref="ChildProcess"/> start (unless the
/// test sets MoECluster__Tls__* itself), so silos form a mutual-TLS cluster as they do under the launchers.
/// <see cref="CreateIn"/> makes material from a new CA (another cluster's).
/// </summary>
public sealed class TestTls
{
    private const string Prefix = "MoECluster__Tls__";

    private static readonly Lazy<TestTls> Shared = new(() =>
    {
        string dir = System.IO.Directory.CreateTempSubdirectory("moecluster-tls-").FullName;
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            try
            {
                System.IO.Directory.Delete(dir, recursive: true);
            }
            catch (IOException)
            {
            }
        };
        return CreateIn(dir);
    });

    private TestTls(string directory) => Directory = directory;

    /// <summary>The cluster's material, made once per test run.</summary>
    public static TestTls Cluster => Shared.Value;

    /// <summary>Holds ca.crt, ca.key, tls.crt and tls.key.</summary>
    public string Directory { get; }

    /// <summary>MoECluster__Tls__CertificatePath, __KeyPath, __CaPath for a child process.</summary>
    public IReadOnlyDictionary<string, string> Environment => LocalClusterTls.Environment(Directory);

    /// <summary>A new CA and node certificate in <paramref name="directory"/>.</summary>
    public static TestTls CreateIn(string directory)
    {
        ClusterCertificates.WriteNewCluster(directory, "moecluster-test", TimeSpan.FromDays(30), DateTimeOffset.UtcNow);
        return new TestTls(directory);
    }

    /// <summary>The material, loaded for an Orleans client (<see cref="ClusterTlsHosting.UseClusterTls"/>).</summary>
    public ClusterTls Load() => ClusterTls.Load(new ClusterTlsOptions { Directory = Directory });

    /// <summary><paramref name="environment"/> plus the cluster's TLS variables, unless it already sets any MoECluster__Tls__ key (a test that opts out or brings its own).</summary>
    public static IReadOnlyDictionary<string, string> WithClusterTls(IReadOnlyDictionary<string, string>? environment)
    {
        var merged = new Dictionary<string, string>(environment ?? new Dictionary<string, string>());
        if (!merged.Keys.Any(k => k.StartsWith(Prefix, StringComparison.OrdinalIgnoreCase)))
        {
            foreach (var (name, value) in Cluster.Environment)
            {
                merged[name] = value;
            }
        }

        return merged;
    }
}
