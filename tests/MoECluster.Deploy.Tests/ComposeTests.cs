using System.Net;
using MoECluster.Cluster.Hosting;
using MoECluster.Deploy.Tests.Support;
using MoECluster.ServiceDefaults;

namespace MoECluster.Deploy.Tests;

/// <summary>deploy/docker/compose.yaml parsed (merge keys resolved) and cross-checked like the Kubernetes manifests.</summary>
public sealed class ComposeTests
{
    private static readonly string ComposeFile = Path.Combine(Repo.Deploy, "docker", "compose.yaml");

    private static readonly Node Compose = Yaml.Load(ComposeFile);

    private static IEnumerable<(string Name, Node Service)> Services => Compose["services"].Entries.Select(kv => (kv.Key, kv.Value));

    private static IEnumerable<(string Name, Node Service, string Role)> Silos =>
        from s in Services
        where s.Service.Has("command") && s.Service["command"].Items.Any(a => a.Text == "silo")
        select (s.Name, s.Service, SiloSettings.RoleOf(s.Name, s.Service["command"].Items.Select(a => a.Text).ToList()));

    private static Dictionary<string, string?> Environment(Node service) =>
        service["environment"].Entries.ToDictionary(kv => kv.Key, kv => (string?)kv.Value.Text, StringComparer.Ordinal);

    /// <summary>A healthcheck's probe: `moecluster probe URL` → the URL.</summary>
    private static Uri ProbeUrl(string where, Node healthcheck)
    {
        var test = healthcheck["test"].Items.Select(t => t.Text).ToList();
        Assert.True(test.Count == 4 && test[0] == "CMD" && test[1].EndsWith("/moecluster", StringComparison.Ordinal) && test[2] == "probe",
            $"{where}: the healthcheck should be [CMD, .../moecluster, probe, URL], not {string.Join(' ', test)}");
        return new Uri(test[3]);
    }

    [Fact]
    public void It_runs_redis_a_frontend_and_two_experts()
    {
        Assert.Contains(Services, s => s.Name == "redis");
        Assert.Single(Silos, s => s.Role == SiloRoles.Frontend);
        Assert.Equal(2, Silos.Count(s => s.Role == SiloRoles.Expert));
    }

