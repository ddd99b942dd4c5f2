using System.Globalization;
using MoECluster.Cluster.Hosting;
using MoECluster.Deploy.Tests.Support;

namespace MoECluster.Deploy.Tests;

/// <summary>
/// The systemd units and environment files as install.sh installs them: unit settings, the paths they name exist in
/// the installed tree, the environment each silo gets is made of configuration keys, and the ports of the
/// front-end and every expert instance on one host are distinct.
/// </summary>
public sealed class SystemdUnitTests(InstalledFixture fixture) : IClassFixture<InstalledFixture>
{
    private const string Frontend = "moecluster-frontend.service";
    private const string Expert = "moecluster-expert@.service";

    private readonly Installation _install = fixture.Installation;

    public static TheoryData<string> Units => new(Frontend, Expert);

    private SystemdUnit Installed(string unit)
    {
        Assert.True(fixture.Result.ExitCode == 0, fixture.Result.ToString());
        return new SystemdUnit(_install.Under($"/etc/systemd/system/{unit}"));
    }

    [Theory]
    [MemberData(nameof(Units))]
    public void Units_restart_whatever_the_exit_with_a_crash_loop_limit_stop_gracefully_and_are_hardened(string unit)
    {
        var u = new SystemdUnit(Repo.File("deploy", "systemd", unit));
        Assert.Contains("network-online.target", u.One("Unit", "After"), StringComparison.Ordinal);
        Assert.Contains("network-online.target", u.One("Unit", "Wants"), StringComparison.Ordinal);
        // A silo told it was declared dead (after a hang) may exit with any code: it must come back all the same.
        Assert.Equal("always", u.One("Service", "Restart"));
        Assert.True(SystemdUnit.Seconds(u.One("Service", "RestartSec")) <= 2, $"{unit}: a restarted front-end must be back within seconds");
        Assert.True(int.Parse(u.One("Unit", "StartLimitBurst"), CultureInfo.InvariantCulture) > 1);
        Assert.True(SystemdUnit.Seconds(u.One("Unit", "StartLimitIntervalSec")) >= 60);
        Assert.Equal("SIGTERM", u.One("Service", "KillSignal"));
        Assert.True(SystemdUnit.Seconds(u.One("Service", "TimeoutStopSec")) >= 60, $"{unit}: TimeoutStopSec leaves Orleans' graceful shutdown (30 s) too little time");
        Assert.True(int.Parse(u.One("Service", "LimitNOFILE"), CultureInfo.InvariantCulture) >= 65536);
        Assert.Equal("yes", u.One("Service", "NoNewPrivileges"));
        Assert.Equal("strict", u.One("Service", "ProtectSystem"));
        Assert.Equal("yes", u.One("Service", "PrivateTmp"));
        Assert.Equal("@STATEDIR@", u.One("Service", "ReadWritePaths"));
        Assert.Equal("-@MODELDIR@", u.One("Service", "ReadOnlyPaths"));
        Assert.Equal("@USER@", u.One("Service", "User"));
        Assert.Empty(u.All("Service", "PrivateDevices"));
        Assert.Empty(u.All("Service", "MemoryDenyWriteExecute"));
        Assert.Equal("multi-user.target", u.One("Install", "WantedBy"));
        SiloSettings.AssertKnown(unit, u.Environment.Keys);

        string role = unit == Frontend ? SiloRoles.Frontend : SiloRoles.Expert;
        Assert.Equal(role, SiloSettings.RoleOf(unit, u.One("Service", "ExecStart").Split(' ')));
    }

    [Fact]
    public void Each_expert_instance_gets_its_gpu_and_its_own_environment_file()
    {
        var u = new SystemdUnit(Repo.File("deploy", "systemd", Expert));
        Assert.Equal("%i", u.Environment["CUDA_VISIBLE_DEVICES"]);
        Assert.Contains("%i", u.Environment[SiloSettings.Env(ConfigurationKeys.SiloName)], StringComparison.Ordinal);
        Assert.Equal(new[] { "@CONFDIR@/common.env", "@CONFDIR@/expert.env", "@CONFDIR@/expert-%i.env" }, u.All("Service", "EnvironmentFile"));
        Assert.Equal(new[] { "@CONFDIR@/common.env", "@CONFDIR@/frontend.env" }, new SystemdUnit(Repo.File("deploy", "systemd", Frontend)).All("Service", "EnvironmentFile"));
    }

