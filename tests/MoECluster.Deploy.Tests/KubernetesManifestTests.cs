using System.Globalization;
using System.Text;
using MoECluster.Cluster.Hosting;
using MoECluster.Deploy.Tests.Support;
using MoECluster.ServiceDefaults;

namespace MoECluster.Deploy.Tests;

/// <summary>
/// deploy/k8s parsed and cross-checked: every variable a silo gets is a configuration key of the code, container
/// ports, probe ports and Service target ports are the ports its settings name, probes hit /health and /alive,
/// experts ask for a GPU, and the advertised address is the pod's IP.
/// </summary>
public sealed class KubernetesManifestTests
{
    private static readonly string Dir = Path.Combine(Repo.Deploy, "k8s");

    private static readonly List<Node> Objects = Directory.EnumerateFiles(Dir, "*.yaml")
        .Where(f => Path.GetFileName(f) != "kustomization.yaml")
        .Order(StringComparer.Ordinal)
        .SelectMany(Yaml.LoadAll)
        .ToList();

    private static IEnumerable<Node> OfKind(string kind) => Objects.Where(o => o["kind"].Text == kind);

    private static Node Named(string kind, string name) =>
        OfKind(kind).SingleOrDefault(o => o["metadata"]["name"].Text == name) ?? throw new KeyNotFoundException($"no {kind} {name} in deploy/k8s");

    private static IEnumerable<Node> Workloads => OfKind("Deployment").Concat(OfKind("StatefulSet"));

    /// <summary>The silo containers: those that run the MoECluster image.</summary>
    private static IEnumerable<(Node Workload, Node Pod, Node Container)> Silos =>
        from w in Workloads
        let pod = w["spec"]["template"]["spec"]
        from c in pod["containers"].Items
        where c["image"].Text == "moecluster"
        select (w, pod, c);

    private static Dictionary<string, string?> Environment(Node container, out Dictionary<string, string> fieldRefs)
    {
        var env = new Dictionary<string, string?>(StringComparer.Ordinal);
        fieldRefs = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var source in container.Get("envFrom")?.Items ?? [])
        {
            var data = source.Has("configMapRef")
                ? Named("ConfigMap", source["configMapRef"]["name"].Text)["data"].Entries.Select(kv => (kv.Key, kv.Value.Text))
                : SecretData(Named("Secret", source["secretRef"]["name"].Text));
            foreach (var (key, value) in data)
            {
                env[key] = value;
            }
        }

        foreach (var entry in container.Get("env")?.Items ?? [])
        {
            string name = entry["name"].Text;
            if (entry.Has("valueFrom"))
            {
                fieldRefs[name] = entry["valueFrom"]["fieldRef"]["fieldPath"].Text;
                env[name] = $"<{fieldRefs[name]}>";
            }
            else
            {
                env[name] = entry["value"].Text;
            }
        }

