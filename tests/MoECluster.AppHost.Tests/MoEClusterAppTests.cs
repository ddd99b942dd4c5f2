using System.Globalization;
using MoECluster.AppHost.Model;

namespace MoECluster.AppHost.Tests;

/// <summary>The MoECluster application as Program.cs describes it: resources, order, and the environment each child gets.</summary>
public sealed class MoEClusterAppTests
{
    private static (DistributedApplicationModel Model, AppHostOptions Options) Describe(string[] args, Dictionary<string, string?>? configuration = null)
    {
        var builder = AppModelTests.NewBuilder(configuration, args);
        var parsed = AppHostOptions.Parse(builder, TextWriter.Null, TextWriter.Null);
        Assert.NotNull(parsed.Options);
        MoEClusterApp.Describe(builder, parsed.Options);
        return (builder.Build().Model, parsed.Options);
    }

    private static string P(int port) => port.ToString(CultureInfo.InvariantCulture);

    [Fact]
    public void The_app_is_models_then_frontend_then_expert_replicas_then_the_warmup()
    {
        var (model, _) = Describe(["--preset", "tiny", "--replicas", "3"]);
        Assert.Equal(["moecluster", "models", "frontend", "expert", "warmup"], model.StartOrder.Select(r => r.Name));
        Assert.Equal(["models", "frontend", "expert-1", "expert-2", "expert-3", "warmup"], model.Instances.Select(i => i.Name));
        var waits = model.Resources.ToDictionary(r => r.Name, r => DistributedApplicationModel.WaitsOf(r).Select(w => (w.Resource.Name, w.WaitType)).ToList());
        Assert.Equal([("models", WaitType.UntilCompleted)], waits["frontend"]);
        Assert.Equal([("frontend", WaitType.UntilHealthy)], waits["expert"]);
        Assert.Equal([("expert", WaitType.UntilHealthy)], waits["warmup"]);
        Assert.True(model.IsOneShot(model.Resources.Single(r => r.Name == "models")));
        Assert.Contains(model.Resources.Single(r => r.Name == "expert"), model.DependentsOf(model.Resources.Single(r => r.Name == "frontend")));
    }

    [Fact]
    public void Silos_get_the_Orleans_and_MoECluster_configuration_in_Aspire_environment_form()
    {
        using var dir = new MoECluster.Testing.TempDirectory();
        var (model, options) = Describe(["--preset", "tiny", "--experts", "16", "--layers", "2", "--port", "18080", "--silo-port", "21000", "--gateway-port", "21900",
            "--models-dir", dir.Path, "--backend", "managed", "--shards", "3"]);
        var frontend = model.Instance("frontend");
        var experts = new[] { model.Instance("expert-1"), model.Instance("expert-2") };
        Assert.Equal(2, options.Replicas);

        Assert.Equal(["silo", "--role", "frontend"], frontend.Arguments.Skip(1));
        Assert.EndsWith("moecluster.dll", frontend.Arguments[0], StringComparison.Ordinal);
        var f = frontend.Environment;
        Assert.Equal("http://127.0.0.1:18080", f["ASPNETCORE_URLS"]);
        Assert.Equal("21000", f["Orleans__Endpoints__SiloPort"]);
        Assert.Equal("21900", f["Orleans__Endpoints__GatewayPort"]);
        Assert.Equal("frontend", f["Orleans__Name"]);
        Assert.Equal("frontend", f["OTEL_SERVICE_NAME"]);

        for (int i = 0; i < 2; i++)
        {
            var e = experts[i].Environment;
            Assert.Equal(["silo", "--role", "expert"], experts[i].Arguments.Skip(1));
            Assert.Equal(P(21001 + i), e["Orleans__Endpoints__SiloPort"]);
            Assert.Equal("0", e["Orleans__Endpoints__GatewayPort"]);
            Assert.Equal($"expert-{i + 1}", e["Orleans__Name"]);
            Assert.Equal($"expert-{i + 1}", e["OTEL_SERVICE_NAME"]);
            Assert.StartsWith($"service.instance.id=expert-{i + 1}-", e["OTEL_RESOURCE_ATTRIBUTES"], StringComparison.Ordinal);
            Assert.Equal($"http://127.0.0.1:{P(experts[i].Endpoint("http").Port)}", e["ASPNETCORE_URLS"]);
            Assert.NotEqual(18080, experts[i].Endpoint("http").Port);
        }

        Assert.NotEqual(experts[0].Endpoint("http").Port, experts[1].Endpoint("http").Port);
        foreach (var silo in experts.Prepend(frontend))
        {
            var env = silo.Environment;
            Assert.Equal("moecluster", env["Orleans__ClusterId"]);
            Assert.Equal("moecluster", env["Orleans__ServiceId"]);
            Assert.Equal("Development", env["Orleans__Clustering__ProviderType"]);
            Assert.Equal("127.0.0.1:21000", env["Orleans__Clustering__PrimarySiloEndPoint"]);
            Assert.Equal("127.0.0.1", env["Orleans__Endpoints__AdvertisedIPAddress"]);
            Assert.Equal(Path.Combine(dir.Path, "tiny-standard-16x2"), env["MoECluster__Models__standard__Path"]);
            Assert.Equal(Path.Combine(dir.Path, "tiny-16x2"), env["MoECluster__Models__latent__Path"]);
            Assert.Equal("3", env["MoECluster__ShardsPerLayer"]);
            Assert.Equal(Path.Combine(dir.Path, "tls", "tls.crt"), env["MoECluster__Tls__CertificatePath"]);
            Assert.Equal(Path.Combine(dir.Path, "tls", "tls.key"), env["MoECluster__Tls__KeyPath"]);
            Assert.Equal(Path.Combine(dir.Path, "tls", "ca.crt"), env["MoECluster__Tls__CaPath"]);
            Assert.Equal("managed", env["MoECluster__Compute__Backend"]);
            Assert.Equal("4242", env["MOECLUSTER_PARENT_PID"]);
            Assert.Equal("Production", env["DOTNET_ENVIRONMENT"]);
            Assert.False(env.ContainsKey("OTEL_EXPORTER_OTLP_ENDPOINT"));
            Assert.False(env.ContainsKey("ConnectionStrings__redis"));
            Assert.DoesNotContain(env.Keys, k => k.StartsWith("Orleans__Clustering__ServiceKey", StringComparison.Ordinal));
        }

        var models = model.Instance("models");
        Assert.Equal(["prepare-models", "--preset", "tiny", "--layers", "2", "--models-dir", dir.Path, "--experts", "16"], models.Arguments.Skip(1));
        Assert.Equal("4242", models.Environment["MOECLUSTER_PARENT_PID"]);
    }

