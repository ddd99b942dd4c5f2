using MoECluster.Cluster.Security;
using MoECluster.Deploy.Tests.Support;

namespace MoECluster.Deploy.Tests;

/// <summary>deploy/install.sh run for real into temporary roots: what it installs, that it is idempotent, and --uninstall.</summary>
public sealed class InstallScriptTests
{
    private static void AssertOk(MoECluster.Testing.ChildProcess.Result result) => Assert.True(result.ExitCode == 0, result.ToString());

    [Fact]
    public void Installs_program_units_and_environment_files_with_their_modes()
    {
        using var install = new Installation();
        var result = install.Install();
        AssertOk(result);

        Assert.Equal("755", Installation.ModeOf(install.Under("/opt/moecluster/moecluster")));
        Assert.Equal("644", Installation.ModeOf(install.Under("/opt/moecluster/moecluster.dll")));
        Assert.Equal("644", Installation.ModeOf(install.Under("/opt/moecluster/runtimes/linux-x64/native/libstandin.so")));
        Assert.True(File.Exists(install.Under("/opt/moecluster/.moecluster-install")));
        Assert.Equal(File.ReadAllText(Path.Combine(install.Publish, "moecluster")), File.ReadAllText(install.Under("/opt/moecluster/moecluster")));
        foreach (string unit in new[] { "moecluster-frontend.service", "moecluster-expert@.service" })
        {
            Assert.Equal("644", Installation.ModeOf(install.Under($"/etc/systemd/system/{unit}")));
        }

        // Settings may hold the Redis password: readable by root only (systemd reads them as root).
        foreach (string env in new[] { "common.env", "frontend.env", "expert.env", "expert-0.env", "expert-1.env" })
        {
            Assert.Equal("640", Installation.ModeOf(install.Under($"/etc/moecluster/{env}")));
        }

        Assert.False(File.Exists(install.Under("/etc/moecluster/expert-2.env")));
        Assert.Equal("750", Installation.ModeOf(install.Under("/var/lib/moecluster")));
        Assert.Equal("755", Installation.ModeOf(install.Under("/var/lib/moecluster/models")));

        string common = File.ReadAllText(install.Under("/etc/moecluster/common.env"));
        Assert.Contains($"ConnectionStrings__redis={Installation.Redis}\n", common, StringComparison.Ordinal);
        Assert.Contains($"Orleans__Endpoints__AdvertisedIPAddress={Installation.AdvertiseIp}\n", common, StringComparison.Ordinal);
        Assert.Contains("MoECluster__Models__latent__Path=/var/lib/moecluster/models/latent\n", common, StringComparison.Ordinal);
        string frontend = File.ReadAllText(install.Under("/etc/moecluster/frontend.env"));
        Assert.Contains($"MoECluster__ExpectedExpertSilos={Installation.Gpus.ToString(System.Globalization.CultureInfo.InvariantCulture)}\n", frontend, StringComparison.Ordinal);
        Assert.Contains("nothing started", result.Stdout, StringComparison.Ordinal);

        // Nothing outside the root, and no enablement links: install does not start or enable anything.
        Assert.DoesNotContain(install.Snapshot(), e => e.Contains(".wants", StringComparison.Ordinal));
    }

    [Fact]
    public void It_makes_the_clusters_certificates_and_an_API_key_readable_by_the_service_only()
    {
        using var install = new Installation();
        var result = install.Install();
        AssertOk(result);
        Assert.Contains("created    /etc/moecluster/tls/", result.Stdout, StringComparison.Ordinal);
        Assert.Equal("750", Installation.ModeOf(install.Under("/etc/moecluster/tls")));
        Assert.Equal("644", Installation.ModeOf(install.Under("/etc/moecluster/tls/ca.crt")));
        Assert.Equal("644", Installation.ModeOf(install.Under("/etc/moecluster/tls/tls.crt")));
        Assert.Equal("640", Installation.ModeOf(install.Under("/etc/moecluster/tls/tls.key")));
        Assert.Equal("600", Installation.ModeOf(install.Under("/etc/moecluster/tls/ca.key")));
        using (var tls = ClusterTls.Load(new ClusterTlsOptions { Directory = install.Under("/etc/moecluster/tls") }))
        {
            Assert.True(tls.IsTrusted(tls.Certificate, ClusterTls.ClientAuthOid, out string reason), reason);
        }

        string keys = install.Under("/etc/moecluster/gateway-keys");
        Assert.Equal("640", Installation.ModeOf(keys));
        var lines = File.ReadAllLines(keys).Where(l => l.Length > 0 && !l.StartsWith('#')).ToList();
        Assert.Matches("^[0-9a-f]{64}$", Assert.Single(lines));
        Assert.DoesNotContain(lines[0], result.Stdout, StringComparison.Ordinal);

        // A second run keeps both (a new CA would cut this host off from the others).
        string before = File.ReadAllText(install.Under("/etc/moecluster/tls/tls.crt")) + File.ReadAllText(keys);
        var again = install.Install();
        AssertOk(again);
        Assert.Equal(before, File.ReadAllText(install.Under("/etc/moecluster/tls/tls.crt")) + File.ReadAllText(keys));
        Assert.Contains("kept       /etc/moecluster/tls/", again.Stdout, StringComparison.Ordinal);
    }

