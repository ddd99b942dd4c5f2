using System.Globalization;
using Aspire.Hosting;
using Aspire.Hosting.ApplicationModel;
using MoECluster.Cluster.Hosting;

namespace MoECluster.AppHost.Tests;

/// <summary>The MoECluster application as the AppHost describes it to Aspire: resources, waits, silo command lines, ports, environment.</summary>
public sealed class MoEClusterAppTests
{
    private static IDistributedApplicationBuilder NewBuilder(string[] args, Dictionary<string, string?>? configuration = null)
    {
        var builder = DistributedApplication.CreateBuilder(new DistributedApplicationOptions { Args = args, DisableDashboard = true, AllowUnsecuredTransport = true });
        if (configuration is not null)
        {
            builder.Configuration.AddInMemoryCollection(configuration);
        }

        return builder;
    }

    private static (IDistributedApplicationBuilder Builder, AppHostOptions Options) Describe(string[] args, Dictionary<string, string?>? configuration = null)
    {
        var builder = NewBuilder(args, configuration);
        var parsed = AppHostOptions.Parse(builder, args, TextWriter.Null, TextWriter.Null);
        Assert.NotNull(parsed.Options);
        MoEClusterApp.Describe(builder, parsed.Options);
        return (builder, parsed.Options);
    }

    /// <summary>The app's resources, without the "-rebuilder" helpers Aspire adds beside each project.</summary>
    private static List<string> Names(IDistributedApplicationBuilder builder) =>
        [.. builder.Resources.Select(r => r.Name).Where(n => !n.EndsWith("-rebuilder", StringComparison.Ordinal))];

    private static IResource Resource(IDistributedApplicationBuilder builder, string name) => builder.Resources.Single(r => r.Name == name);

    private static List<(string Name, WaitType Type)> Waits(IDistributedApplicationBuilder builder, string name) =>
        [.. Resource(builder, name).Annotations.OfType<WaitAnnotation>().Select(w => (w.Resource.Name, w.WaitType))];

    private static async Task<List<string>> ArgumentsOf(IResource resource)
    {
        var context = new CommandLineArgsCallbackContext([], resource);
        foreach (var callback in resource.Annotations.OfType<CommandLineArgsCallbackAnnotation>())
        {
            await callback.Callback(context);
        }

        return [.. context.Args.Select(a => a.ToString()!)];
    }

    private static async Task<Dictionary<string, string>> EnvironmentOf(IResource resource)
    {
        var context = new EnvironmentCallbackContext(new DistributedApplicationExecutionContext(DistributedApplicationOperation.Run), resource);
        foreach (var callback in resource.Annotations.OfType<EnvironmentCallbackAnnotation>())
        {
            await callback.Callback(context);
        }

        return context.EnvironmentVariables.ToDictionary(kv => kv.Key, kv => kv.Value as string ?? $"<{kv.Value.GetType().Name}>");
    }

    private static string P(int port) => port.ToString(CultureInfo.InvariantCulture);

    [Fact]
    public void The_app_is_models_then_frontend_then_expert_silos_then_the_warmup_and_a_load_run_started_by_hand()
    {
        var (builder, _) = Describe(["--preset", "tiny", "--replicas", "3"]);
        Assert.Equal(["models", "frontend", "expert-1", "expert-2", "expert-3", "warmup", "load-30s"], Names(builder));
        Assert.Equal([("models", WaitType.WaitForCompletion)], Waits(builder, "frontend"));
        foreach (string expert in new[] { "expert-1", "expert-2", "expert-3" })
        {
            Assert.Equal([("models", WaitType.WaitForCompletion), ("frontend", WaitType.WaitUntilHealthy)], Waits(builder, expert));
        }

        Assert.Equal(["expert-1", "expert-2", "expert-3"], Waits(builder, "warmup").Select(w => w.Name));
        Assert.Equal([("warmup", WaitType.WaitForCompletion)], Waits(builder, "load-30s"));
        Assert.Contains(Resource(builder, "load-30s").Annotations, a => a is ExplicitStartupAnnotation);
        Assert.Contains(Resource(builder, "frontend").Annotations, a => a is ResourceCommandAnnotation { Name: "run-load", DisplayName: "Run a 30 s load" });
        Assert.Contains(Resource(builder, "frontend").Annotations, a => a is HealthCheckAnnotation);
        Assert.Contains(Resource(builder, "expert-2").Annotations, a => a is HealthCheckAnnotation);
    }