    [Fact]
    public void With_redis_the_silos_use_Redis_clustering_and_start_after_a_healthy_redis()
    {
        var (model, _) = Describe(["--preset", "tiny", "--redis"]);
        var redis = model.Instance("redis");
        int port = redis.Endpoint("tcp").Port;
        Assert.Equal("redis", model.StartOrder[0].Name);
        Assert.Contains("--port", redis.Arguments);
        Assert.Equal(P(port), redis.Arguments[redis.Arguments.ToList().IndexOf("--port") + 1]);
        Assert.Contains("redis-server", ((IProcessResource)redis.Resource).Command.FileName, StringComparison.Ordinal);
        Assert.Contains("apt-get install -y redis-server", ((IProcessResource)redis.Resource).Command.InstallHint, StringComparison.Ordinal);
        Assert.False(((IProcessResource)redis.Resource).StopsWithParent());
        Assert.True(((IProcessResource)model.Instance("frontend").Resource).StopsWithParent());
        foreach (string silo in new[] { "frontend", "expert-1", "expert-2" })
        {
            var env = model.Instance(silo).Environment;
            Assert.Equal("Redis", env["Orleans__Clustering__ProviderType"]);
            Assert.Equal("redis", env["Orleans__Clustering__ServiceKey"]);
            Assert.Equal($"127.0.0.1:{P(port)}", env["ConnectionStrings__redis"]);
            Assert.False(env.ContainsKey("Orleans__Clustering__PrimarySiloEndPoint"));
        }

        // Stop order is the reverse: redis goes last, after the cluster it serves.
        var cluster = model.Resources.Single(r => r.Name == "moecluster");
        Assert.Contains(model.Resources.Single(r => r.Name == "redis"), model.DependenciesOf(cluster));
        Assert.Contains(cluster, model.DependenciesOf(model.Resources.Single(r => r.Name == "frontend")));
    }