    [Fact]
    public void Tls_dir_installs_a_certificate_issued_from_the_first_hosts_CA()
    {
        using var first = new Installation();
        AssertOk(first.Install());
        string ca = first.Under("/etc/moecluster/tls");
        using var issued = new MoECluster.Testing.TempDirectory("moecluster-issued-");
        var issue = MoECluster.Testing.ChildProcess.Moecluster("tls", "issue", "--dir", ca, "--name", "host-2", "--out", issued.Path);
        AssertOk(issue);

        using var second = new Installation();
        AssertOk(second.Install("--tls-dir", issued.Path));
        string dir = second.Under("/etc/moecluster/tls");
        Assert.False(File.Exists(Path.Combine(dir, "ca.key")), "the CA key must not travel to other hosts");
        Assert.Equal("640", Installation.ModeOf(Path.Combine(dir, "tls.key")));
        using var host1 = ClusterTls.Load(new ClusterTlsOptions { Directory = ca });
        using var host2 = ClusterTls.Load(new ClusterTlsOptions { Directory = dir });
        Assert.True(host1.IsTrusted(host2.Certificate, ClusterTls.ClientAuthOid, out string r1), r1);
        Assert.True(host2.IsTrusted(host1.Certificate, ClusterTls.ServerAuthOid, out string r2), r2);

        var missing = second.Install("--tls-dir", second.Under("/nowhere"));
        Assert.Equal(2, missing.ExitCode);
        Assert.Contains("has no ca.crt", missing.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public void Without_redis_it_writes_a_placeholder_not_a_secret()
    {
        using var install = new Installation();
        AssertOk(Installation.Script("--root", install.Root, "--no-user", "--gpus", "1", "--advertise-ip", Installation.AdvertiseIp, install.Publish));
        var common = new EnvFile(install.Under("/etc/moecluster/common.env"));
        Assert.Equal("REPLACE-WITH-REDIS-HOST:6379", common.Values["ConnectionStrings__redis"]);
    }

    [Fact]
    public void A_second_run_changes_nothing()
    {
        using var install = new Installation();
        AssertOk(install.Install());
        var first = install.Snapshot();

        var again = install.Install();
        AssertOk(again);
        Assert.Equal(first, install.Snapshot());
        Assert.DoesNotContain("installed ", again.Stdout, StringComparison.Ordinal);
        Assert.DoesNotContain("created ", again.Stdout, StringComparison.Ordinal);
        Assert.Contains("unchanged  /opt/moecluster/", again.Stdout, StringComparison.Ordinal);
        Assert.Contains("kept       /etc/moecluster/common.env", again.Stdout, StringComparison.Ordinal);
    }

    [Fact]
    public void Edited_settings_survive_and_a_new_build_replaces_the_old_one()
    {
        using var install = new Installation();
        AssertOk(install.Install());
        string common = install.Under("/etc/moecluster/common.env");
        File.AppendAllText(common, "MoECluster__ShardsPerLayer=8\n");
        string edited = File.ReadAllText(common);

        install.WriteFile("moecluster.dll", "a newer build\n");
        File.Delete(Path.Combine(install.Publish, "runtimes", "linux-x64", "native", "libstandin.so"));
        var result = install.Install();
        AssertOk(result);

        Assert.Equal(edited, File.ReadAllText(common));
        Assert.Equal("a newer build\n", File.ReadAllText(install.Under("/opt/moecluster/moecluster.dll")));
        Assert.False(File.Exists(install.Under("/opt/moecluster/runtimes/linux-x64/native/libstandin.so")), "a file the new build no longer has stayed behind");
        Assert.Contains("installed  /opt/moecluster/", result.Stdout, StringComparison.Ordinal);
        Assert.DoesNotContain(Directory.EnumerateDirectories(install.Under("/opt")), d => !d.EndsWith("/moecluster", StringComparison.Ordinal));
    }

    [Fact]
    public void More_gpus_add_instance_files_with_the_next_ports()
    {
        using var install = new Installation();
        AssertOk(install.Install());
        AssertOk(Installation.Script("--root", install.Root, "--no-user", "--gpus", "3", install.Publish));
        var third = new EnvFile(install.Under("/etc/moecluster/expert-2.env"));
        Assert.Equal("11114", third.Values["Orleans__Endpoints__SiloPort"]);
        Assert.Equal("http://0.0.0.0:8083", third.Values["Urls"]);
        Assert.Contains("moecluster-expert@2", File.ReadAllText(install.Under("/etc/moecluster/expert-2.env")), StringComparison.Ordinal);
    }

    [Fact]
    public void The_prefix_is_substituted_into_the_units()
    {
        using var install = new Installation();
        AssertOk(install.Install("--prefix", "/srv/moe-test"));
        Assert.True(File.Exists(install.Under("/srv/moe-test/moecluster")));
        Assert.False(Directory.Exists(install.Under("/opt/moecluster")));
        foreach (string unit in new[] { "moecluster-frontend.service", "moecluster-expert@.service" })
        {
            var u = new SystemdUnit(install.Under($"/etc/systemd/system/{unit}"));
            Assert.StartsWith("/srv/moe-test/moecluster silo --role ", u.One("Service", "ExecStart"), StringComparison.Ordinal);
        }

        AssertOk(install.Uninstall("--prefix", "/srv/moe-test"));
        Assert.False(Directory.Exists(install.Under("/srv/moe-test")));
    }

    [Fact]
    public void Uninstall_removes_program_and_units_and_purge_the_settings()
    {
        using var install = new Installation();
        AssertOk(install.Install());
        File.WriteAllText(install.Under("/var/lib/moecluster/models/marker"), "a model file");

        var result = install.Uninstall();
        AssertOk(result);
        Assert.False(Directory.Exists(install.Under("/opt/moecluster")));
        Assert.False(File.Exists(install.Under("/etc/systemd/system/moecluster-frontend.service")));
        Assert.False(File.Exists(install.Under("/etc/systemd/system/moecluster-expert@.service")));
        Assert.True(File.Exists(install.Under("/etc/moecluster/common.env")), "settings are kept without --purge");
        Assert.Contains("kept       /etc/moecluster/", result.Stdout, StringComparison.Ordinal);

        AssertOk(install.Uninstall("--purge"));
        Assert.False(Directory.Exists(install.Under("/etc/moecluster")));
        Assert.True(File.Exists(install.Under("/var/lib/moecluster/models/marker")), "models are never removed");

        // Nothing of install.sh's files is left, and a second uninstall has nothing to do.
        var files = install.Snapshot().Select(e => e.Split(' ')[0]).Where(p => !p.EndsWith('/'));
        Assert.Equal(new[] { "var/lib/moecluster/models/marker" }, files);
        var again = install.Uninstall("--purge");
        AssertOk(again);
        Assert.DoesNotContain("removed", again.Stdout, StringComparison.Ordinal);
    }

    [Fact]
    public void Refuses_to_replace_or_remove_a_directory_it_did_not_install()
    {
        using var install = new Installation();
        string foreign = install.Under("/opt/moecluster/precious.txt");
        Directory.CreateDirectory(Path.GetDirectoryName(foreign)!);
        File.WriteAllText(foreign, "not ours");

        var result = install.Install();
        Assert.Equal(2, result.ExitCode);
        Assert.Contains("refusing to replace", result.Stderr, StringComparison.Ordinal);
        Assert.Equal(2, install.Uninstall().ExitCode);
        Assert.Equal("not ours", File.ReadAllText(foreign));
    }

    [Theory]
    [InlineData("--gpus", "0")]
    [InlineData("--gpus", "x")]
    [InlineData("--prefix", "/usr")]
    [InlineData("--prefix", "relative/dir")]
    [InlineData("--start", "all")]
    [InlineData("--advertise-ip", "host.example")]
    [InlineData("--bogus", "1")]
    public void Bad_arguments_exit_2_with_a_message_and_install_nothing(string option, string value)
    {
        using var install = new Installation();
        var result = install.Install(option, value);
        Assert.True(result.ExitCode == 2, result.ToString());
        Assert.StartsWith("install.sh: error: ", result.Stderr, StringComparison.Ordinal);
        Assert.Empty(install.Snapshot());
    }

    [Fact]
    public void A_directory_without_moecluster_is_not_a_published_build()
    {
        using var install = new Installation();
        File.Delete(Path.Combine(install.Publish, "moecluster"));
        var result = install.Install();
        Assert.Equal(2, result.ExitCode);
        Assert.Contains("no executable moecluster", result.Stderr, StringComparison.Ordinal);
    }
}