    [Fact]
    public async Task Silos_run_the_one_silo_command_line_and_get_fixed_Orleans_ports_and_localhost_clustering_through_Aspire_Orleans()
    {
        using var dir = new MoECluster.Testing.TempDirectory();
        var (builder, options) = Describe(["--preset", "tiny", "--experts", "16", "--layers", "2", "--port", "18080", "--silo-port", "21000", "--gateway-port", "21900",
            "--models-dir", dir.Path, "--backend", "managed", "--shards", "3"]);
        var models = options.ServedModels().Select(m => (m.Id, Path.GetFullPath(m.Directory))).ToList();

        var frontend = Resource(builder, "frontend");
        var expected = new SiloLaunch(SiloRoles.Frontend, "frontend", models, 3, "managed", ExpectedExpertSilos: 2, Urls: "http://127.0.0.1:18080").Arguments();
        Assert.Equal(expected, await ArgumentsOf(frontend));
        var endpoints = frontend.Annotations.OfType<EndpointAnnotation>().ToDictionary(e => e.Name);
        Assert.Equal((21000, 21000, false), (endpoints["orleans-silo"].Port, endpoints["orleans-silo"].TargetPort, endpoints["orleans-silo"].IsProxied));
        Assert.Equal((21900, false), (endpoints["orleans-gateway"].Port, endpoints["orleans-gateway"].IsProxied));
        Assert.Equal((18080, false), (endpoints["http"].Port, endpoints["http"].IsProxied));

        var env = await EnvironmentOf(frontend);
        Assert.Equal("moecluster", env["Orleans__ClusterId"]);
        Assert.Equal("moecluster", env["Orleans__ServiceId"]);
        Assert.Equal("Development", env["Orleans__Clustering__ProviderType"]);
        Assert.Equal("frontend", env["Orleans__Name"]);
        Assert.Equal(Path.Combine(dir.Path, "tls", "ca.crt"), env.Single(kv => kv.Value.EndsWith("ca.crt", StringComparison.Ordinal)).Value);
        Assert.False(env.ContainsKey("Orleans__Clustering__PrimarySiloEndPoint"));

        for (int i = 1; i <= 2; i++)
        {
            var expert = Resource(builder, $"expert-{P(i)}");
            var args = await ArgumentsOf(expert);
            Assert.Equal(["silo", "--role", "expert", "--name", $"expert-{P(i)}"], args.Take(5));
            Assert.Contains("--urls", args);
            var e = expert.Annotations.OfType<EndpointAnnotation>().ToDictionary(a => a.Name);
            Assert.Equal((21000 + i, false), (e["orleans-silo"].Port, e["orleans-silo"].IsProxied));
            var expertEnv = await EnvironmentOf(expert);
            Assert.True(expertEnv.ContainsKey("Orleans__Clustering__PrimarySiloEndPoint"), string.Join(", ", expertEnv.Select(kv => kv.Key + "=" + kv.Value)));
            Assert.Equal("127.0.0.1:21000", expertEnv["Orleans__Clustering__PrimarySiloEndPoint"]);
            Assert.Equal($"expert-{P(i)}", expertEnv["Orleans__Name"]);
        }
    }

    [Fact]
    public async Task With_redis_the_silos_use_Redis_clustering_with_the_redis_connection_string_and_wait_for_it()
    {
        var (builder, _) = Describe(["--preset", "tiny", "--redis"]);
        Assert.Equal("redis", Names(builder)[0]);
        foreach (string silo in new[] { "frontend", "expert-1", "expert-2" })
        {
            Assert.Contains(("redis", WaitType.WaitUntilHealthy), Waits(builder, silo));
            var env = await EnvironmentOf(Resource(builder, silo));
            Assert.Equal("Redis", env["Orleans__Clustering__ProviderType"]);
            Assert.Equal("redis", env["Orleans__Clustering__ServiceKey"]);
            Assert.False(env.ContainsKey("Orleans__Clustering__PrimarySiloEndPoint"));
        }
    }

    [Fact]
    public void Options_come_from_configuration_and_the_command_line_wins()
    {
        var configuration = new Dictionary<string, string?> { ["AppHost:Replicas"] = "3", ["AppHost:Preset"] = "tiny", ["AppHost:Port"] = "18181" };
        var (builder, options) = Describe(["--expert-silos", "4"], configuration);
        Assert.Equal(4, options.Replicas);
        Assert.Equal("tiny", options.Preset);
        Assert.Equal(18181, options.Port);
        Assert.Equal(4, Names(builder).Count(r => r.StartsWith("expert-", StringComparison.Ordinal)));
    }

    [Fact]
    public void The_defaults_are_the_super_pair_two_experts_port_8080_and_the_dashboard_on_18888()
    {
        var options = AppHostOptions.Parse(NewBuilder([]), [], TextWriter.Null, TextWriter.Null).Options!;
        Assert.Equal(("super", 2, 8080, 11111, 1, 18888), (options.Preset, options.Replicas, options.Port, options.SiloPort, options.Layers, options.DashboardPort));
        Assert.Equal(Path.GetFullPath(Path.Combine("models", "super-standard-64x1")), options.ServedModels()[0].Directory);
    }

    [Theory]
    [InlineData("--replicas 0", "replicas = 0 is out of range")]
    [InlineData("--preset huge", "huge")]
    [InlineData("--backend gpu", "gpu")]
    [InlineData("--port 70000", "port = 70000 is out of range")]
    [InlineData("--unknown", "--unknown")]
    [InlineData("--port 21001 --silo-port 21000", "ports overlap")]
    [InlineData("--dashboard-port 8079", "ports overlap")]
    public void Bad_options_print_one_line_and_exit_2(string args, string expected)
    {
        string[] split = args.Split(' ');
        using var error = new StringWriter();
        var parsed = AppHostOptions.Parse(NewBuilder(split), split, TextWriter.Null, error);
        Assert.Null(parsed.Options);
        Assert.Equal(2, parsed.ExitCode);
        Assert.Contains(expected, error.ToString(), StringComparison.Ordinal);
        Assert.StartsWith("moecluster-apphost: error: ", error.ToString(), StringComparison.Ordinal);
    }

    [Fact]
    [System.Runtime.Versioning.SupportedOSPlatform("linux")]
    public void The_AppHost_makes_the_clusters_TLS_material_once_beside_the_models_and_reuses_it()
    {
        using var dir = new MoECluster.Testing.TempDirectory();
        var (_, options) = Describe(["--preset", "tiny", "--models-dir", dir.Path]);
        string first = MoEClusterApp.PrepareTls(options);
        Assert.Contains($"made the local cluster's CA and certificate in {Path.Combine(dir.Path, "tls")}", first, StringComparison.Ordinal);
        string certificate = File.ReadAllText(Path.Combine(dir.Path, "tls", "tls.crt"));
        string second = MoEClusterApp.PrepareTls(options);
        Assert.Contains("reused", second, StringComparison.Ordinal);
        Assert.Equal(certificate, File.ReadAllText(Path.Combine(dir.Path, "tls", "tls.crt")));
    }
}