        return env;
    }

    private static IEnumerable<(string Key, string Value)> SecretData(Node secret) =>
        (secret.Get("stringData")?.Entries.Select(kv => (kv.Key, kv.Value.Text)) ?? [])
            .Concat(secret.Get("data")?.Entries.Select(kv => (kv.Key, Encoding.UTF8.GetString(Convert.FromBase64String(kv.Value.Text)))) ?? []);

    private static Dictionary<string, int> ContainerPorts(Node container) =>
        container["ports"].Items.ToDictionary(p => p.Get("name")?.Text ?? p["containerPort"].Text, p => p["containerPort"].Int);

    private static int ResolvePort(Node port, Dictionary<string, int> containerPorts, string where) =>
        int.TryParse(port.Text, NumberStyles.None, CultureInfo.InvariantCulture, out int number)
            ? number
            : containerPorts.TryGetValue(port.Text, out int named) ? named : throw new InvalidDataException($"{where}: port {port.Text} names no container port");

    private static string RoleOf(Node container) =>
        SiloSettings.RoleOf(container.Where, container["args"].Items.Select(a => a.Text).ToList());

    [Fact]
    public void There_are_a_frontend_and_an_expert_workload()
    {
        var roles = Silos.Select(s => RoleOf(s.Container)).ToList();
        Assert.Contains(SiloRoles.Frontend, roles);
        Assert.Contains(SiloRoles.Expert, roles);
        Assert.Equal("StatefulSet", Silos.Single(s => RoleOf(s.Container) == SiloRoles.Expert).Workload["kind"].Text);
    }

    [Fact]
    public void Every_silo_variable_is_a_configuration_key_and_ports_match_the_settings()
    {
        foreach (var (workload, pod, container) in Silos)
        {
            string where = $"{workload["metadata"]["name"].Text}/{container["name"].Text}";
            string role = RoleOf(container);
            var env = Environment(container, out var fieldRefs);
            SiloPorts ports = SiloSettings.Check(where, role, env);

            // The advertised address is the pod's IP (downward API); the silo listens on it too.
            Assert.True(fieldRefs.TryGetValue(SiloSettings.Env(ConfigurationKeys.AdvertisedIPAddress), out string? ip) && ip == "status.podIP",
                $"{where}: {SiloSettings.Env(ConfigurationKeys.AdvertisedIPAddress)} must come from fieldRef status.podIP");
            Assert.Equal("metadata.name", fieldRefs.GetValueOrDefault(SiloSettings.Env(ConfigurationKeys.SiloName)));

            var containerPorts = ContainerPorts(container);
            Assert.Equal(ports.Listening.Order(), containerPorts.Values.Order());
            Assert.Equal(ports.Http, containerPorts["http"]);
            Assert.Equal(ports.Silo, containerPorts["silo"]);

            // Readiness on /health, liveness (and start-up) on /alive, all on the HTTP port of Urls.
            Node readiness = container["readinessProbe"]["httpGet"];
            Node liveness = container["livenessProbe"]["httpGet"];
            Assert.Equal(ServiceDefaultsExtensions.HealthPath, readiness["path"].Text);
            Assert.Equal(ServiceDefaultsExtensions.AlivePath, liveness["path"].Text);
            Assert.Equal(ports.Http, ResolvePort(readiness["port"], containerPorts, where));
            Assert.Equal(ports.Http, ResolvePort(liveness["port"], containerPorts, where));
            if (container.Get("startupProbe") is Node startup)
            {
                Assert.Equal(ServiceDefaultsExtensions.AlivePath, startup["httpGet"]["path"].Text);
                Assert.Equal(ports.Http, ResolvePort(startup["httpGet"]["port"], containerPorts, where));
            }

            // Time for Orleans' graceful shutdown (the host allows it 30 s).
            Assert.True(pod["terminationGracePeriodSeconds"].Int >= 60, $"{where}: terminationGracePeriodSeconds < 60");
            Assert.Equal("true", pod["securityContext"]["runAsNonRoot"].Text);

            Node resources = container["resources"];
            Assert.True(resources["requests"].Has("cpu") && resources["requests"].Has("memory"), $"{where}: no cpu/memory requests");
            if (role == SiloRoles.Expert)
            {
                Assert.True(resources["limits"]["nvidia.com/gpu"].Int >= 1, $"{where}: an expert must request nvidia.com/gpu");
                Assert.Equal("true", pod["nodeSelector"]["nvidia.com/gpu.present"].Text);
                Assert.Contains(pod["tolerations"].Items, t => t["key"].Text == "nvidia.com/gpu");
            }
            else
            {
                Assert.False(resources.Get("limits")?.Has("nvidia.com/gpu") ?? false, $"{where}: a front-end needs no GPU");
            }

            // Every model path lies in a read-only mount of a read-only volume.
            var mounts = container["volumeMounts"].Items.ToList();
            foreach (var (key, value) in env.Where(kv => kv.Key.StartsWith("MoECluster__Models__", StringComparison.Ordinal)))
            {
                Node mount = mounts.SingleOrDefault(m => value!.StartsWith(m["mountPath"].Text + "/", StringComparison.Ordinal))
                    ?? throw new InvalidDataException($"{where}: {key}={value} is in no volume mount");
                Assert.Equal("true", mount["readOnly"].Text);
                Node volume = pod["volumes"].Items.Single(v => v["name"].Text == mount["name"].Text);
                Assert.True(volume.Has("hostPath") || volume["persistentVolumeClaim"]["readOnly"].Text == "true", $"{where}: the model volume is not read-only");
                if (volume.Has("persistentVolumeClaim"))
                {
                    Named("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"].Text);
                }
            }
        }
    }

    [Fact]
    public void Service_target_ports_are_container_ports_of_the_pods_they_select()
    {
        foreach (var service in OfKind("Service"))
        {
            string where = $"Service {service["metadata"]["name"].Text}";
            var selector = service["spec"]["selector"].Entries.ToDictionary(kv => kv.Key, kv => kv.Value.Text);
            var pods = Workloads.Where(w => selector.All(s => w["spec"]["template"]["metadata"]["labels"].Get(s.Key)?.Text == s.Value)).ToList();
            var pod = Assert.Single(pods);
            var containerPorts = pod["spec"]["template"]["spec"]["containers"].Items.SelectMany(c => ContainerPorts(c)).ToDictionary(kv => kv.Key, kv => kv.Value);
            foreach (var port in service["spec"]["ports"].Items)
            {
                int target = ResolvePort(port["targetPort"], containerPorts, where);
                Assert.True(containerPorts.ContainsValue(target), $"{where}: targetPort {port["targetPort"].Text} is no container port of {pod["metadata"]["name"].Text}");
                Assert.Equal(port["port"].Int, target);
            }
        }

        // The front-end Service exposes the gateway's HTTP port only; no Service carries an Orleans port.
        var frontend = Named("Service", "moecluster-frontend")["spec"]["ports"].Items.Select(p => p["port"].Int);
        Assert.Equal([ConfigurationKeys.DefaultFrontendHttpPort], frontend);
        foreach (var service in OfKind("Service"))
        {
            foreach (var port in service["spec"]["ports"].Items)
            {
                Assert.True(port["port"].Int is not (ConfigurationKeys.DefaultSiloPort or ConfigurationKeys.DefaultGatewayPort),
                    $"Service {service["metadata"]["name"].Text} exposes the Orleans port {port["port"].Int}");
            }
        }

        Assert.Equal("moecluster-expert", Named("StatefulSet", "moecluster-expert")["spec"]["serviceName"].Text);
        Assert.Equal("None", Named("Service", "moecluster-expert")["spec"]["clusterIP"].Text);
    }

    [Fact]
    public void Every_silo_mounts_the_clusters_certificates_and_its_API_keys_from_Secrets()
    {
        foreach (var (workload, pod, container) in Silos)
        {
            string where = $"{workload["metadata"]["name"].Text}/{container["name"].Text}";
            var env = Environment(container, out _);
            var mounts = container["volumeMounts"].Items.ToList();
            Node SecretMountedAt(string path)
            {
                Node mount = mounts.SingleOrDefault(m => path == m["mountPath"].Text || path.StartsWith(m["mountPath"].Text + "/", StringComparison.Ordinal))
                    ?? throw new InvalidDataException($"{where}: {path} is in no volume mount");
                Assert.Equal("true", mount["readOnly"].Text);
                Node volume = pod["volumes"].Items.Single(v => v["name"].Text == mount["name"].Text);
                Assert.True(volume.Has("secret"), $"{where}: {path} must come from a Secret");

                // Readable by the silo's group (fsGroup), by no one else.
                Assert.Equal(pod["securityContext"]["runAsGroup"].Text, pod["securityContext"]["fsGroup"].Text);
                Assert.Equal("0440", volume["secret"]["defaultMode"].Text);
                return volume["secret"];
            }

            Assert.Equal("moecluster-tls", SecretMountedAt(SiloSettings.TlsDirectory(env)!)["secretName"].Text);

            // The front-end's gateway and every silo's /metrics (the pods are annotated for scraping) need a key.
            string keys = SiloSettings.ApiKeysFile(env) ?? throw new InvalidDataException($"{where}: no {SiloSettings.Env("MoECluster:Gateway:ApiKeysFile")}");
            Assert.Equal("moecluster-api-keys", SecretMountedAt(keys)["secretName"].Text);
            Assert.Equal("gateway-keys", Path.GetFileName(keys));
        }

        // The Secrets themselves are made by the operator (deploy/README.md), never committed.
        Assert.DoesNotContain(OfKind("Secret"), s => s["metadata"]["name"].Text is "moecluster-tls" or "moecluster-api-keys");
        string readme = File.ReadAllText(Path.Combine(Repo.Deploy, "README.md"));
        Assert.Contains("create secret generic moecluster-tls", readme, StringComparison.Ordinal);
        Assert.Contains("create secret generic moecluster-api-keys", readme, StringComparison.Ordinal);
    }

    [Fact]
    public void Every_silo_pod_is_annotated_for_Prometheus_to_scrape_metrics_on_its_HTTP_port()
    {
        Assert.NotEmpty(Silos);
        foreach (var (workload, _, container) in Silos)
        {
            string where = $"{workload["metadata"]["name"].Text}/{container["name"].Text}";
            SiloPorts ports = SiloSettings.Check(where, RoleOf(container), Environment(container, out _));
            Node annotations = workload["spec"]["template"]["metadata"].Get("annotations") ?? throw new InvalidDataException($"{where}: the pod template has no annotations");
            Assert.Equal("true", annotations["prometheus.io/scrape"].Text);
            Assert.Equal(ports.Http, annotations["prometheus.io/port"].Int);
            Assert.Equal(ServiceDefaultsExtensions.MetricsPath, annotations["prometheus.io/path"].Text);
        }
    }

    [Fact]
    public void A_network_policy_keeps_the_Orleans_ports_to_the_clusters_own_pods()
    {
        Node policy = Named("NetworkPolicy", "moecluster-silos");
        var selector = policy["spec"]["podSelector"]["matchLabels"].Entries.ToDictionary(kv => kv.Key, kv => kv.Value.Text);
        foreach (var (workload, _, _) in Silos)
        {
            var labels = workload["spec"]["template"]["metadata"]["labels"];
            Assert.True(selector.All(s => labels.Get(s.Key)?.Text == s.Value), $"the policy does not select {workload["metadata"]["name"].Text}");
        }

        Assert.Contains(policy["spec"]["policyTypes"].Items, t => t.Text == "Ingress");
        foreach (var rule in policy["spec"]["ingress"].Items)
        {
            var ports = rule["ports"].Items.Select(p => p["port"].Int).ToList();
            if (!ports.Any(p => p is ConfigurationKeys.DefaultSiloPort or ConfigurationKeys.DefaultGatewayPort))
            {
                continue;
            }

            // A rule that opens an Orleans port names its sources, and they are pods (no ipBlock, no namespace-wide opening).
            var sources = rule.Get("from")?.Items.ToList() ?? [];
            Assert.True(sources.Count > 0, $"an ingress rule opens {string.Join(", ", ports)} to everyone");
            foreach (var source in sources)
            {
                Assert.True(source.Has("podSelector") && !source.Has("ipBlock") && !source.Has("namespaceSelector"), "Orleans ports must be open to selected pods only");
                var from = source["podSelector"]["matchLabels"].Entries.ToDictionary(kv => kv.Key, kv => kv.Value.Text);
                bool silos = from.Count > 0 && from.All(s => selector.TryGetValue(s.Key, out string? v) && v == s.Value);
                bool clients = from.Count == 1 && from.GetValueOrDefault("moecluster.io/orleans-client") == "true";
                Assert.True(silos || (clients && ports.All(p => p == ConfigurationKeys.DefaultGatewayPort)),
                    $"an ingress rule opens {string.Join(", ", ports)} to pods other than the silos ({string.Join(", ", from)})");
            }
        }

        // The silo port is opened to the silos at all (or the cluster could not form).
        Assert.Contains(policy["spec"]["ingress"].Items, r => r.Has("from") && r["ports"].Items.Any(p => p["port"].Int == ConfigurationKeys.DefaultSiloPort));
    }

    [Fact]
    public void The_expected_expert_count_is_the_expert_replicas_and_every_silo_pod_is_restarted_when_it_exits()
    {
        string key = SiloSettings.Env($"{MoeClusterOptions.Section}:{nameof(MoeClusterOptions.ExpectedExpertSilos)}");
        int expected = int.Parse(Named("ConfigMap", "moecluster-common")["data"][key].Text, CultureInfo.InvariantCulture);
        Assert.Equal(Named("StatefulSet", "moecluster-expert")["spec"]["replicas"].Int, expected);

        // A silo that exits (killed, crashed, or declared dead after a hang) must come back: Always, which is also the default.
        foreach (var (workload, pod, _) in Silos)
        {
            Assert.Equal("Always", pod.Get("restartPolicy")?.Text ?? "Always");
        }
    }

    [Fact]
    public void The_redis_secret_is_a_placeholder_that_points_at_the_redis_service()
    {
        string serviceKey = Named("ConfigMap", "moecluster-common")["data"][SiloSettings.Env(ConfigurationKeys.ClusteringServiceKey)].Text;
        var secret = SecretData(Named("Secret", "moecluster-redis")).ToDictionary(kv => kv.Key, kv => kv.Value);
        string connection = secret[SiloSettings.Env(ConfigurationKeys.ConnectionString(serviceKey))];
        Assert.DoesNotContain("password", connection, StringComparison.OrdinalIgnoreCase);
        string[] hostPort = connection.Split(',')[0].Split(':');
        Node redis = Named("Service", hostPort[0]);
        Assert.Contains(redis["spec"]["ports"].Items, p => p["port"].Text == hostPort[1]);
        Assert.Contains("TEMPLATE", File.ReadAllText(Path.Combine(Dir, "secret-redis.yaml")), StringComparison.Ordinal);
    }

    [Fact]
    public void Kustomization_lists_every_manifest_and_sets_the_namespace_and_image()
    {
        Node kustomization = Yaml.Load(Path.Combine(Dir, "kustomization.yaml"));
        var resources = kustomization["resources"].Items.Select(r => r.Text).Order(StringComparer.Ordinal);
        var files = Directory.EnumerateFiles(Dir, "*.yaml").Select(Path.GetFileName).Where(f => f != "kustomization.yaml").Order(StringComparer.Ordinal);
        Assert.Equal(files, resources);
        Assert.Equal(Assert.Single(OfKind("Namespace"))["metadata"]["name"].Text, kustomization["namespace"].Text);
        Assert.Contains(kustomization["images"].Items, i => i["name"].Text == "moecluster");
    }

    [FactWithTool("kubectl", "that kustomize renders deploy/k8s")]
    public void Kustomize_renders_the_manifests()
    {
        var result = Tools.Run(Tools.Find("kubectl")!, "kustomize", Dir);
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains("namespace: moecluster", result.Stdout, StringComparison.Ordinal);
        Assert.Contains("image: moecluster:latest", result.Stdout, StringComparison.Ordinal);
        Assert.Equal(Objects.Count, result.Stdout.Split("\n---\n").Length);
    }
}
