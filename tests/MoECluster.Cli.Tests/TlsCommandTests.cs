using MoECluster.Cluster.Security;
using MoECluster.Testing;

namespace MoECluster.Cli.Tests;

/// <summary><c>moecluster tls init</c> and <c>tls issue</c>, and a silo that has no usable TLS material.</summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class TlsCommandTests
{
    private static void AssertOneLineError(ChildProcess.Result r, int exitCode, params string[] fragments)
    {
        Assert.True(r.ExitCode == exitCode, r.ToString());
        string line = r.Stderr.Trim();
        Assert.DoesNotContain('\n', line);
        Assert.DoesNotContain("   at ", line, StringComparison.Ordinal);
        foreach (string fragment in fragments)
        {
            Assert.Contains(fragment, line, StringComparison.Ordinal);
        }
    }

    private static string Mode(string path) => Convert.ToString((int)File.GetUnixFileMode(path), 8);

    [Fact]
    public void Init_writes_a_CA_and_a_node_certificate_with_private_keys_0600_and_refuses_to_overwrite()
    {
        using var dir = new TempDirectory();
        string tls = dir.File("tls");
        var r = ChildProcess.Moecluster("tls", "init", "--dir", tls, "--name", "client");
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Equal("600", Mode(Path.Combine(tls, "tls.key")));
        Assert.Equal("600", Mode(Path.Combine(tls, "ca.key")));
        Assert.Equal("600", Mode(Path.Combine(tls, "client", "tls.key")));
        Assert.Equal("644", Mode(Path.Combine(tls, "tls.crt")));
        Assert.Equal("644", Mode(Path.Combine(tls, "ca.crt")));

        // The node certificate and the named one are both usable by a silo of this cluster, as server and client.
        using var node = ClusterTls.Load(new ClusterTlsOptions { Directory = tls });
        using var client = ClusterTls.Load(new ClusterTlsOptions { Directory = Path.Combine(tls, "client") });
        Assert.True(node.IsTrusted(client.Certificate, ClusterTls.ClientAuthOid, out string reason), reason);
        Assert.Contains("CN=client", client.Certificate.Subject, StringComparison.Ordinal);

        string before = File.ReadAllText(Path.Combine(tls, "ca.crt"));
        AssertOneLineError(ChildProcess.Moecluster("tls", "init", "--dir", tls), 2, "ca.crt exists; refusing to overwrite it", "--force");
        Assert.Equal(before, File.ReadAllText(Path.Combine(tls, "ca.crt")));

        Assert.True(ChildProcess.Moecluster("tls", "init", "--dir", tls, "--force").ExitCode == 0);
        Assert.NotEqual(before, File.ReadAllText(Path.Combine(tls, "ca.crt")));
    }

    [Fact]
    public void Issue_adds_a_certificate_from_the_same_CA()
    {
        using var dir = new TempDirectory();
        string tls = dir.File("tls");
        Assert.Equal(0, ChildProcess.Moecluster("tls", "init", "--dir", tls).ExitCode);
        var r = ChildProcess.Moecluster("tls", "issue", "--dir", tls, "--name", "gpu-2", "--ip", "10.0.0.7", "--days", "30");
        Assert.True(r.ExitCode == 0, r.ToString());
        using var node = ClusterTls.Load(new ClusterTlsOptions { Directory = tls });
        using var issued = ClusterTls.Load(new ClusterTlsOptions { Directory = Path.Combine(tls, "gpu-2") });
        Assert.True(node.IsTrusted(issued.Certificate, ClusterTls.ServerAuthOid, out string reason), reason);
        Assert.InRange((issued.Certificate.NotAfter - DateTime.Now).TotalDays, 29, 30.1);
        Assert.False(File.Exists(Path.Combine(tls, "gpu-2", "ca.key")));

        AssertOneLineError(ChildProcess.Moecluster("tls", "issue", "--dir", dir.File("nothing"), "--name", "x"), 2, "ca.crt does not exist", "moecluster tls init");
        AssertOneLineError(ChildProcess.Moecluster("tls", "issue", "--dir", tls, "--name", "../escape"), 2, "--name ../escape");
        AssertOneLineError(ChildProcess.Moecluster("tls", "issue", "--dir", tls, "--name", "y", "--days", "0"), 2, "--days = 0 is out of range");
    }

    [Fact]
    public void A_silo_without_usable_TLS_files_fails_at_start_up_with_one_line_naming_the_file_and_tls_init()
    {
        using var dir = new TempDirectory();

        // Nothing configured (the environment of this test run's processes has no TLS variables here).
        var none = ChildProcess.Run("dotnet", [ChildProcess.CliDll, "silo", "--role", "expert"], environment: new Dictionary<string, string>
        {
            ["MoECluster__Tls__Directory"] = "",
        });
        AssertOneLineError(none, 2, "moecluster silo: error: TLS is required", "MoECluster:Tls:Directory", "moecluster tls init --dir DIR");

        // A directory without the files.
        var missing = ChildProcess.Run("dotnet", [ChildProcess.CliDll, "silo", "--role", "expert"], environment: new Dictionary<string, string>
        {
            ["MoECluster__Tls__Directory"] = dir.Path,
        });
        AssertOneLineError(missing, 2, $"MoECluster:Tls:CertificatePath: {dir.File("tls.crt")} does not exist", "moecluster tls init --dir DIR");
    }
}
