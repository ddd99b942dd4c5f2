using System.Globalization;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using MoECluster.AppHost.Resources;
using MoECluster.Cluster.Hosting;
using MoECluster.Cluster.Security;

namespace MoECluster.AppHost;

/// <summary>
/// The MoECluster application as .NET Aspire resources: the one-shot model preparation, the front-end silo (routers and
/// the HTTP gateway) and expert silos expert-1..n configured through Aspire.Hosting.Orleans, optionally a redis-server
/// for Orleans' Redis clustering, the warm-up, and a load run started from the dashboard. Every silo is a
/// <c>moecluster silo</c> process whose command line comes from <see cref="SiloLaunch"/>, the description
/// <c>moecluster run</c> uses too.
/// </summary>
public static class MoEClusterApp
{
    /// <summary>The Orleans service, its cluster and service id.</summary>
    public const string Orleans = "moecluster";

    public const string Models = "models";

    public const string Frontend = "frontend";

    public const string Warmup = "warmup";

    public const string Load = "load-30s";

    public const string Redis = "redis";

    /// <summary>Expert silo <paramref name="i"/> (1-based): the resource's name and the silo's (pins refer to it).</summary>
    public static string Expert(int i) => $"expert-{i.ToString(CultureInfo.InvariantCulture)}";

    public static void Describe(IDistributedApplicationBuilder builder, AppHostOptions options)
    {
        var served = options.ServedModels();
        var models = served.Select(m => (m.Id, Path.GetFullPath(m.Directory))).ToList();
        string gateway = $"http://127.0.0.1:{P(options.Port)}";
        var tls = SiloLaunch.Environment(LocalClusterTls.DirectoryFor(options.ModelsDir));

        var orleans = builder.AddOrleans(Orleans).WithClusterId(Orleans).WithServiceId(Orleans);
        IResourceBuilder<IResource>? redis = null;
        if (options.Redis)
        {
            var server = RedisClustering.Add(builder, Redis);
            orleans.WithClustering(server.Clustering);
            redis = server.Resource;
        }
        else
        {
            orleans.WithDevelopmentClustering();
        }

        var prepare = builder.AddProject<Projects.MoECluster_Cli>(Models, launchProfileName: null)
            .WithArgs([.. PrepareModelsArguments(options)]);

        IResourceBuilder<ProjectResource> Silo(string name, SiloLaunch launch, int siloPort, int? gatewayPort, int httpPort)
        {
            var silo = builder.AddProject<Projects.MoECluster_Cli>(name, launchProfileName: null)
                .WithArgs([.. launch.Arguments()])
                .WithReference(orleans)
                .WithEndpoint("orleans-silo", e => Fixed(e, siloPort))
                .WithEndpoint("orleans-gateway", e => Fixed(e, gatewayPort ?? LoopbackPorts.Free()))
                .WithHttpEndpoint(port: httpPort, targetPort: httpPort, name: "http", isProxied: false)
                .WithEnvironment("Orleans__Name", name)
                .WithEnvironment("Orleans__Endpoints__AdvertisedIPAddress", "127.0.0.1")
                .WaitForCompletion(prepare);
            foreach (var (variable, value) in tls)
            {
                silo.WithEnvironment(variable, value);
            }

            if (redis is not null)
            {
                silo.WaitFor(redis);
            }

            return silo;
        }

        var frontend = Silo(Frontend, new SiloLaunch(SiloRoles.Frontend, Frontend, models, options.Shards, options.Backend, options.Wire, ExpectedExpertSilos: options.Replicas, Urls: gateway, WireDispatch: options.WireDispatch, WireCombine: options.WireCombine),
                options.SiloPort, options.GatewayPort, options.Port)
            .WithHttpHealthCheck("/alive")
            .WithUrls(context =>
            {
                context.Urls.Clear();
                context.Urls.Add(new ResourceUrlAnnotation { Url = $"{gateway}/", DisplayText = "live routing page" });
                context.Urls.Add(new ResourceUrlAnnotation { Url = $"{gateway}/dashboard", DisplayText = "Orleans dashboard" });
                context.Urls.Add(new ResourceUrlAnnotation { Url = $"{gateway}/stats", DisplayText = "/stats" });
                context.Urls.Add(new ResourceUrlAnnotation { Url = $"{gateway}/health", DisplayText = "/health" });
            })
            .WithLoadRunCommand(Load);

        var experts = new List<IResourceBuilder<ProjectResource>>();
        for (int i = 1; i <= options.Replicas; i++)
        {
            int http = LoopbackPorts.Free();
            var expert = Silo(Expert(i), new SiloLaunch(SiloRoles.Expert, Expert(i), models, options.Shards, options.Backend, options.Wire, Urls: $"http://127.0.0.1:{P(http)}", WireDispatch: options.WireDispatch, WireCombine: options.WireCombine),
                    options.SiloPort + i, gatewayPort: null, http)
                .WithHttpHealthCheck("/health")   // 200 once the silo is active in the cluster
                .WaitFor(frontend);
            if (redis is null)
            {
                // Localhost clustering: the membership lives in the front-end, the primary silo.
                string primary = $"127.0.0.1:{P(options.SiloPort)}";
                expert.WithEnvironment("Orleans__Clustering__PrimarySiloEndPoint", primary);
            }

            experts.Add(expert);
        }

        // Supervision, as `moecluster run` does it: restarts after exits, kills after a hang, experts with the front-end.
        var alive = new Dictionary<string, Uri>(StringComparer.Ordinal) { [Frontend] = new Uri($"{gateway}/alive") };
        foreach (var expert in experts)
        {
            var http = expert.Resource.Annotations.OfType<EndpointAnnotation>().Single(e => e.Name == "http");
            alive[expert.Resource.Name] = new Uri($"http://127.0.0.1:{P(http.Port!.Value)}/alive");
        }

        builder.Services.AddSingleton(new SiloSupervision(alive, Frontend, RestartExpertsWithFrontend: redis is null));
        builder.Services.AddSingleton<SiloSupervisor>();
        builder.Eventing.Subscribe<BeforeStartEvent>((e, cancellationToken) =>
        {
            var supervisor = e.Services.GetRequiredService<SiloSupervisor>();
            _ = supervisor.Start();
            foreach (var silo in e.Model.Resources.Where(r => alive.ContainsKey(r.Name)))
            {
                UserCommands.Wrap(silo, KnownResourceCommands.StopCommand, supervisor.StoppedByUser);
                UserCommands.Wrap(silo, KnownResourceCommands.StartCommand, supervisor.StartedByUser);
                UserCommands.Wrap(silo, KnownResourceCommands.RestartCommand, supervisor.StartedByUser);
            }

            return Task.CompletedTask;
        });

        var warmup = builder.AddProject<Projects.MoECluster_Cli>(Warmup, launchProfileName: null)
            .WithArgs("warmup", "--url", gateway, "--expert-silos", P(options.Replicas), "--timeout", options.StartupTimeoutSeconds.ToString(CultureInfo.InvariantCulture));
        foreach (var expert in experts)
        {
            warmup.WaitFor(expert);
        }

        // A 30 s closed-loop load, started from the dashboard (its Start button); its console log is the load report.
        builder.AddProject<Projects.MoECluster_Cli>(Load, launchProfileName: null)
            .WithArgs("load", "--url", gateway, "--mode", "closed", "--concurrency", "8", "--duration", "30", "--tokens", "8")
            .WithExplicitStart()
            .WaitForCompletion(warmup);
    }