    [Theory]
    [MemberData(nameof(Units))]
    public void Installed_units_name_paths_that_install_sh_installed(string unit)
    {
        var u = Installed(unit);
        Assert.DoesNotContain("@", File.ReadAllText(u.Path).Replace("moecluster-expert@", string.Empty, StringComparison.Ordinal), StringComparison.Ordinal);
        string exec = u.One("Service", "ExecStart").Split(' ')[0];
        Assert.Equal("/opt/moecluster/moecluster", exec);
        Assert.True((File.GetUnixFileMode(_install.Under(exec)) & UnixFileMode.OtherExecute) != 0, $"{exec} is not installed executable");
        foreach (int instance in Enumerable.Range(0, Installation.Gpus))
        {
            foreach (string file in u.All("Service", "EnvironmentFile"))
            {
                string path = file.TrimStart('-').Replace("%i", instance.ToString(CultureInfo.InvariantCulture), StringComparison.Ordinal);
                Assert.True(File.Exists(_install.Under(path)), $"{unit} reads {path}, which install.sh did not install");
            }
        }

        Assert.True(Directory.Exists(_install.Under(u.One("Service", "WorkingDirectory"))));
        Assert.True(Directory.Exists(_install.Under(u.One("Service", "ReadOnlyPaths").TrimStart('-'))));
        Assert.Equal("moecluster", u.One("Service", "User"));
    }

    /// <summary>What one unit instance gets: Environment= lines, overridden by its environment files in order (as systemd does).</summary>
    private Dictionary<string, string?> EnvironmentOf(string unit, int instance)
    {
        var u = Installed(unit);
        string i = instance.ToString(CultureInfo.InvariantCulture);
        var env = u.Environment.ToDictionary(kv => kv.Key, kv => (string?)kv.Value.Replace("%i", i, StringComparison.Ordinal), StringComparer.Ordinal);
        foreach (string file in u.All("Service", "EnvironmentFile"))
        {
            var values = new EnvFile(_install.Under(file.TrimStart('-').Replace("%i", i, StringComparison.Ordinal)));
            SiloSettings.AssertKnown(file, values.Commented.Keys);
            foreach (var (key, value) in values.Values)
            {
                env[key] = value;
            }
        }

        return env;
    }

    [Fact]
    public void Every_silo_on_a_host_gets_known_keys_and_ports_of_its_own()
    {
        var frontend = EnvironmentOf(Frontend, 0);
        SiloPorts frontendPorts = SiloSettings.Check(Frontend, SiloRoles.Frontend, frontend);
        Assert.Equal(new SiloPorts(ConfigurationKeys.DefaultFrontendHttpPort, ConfigurationKeys.DefaultSiloPort, ConfigurationKeys.DefaultGatewayPort), frontendPorts);
        Assert.Equal(Installation.AdvertiseIp, frontend[SiloSettings.Env(ConfigurationKeys.AdvertisedIPAddress)]);
        Assert.Equal(Installation.Redis, frontend[SiloSettings.Env(ConfigurationKeys.ConnectionString("redis"))]);

        var used = new HashSet<int>(frontendPorts.Listening);
        var names = new HashSet<string>(StringComparer.Ordinal) { frontend[SiloSettings.Env(ConfigurationKeys.SiloName)]! };
        for (int instance = 0; instance < Installation.Gpus; instance++)
        {
            var expert = EnvironmentOf(Expert, instance);
            string where = $"moecluster-expert@{instance}";
            SiloPorts ports = SiloSettings.Check(where, SiloRoles.Expert, expert);
            Assert.Equal(ConfigurationKeys.DeployedExpertHttpPort + instance, ports.Http);
            Assert.Equal(instance.ToString(CultureInfo.InvariantCulture), expert["CUDA_VISIBLE_DEVICES"]);
            foreach (int port in ports.Listening)
            {
                Assert.True(used.Add(port), $"{where}: port {port} is already used by another silo on this host");
            }

            Assert.True(names.Add(expert[SiloSettings.Env(ConfigurationKeys.SiloName)]!), $"{where}: silo name is not unique");
        }
    }

    [FactWithTool("systemd-analyze", "`systemd-analyze verify` of the installed units")]
    public void Systemd_analyze_verifies_the_installed_units()
    {
        // verify resolves ExecStart on this machine's file system: point the units' absolute paths into the root.
        using var dir = new MoECluster.Testing.TempDirectory("moecluster-verify-");
        foreach (string unit in new[] { Frontend, Expert })
        {
            string text = File.ReadAllText(Installed(unit).Path);
            foreach (string absolute in new[] { "/opt/moecluster", "/etc/moecluster", "/var/lib/moecluster" })
            {
                text = text.Replace(absolute, _install.Under(absolute), StringComparison.Ordinal);
            }

            File.WriteAllText(dir.File(unit), text);
        }

        var result = Tools.Run(Tools.Find("systemd-analyze")!, "verify", dir.File(Frontend), dir.File("moecluster-expert@0.service"));
        string complaints = string.Join('\n', (result.Stdout + result.Stderr).Split('\n').Where(l => l.Contains("moecluster", StringComparison.Ordinal)));
        Assert.True(result.ExitCode == 0 && complaints.Length == 0, $"systemd-analyze verify:\n{result}");
    }
}