    [Fact]
    public void Every_silo_variable_is_a_configuration_key_and_ports_and_healthchecks_match()
    {
        var addresses = new HashSet<string>(StringComparer.Ordinal);
        var subnet = Compose["networks"].Entries.Single().Value["ipam"]["config"].Items.Single()["subnet"].Text;
        foreach (var (name, service, role) in Silos)
        {
            var env = Environment(service);
            SiloPorts ports = SiloSettings.Check(name, role, env);

            // Orleans advertises an IP address: the fixed address of this service on the compose network.
            string advertised = env[SiloSettings.Env(ConfigurationKeys.AdvertisedIPAddress)]!;
            Assert.Equal(service["networks"].Entries.Single().Value["ipv4_address"].Text, advertised);
            Assert.True(IPNetwork.Parse(subnet).Contains(IPAddress.Parse(advertised)), $"{name}: {advertised} is outside {subnet}");
            Assert.True(addresses.Add(advertised), $"{name}: {advertised} is used twice");

            // The Redis connection string names the redis service.
            string connection = env[SiloSettings.Env(ConfigurationKeys.ConnectionString(env[SiloSettings.Env(ConfigurationKeys.ClusteringServiceKey)]!))]!;
            Assert.Contains(Services, s => s.Name == connection.Split(':')[0]);

            // The healthcheck probes this silo's own HTTP port, at /health (ready) or /alive.
            Uri probe = ProbeUrl(name, service["healthcheck"]);
            Assert.Equal(ports.Http, probe.Port);
            Assert.Equal("127.0.0.1", probe.Host);
            Assert.Contains(probe.AbsolutePath, new[] { ServiceDefaultsExtensions.HealthPath, ServiceDefaultsExtensions.AlivePath });

            // Published ports are ports the silo listens on.
            foreach (var mapping in service.Get("ports")?.Items ?? [])
            {
                int container = int.Parse(mapping.Text.Split(':')[^1], System.Globalization.CultureInfo.InvariantCulture);
                Assert.Contains(container, ports.Listening);
            }

            // The model directory is mounted read-only where the model paths point.
            var volumes = service["volumes"].Items.Select(v => v.Text.Split(':')).ToList();
            foreach (var (key, path) in env.Where(kv => kv.Key.StartsWith("MoECluster__Models__", StringComparison.Ordinal)))
            {
                Assert.Contains(volumes, v => v.Length >= 3 && v[^1] == "ro" && path!.StartsWith(v[^2] + "/", StringComparison.Ordinal));
            }

            // The cluster's certificates and (front-end) the API keys come from read-only mounts; the Orleans ports are not published.
            Assert.Contains(volumes, v => v.Length >= 3 && v[^1] == "ro" && v[^2] == SiloSettings.TlsDirectory(env));
            if (SiloSettings.ApiKeysFile(env) is string keys)
            {
                Assert.Contains(volumes, v => v.Length >= 3 && v[^1] == "ro" && keys.StartsWith(v[^2] + "/", StringComparison.Ordinal));
            }

            foreach (var mapping in service.Get("ports")?.Items ?? [])
            {
                int container = int.Parse(mapping.Text.Split(':')[^1], System.Globalization.CultureInfo.InvariantCulture);
                Assert.True(container != ports.Silo && container != ports.Gateway, $"{name} publishes the Orleans port {container} on the host");
            }

            Assert.True(Seconds(service["stop_grace_period"].Text) >= 60, $"{name}: stop_grace_period < 60 s leaves Orleans no time to shut down");
            Assert.Equal("service_healthy", service["depends_on"]["redis"]["condition"].Text);

            var devices = service.Get("deploy")?["resources"]["reservations"]["devices"].Items.ToList() ?? [];
            if (role == SiloRoles.Expert)
            {
                var gpu = Assert.Single(devices);
                Assert.Equal("nvidia", gpu["driver"].Text);
                Assert.Contains(gpu["capabilities"].Items, c => c.Text == "gpu");
                Assert.Single(gpu["device_ids"].Items);
            }
            else
            {
                Assert.Empty(devices);
            }
        }

        // Each expert has its own GPU.
        var gpus = Silos.Where(s => s.Role == SiloRoles.Expert).Select(s => s.Service["deploy"]["resources"]["reservations"]["devices"].Items.Single()["device_ids"].Items.Single().Text).ToList();
        Assert.Equal(gpus.Count, gpus.Distinct().Count());
    }

    [Fact]
    public void Dependencies_wait_for_services_that_have_healthchecks()
    {
        foreach (var (name, service) in Services)
        {
            foreach (var (target, condition) in service.Get("depends_on")?.Entries ?? [])
            {
                Assert.Equal("service_healthy", condition["condition"].Text);
                Node dependency = Compose["services"][target];
                Assert.True(dependency.Has("healthcheck"), $"{name} waits for {target} to be healthy, but {target} has no healthcheck");
            }
        }

        Assert.Contains(Compose["services"]["redis"]["healthcheck"]["test"].Items, t => t.Text == "ping");
    }

    [Fact]
    public void Silos_are_built_from_the_repository_with_the_Dockerfile()
    {
        foreach (var (name, service, _) in Silos)
        {
            string context = Path.GetFullPath(Path.Combine(Path.GetDirectoryName(ComposeFile)!, service["build"]["context"].Text));
            Assert.Equal(Repo.Root.TrimEnd('/'), context.TrimEnd('/'));
            Assert.True(File.Exists(Path.Combine(context, service["build"]["dockerfile"].Text)), $"{name}: no Dockerfile at {service["build"]["dockerfile"].Text}");
            Assert.True(File.Exists(Path.Combine(context, ".dockerignore")), "the build context has no .dockerignore");
        }
    }

    private static double Seconds(string duration) => duration.EndsWith('m')
        ? 60 * double.Parse(duration[..^1], System.Globalization.CultureInfo.InvariantCulture)
        : double.Parse(duration.TrimEnd('s'), System.Globalization.CultureInfo.InvariantCulture);
}