    /// <summary>
    /// The Aspire dashboard on http://127.0.0.1:&lt;dashboard port&gt; and its OTLP endpoint on the next port, unless the
    /// environment names them (ASPNETCORE_URLS, ASPIRE_DASHBOARD_OTLP_ENDPOINT_URL): no certificate step on localhost; the
    /// AppHost prints the dashboard's login link.
    /// </summary>
    public static void UseLocalDashboard(IDistributedApplicationBuilder builder, AppHostOptions options)
    {
        var defaults = new Dictionary<string, string?>();
        if (string.IsNullOrEmpty(builder.Configuration["ASPNETCORE_URLS"]))
        {
            defaults["ASPNETCORE_URLS"] = $"http://127.0.0.1:{P(options.DashboardPort)}";
        }

        if (string.IsNullOrEmpty(builder.Configuration["ASPIRE_DASHBOARD_OTLP_ENDPOINT_URL"]) && string.IsNullOrEmpty(builder.Configuration["DOTNET_DASHBOARD_OTLP_ENDPOINT_URL"]))
        {
            defaults["ASPIRE_DASHBOARD_OTLP_ENDPOINT_URL"] = $"http://127.0.0.1:{P(options.DashboardPort + 1)}";
        }

        defaults["ASPIRE_ALLOW_UNSECURED_TRANSPORT"] = "true";
        builder.Configuration.AddInMemoryCollection(defaults);
    }

    /// <summary>Makes the cluster's TLS material in &lt;models-dir&gt;/tls unless usable material is there already; one line that says which.</summary>
    public static string PrepareTls(AppHostOptions options) => LocalClusterTls.Ensure(LocalClusterTls.DirectoryFor(options.ModelsDir));

    /// <summary><c>moecluster prepare-models</c>: writes the served pair unless it is already there.</summary>
    internal static IEnumerable<string> PrepareModelsArguments(AppHostOptions options)
    {
        yield return "prepare-models";
        yield return "--preset";
        yield return options.Preset;
        yield return "--layers";
        yield return P(options.Layers);
        yield return "--models-dir";
        yield return Path.GetFullPath(options.ModelsDir);
        if (options.Experts is int experts)
        {
            yield return "--experts";
            yield return P(experts);
        }
    }

    private static string P(int value) => value.ToString(CultureInfo.InvariantCulture);

    /// <summary>A fixed port, not proxied: the silo listens on it itself (Orleans advertises its own endpoint to the others).</summary>
    private static void Fixed(EndpointAnnotation endpoint, int port)
    {
        endpoint.Port = port;
        endpoint.TargetPort = port;
        endpoint.IsProxied = false;
    }

}
