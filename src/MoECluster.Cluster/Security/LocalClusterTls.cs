using System.Diagnostics;

namespace MoECluster.Cluster.Security;

/// <summary>
/// The TLS material of a local cluster (<c>moecluster run</c>, the AppHost launcher): made once in a directory that
/// persists between runs (<c>&lt;models-dir&gt;/tls</c>, beside the generated models) and reused while it loads, checks
/// and has more than <see cref="RenewBefore"/> left; made anew otherwise. Every child silo gets the paths in its
/// environment (<see cref="Environment"/>).
/// </summary>
public static class LocalClusterTls
{
    public const string DirectoryName = "tls";

    public static readonly TimeSpan RenewBefore = TimeSpan.FromDays(7);

    /// <summary>Where a launcher whose models live in <paramref name="modelsDir"/> keeps its TLS material.</summary>
    public static string DirectoryFor(string modelsDir) => Path.Combine(Path.GetFullPath(modelsDir), DirectoryName);

    /// <summary>Makes sure <paramref name="directory"/> holds usable material; returns one line that says whether it was reused or made.</summary>
    public static string Ensure(string directory)
    {
        directory = Path.GetFullPath(directory);
        Directory.CreateDirectory(directory);
        using var exclusive = Lock(directory);
        string? problem = null;
        try
        {
            using var tls = ClusterTls.Load(new ClusterTlsOptions { Directory = directory });
            if (tls.Certificate.NotAfter.ToUniversalTime() - DateTime.UtcNow > RenewBefore)
            {
                return $"TLS: the local cluster's certificates in {directory} (reused; mutual TLS on every Orleans connection)";
            }

            problem = $"its certificate expires {tls.Certificate.NotAfter.ToUniversalTime():u}";
        }
        catch (InvalidOperationException e)
        {
            problem = File.Exists(Path.Combine(directory, ClusterTlsOptions.CertificateFileName)) ? e.Message : null;
        }

        ClusterCertificates.WriteNewCluster(directory, "moecluster-local", TimeSpan.FromDays(365), DateTimeOffset.UtcNow);
        return problem is null
            ? $"TLS: made the local cluster's CA and certificate in {directory} (reused by later runs)"
            : $"TLS: made new certificates in {directory} ({problem})";
    }

    /// <summary>The environment a child silo needs to use the material in <paramref name="directory"/>.</summary>
    public static IReadOnlyDictionary<string, string> Environment(string directory)
    {
        directory = Path.GetFullPath(directory);
        static string Env(string property) => $"MoECluster__Tls__{property}";
        return new Dictionary<string, string>
        {
            [Env(nameof(ClusterTlsOptions.CertificatePath))] = Path.Combine(directory, ClusterTlsOptions.CertificateFileName),
            [Env(nameof(ClusterTlsOptions.KeyPath))] = Path.Combine(directory, ClusterTlsOptions.KeyFileName),
            [Env(nameof(ClusterTlsOptions.CaPath))] = Path.Combine(directory, ClusterTlsOptions.CaFileName),
        };
    }

    /// <summary>Two launchers sharing a models directory must not write the material at the same time.</summary>
    private static FileStream Lock(string directory)
    {
        string path = Path.Combine(directory, ".lock");
        var clock = Stopwatch.StartNew();
        while (true)
        {
            try
            {
                return new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
            }
            catch (IOException) when (clock.Elapsed < TimeSpan.FromSeconds(30))
            {
                Thread.Sleep(100);
            }
        }
    }
}