    [Fact]
    public void Options_come_from_configuration_and_the_command_line_wins()
    {
        var configuration = new Dictionary<string, string?> { ["AppHost:Replicas"] = "3", ["AppHost:Preset"] = "tiny", ["AppHost:Port"] = "18181" };
        var (model, options) = Describe(["--expert-silos", "4"], configuration);
        Assert.Equal(4, options.Replicas);
        Assert.Equal("tiny", options.Preset);
        Assert.Equal(18181, options.Port);
        Assert.Equal(4, model.Instances.Count(i => i.Name.StartsWith("expert-", StringComparison.Ordinal)));

        (_, options) = Describe([], new() { ["AppHost:Preset"] = "tiny", ["AppHost:Redis"] = "true" });
        Assert.True(options.Redis);

        var otlp = Describe(["--preset", "tiny", "--otlp", "http://127.0.0.1:4317"], new() { ["OTEL_EXPORTER_OTLP_ENDPOINT"] = "http://elsewhere:4317" }).Model;
        Assert.Equal("http://127.0.0.1:4317", otlp.Instance("expert-2").Environment["OTEL_EXPORTER_OTLP_ENDPOINT"]);
        Assert.Equal("grpc", otlp.Instance("frontend").Environment["OTEL_EXPORTER_OTLP_PROTOCOL"]);
    }

    [Fact]
    public void The_defaults_are_the_super_pair_two_experts_and_port_8080()
    {
        var builder = AppModelTests.NewBuilder();
        var options = AppHostOptions.Parse(builder, TextWriter.Null, TextWriter.Null).Options!;
        Assert.Equal(("super", 2, 8080, 11111, 1), (options.Preset, options.Replicas, options.Port, options.SiloPort, options.Layers));
        Assert.Equal(Path.GetFullPath(Path.Combine("models", "super-standard-64x1")), options.ServedModels()[0].Directory);
    }

    [Theory]
    [InlineData("--replicas 0", "replicas = 0 is out of range")]
    [InlineData("--preset huge", "huge")]
    [InlineData("--backend gpu", "gpu")]
    [InlineData("--port 70000", "port = 70000 is out of range")]
    [InlineData("--unknown", "--unknown")]
    [InlineData("--port 21001 --silo-port 21000", "ports overlap")]
    [InlineData("--otlp not-a-url", "'not-a-url' is not an absolute URL")]
    public void Bad_options_print_one_line_and_exit_2(string args, string expected)
    {
        var builder = AppModelTests.NewBuilder(args: args.Split(' '));
        using var error = new StringWriter();
        var parsed = AppHostOptions.Parse(builder, TextWriter.Null, error);
        Assert.Null(parsed.Options);
        Assert.Equal(2, parsed.ExitCode);
        Assert.Contains(expected, error.ToString(), StringComparison.Ordinal);
        Assert.StartsWith("moecluster-apphost: error: ", error.ToString(), StringComparison.Ordinal);
    }

    [Fact]
    public void Help_prints_the_options_and_exits_0_without_options()
    {
        var builder = AppModelTests.NewBuilder(args: ["--help"]);
        using var output = new StringWriter();
        var parsed = AppHostOptions.Parse(builder, output, TextWriter.Null);
        Assert.Null(parsed.Options);
        Assert.Equal(0, parsed.ExitCode);
        foreach (string option in new[] { "--preset", "--experts", "--layers", "--replicas", "--expert-silos", "--port", "--silo-port", "--models-dir", "--backend", "--redis", "--otlp" })
        {
            Assert.Contains(option, output.ToString(), StringComparison.Ordinal);
        }
    }

    [Fact]
    [System.Runtime.Versioning.SupportedOSPlatform("linux")]
    public void The_launcher_makes_the_clusters_TLS_material_once_beside_the_models_and_reuses_it()
    {
        using var dir = new MoECluster.Testing.TempDirectory();
        var (_, options) = Describe(["--preset", "tiny", "--models-dir", dir.Path]);
        string first = MoEClusterApp.PrepareTls(options);
        Assert.Contains($"made the local cluster's CA and certificate in {Path.Combine(dir.Path, "tls")}", first, StringComparison.Ordinal);
        string certificate = File.ReadAllText(Path.Combine(dir.Path, "tls", "tls.crt"));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(Path.Combine(dir.Path, "tls", "tls.key")));

        string second = MoEClusterApp.PrepareTls(options);
        Assert.Contains("reused", second, StringComparison.Ordinal);
        Assert.Equal(certificate, File.ReadAllText(Path.Combine(dir.Path, "tls", "tls.crt")));

        // Material that no longer loads (a key of another certificate) is made anew, saying why.
        File.WriteAllText(Path.Combine(dir.Path, "tls", "tls.key"), File.ReadAllText(Path.Combine(dir.Path, "tls", "ca.key")));
        string third = MoEClusterApp.PrepareTls(options);
        Assert.Contains("made new certificates", third, StringComparison.Ordinal);
        using var tls = MoECluster.Cluster.Security.ClusterTls.Load(new() { Directory = Path.Combine(dir.Path, "tls") });
    }
}
