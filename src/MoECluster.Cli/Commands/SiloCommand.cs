using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Configuration.Memory;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;
using MoECluster.Cli.LocalCluster;
using MoECluster.Cluster.Hosting;
using MoECluster.Cluster.Telemetry;
using MoECluster.Gateway;
using MoECluster.Gateway.Health;
using MoECluster.Gateway.Limits;
using MoECluster.Gateway.Security;
using MoECluster.ServiceDefaults;
using Orleans.Configuration;

namespace MoECluster.Cli.Commands;

/// <summary>
/// <c>moecluster silo</c>: one Orleans silo. A front-end silo runs routers and the HTTP gateway; an expert silo
/// holds expert shards. Configuration follows Aspire's conventions (appsettings.json, then environment variables
/// such as Orleans__ClusterId, Orleans__Clustering__ProviderType, Orleans__Endpoints__SiloPort,
/// MoECluster__Models__latent__Path), and the flags here override both. Embedded defaults: localhost
/// (Development) clustering, cluster id "moecluster", advertised address 127.0.0.1. Both roles serve HTTP on
/// <c>Urls</c>: a front-end silo the gateway, an expert silo <c>/alive</c> and <c>/health</c> for launchers and probes;
/// both serve <c>/metrics</c> (Prometheus text exposition), behind the API keys when keys are configured.
/// </summary>
internal static class SiloCommand
{
    public static Command Create(TextWriter output, TextWriter error)
    {
        var role = new Option<string>("--role") { Description = "expert (holds expert shards) or frontend (routers + gateway).", DefaultValueFactory = _ => SiloRoles.Expert };
        role.AcceptOnlyFromAmong(SiloRoles.Expert, SiloRoles.Frontend);
        var name = new Option<string?>("--name") { Description = "Silo name (Orleans:Name); pins in MoECluster:Pins refer to it." };
        var siloPort = new Option<int?>("--silo-port") { Description = "Silo-to-silo port (default 11111)." };
        var gatewayPort = new Option<int?>("--gateway-port") { Description = "Orleans client gateway port (default 30000; 0 = none)." };
        var primary = new Option<string?>("--primary") { Description = "HOST:PORT of the primary silo (localhost clustering); omit on the primary itself." };
        var urls = new Option<string?>("--urls") { Description = "Where HTTP listens: the gateway on a front-end (default http://127.0.0.1:8080), /health and /alive on an expert (default an ephemeral port)." };
        var models = new Option<string[]>("--model") { Description = "A served model as ID=DIR (repeatable).", AllowMultipleArgumentsPerToken = false };
        var shards = new Option<int?>("--shards") { Description = "Expert shards per MoE layer (default 4)." };
        var wire = WireOption.CreateOptional($"Default payload element type between router and shards, for requests that name none ({MoeClusterOptions.Section}:{nameof(MoeClusterOptions.DefaultWire)}; default {MoECluster.Wire.WireCodecs.Default.Name}).");
        var backend = new Option<string?>("--backend") { Description = $"Compute: {MoECluster.Cluster.Hosting.ComputeBackends.Description}; default auto." };
        backend.AcceptOnlyFromAmong([.. MoECluster.Cluster.Hosting.ComputeBackends.Names]);
        var expectedExperts = new Option<int?>("--expected-expert-silos") { Description = "Expert silos the cluster should have (MoECluster:ExpectedExpertSilos): a front-end's /health says degraded while fewer serve." };
        var redundant = new Option<int?>("--redundant-experts") { Description = "Replicas beyond one per expert a re-plan may add per MoE layer (MoECluster:Balancing:RedundantExperts; default an eighth of the layer's experts)." };
        var rebalanceEvery = new Option<double?>("--rebalance-every") { Description = "Re-plan expert placement every this many seconds (MoECluster:Balancing:PeriodSeconds; default: only on POST /v1/admin/rebalance)." };
        var replicaBytes = new Option<string?>("--replica-bytes-per-silo") { Description = "The replica budget in bytes each expert silo may hold, instead of --redundant-experts (MoECluster:Balancing:ReplicaBytesPerSilo; e.g. 512MiB)." };
        var parentPid = new Option<int?>("--parent-pid") { Description = $"Stop when this process exits (default: ${ParentProcess.EnvironmentVariable}; moecluster run and the launcher set it)." };
        var command = new Command("silo", "Run one silo of a MoECluster cluster (front-end with gateway, or expert).")
        {
            role, name, siloPort, gatewayPort, primary, urls, models, shards, wire.Wire, wire.Dispatch, wire.Combine, backend, expectedExperts, redundant, rebalanceEvery, replicaBytes, parentPid,
        };
        command.SetAction((parse, cancel) => RunAsync(error, parse.GetValue(role)!, new Dictionary<string, string?>
        {
            [ConfigurationKeys.SiloName] = parse.GetValue(name),
            [ConfigurationKeys.SiloPort] = parse.GetValue(siloPort)?.ToString(CultureInfo.InvariantCulture),
            [ConfigurationKeys.GatewayPort] = parse.GetValue(gatewayPort)?.ToString(CultureInfo.InvariantCulture),
            [ConfigurationKeys.PrimarySiloEndPoint] = parse.GetValue(primary),
            [$"{MoeClusterOptions.Section}:{nameof(MoeClusterOptions.ShardsPerLayer)}"] = parse.GetValue(shards)?.ToString(CultureInfo.InvariantCulture),
            [$"{MoeClusterOptions.Section}:{nameof(MoeClusterOptions.DefaultWire)}"] = parse.GetValue(wire.Wire),
            [$"{MoeClusterOptions.Section}:{nameof(MoeClusterOptions.DefaultWireDispatch)}"] = parse.GetValue(wire.Dispatch),
            [$"{MoeClusterOptions.Section}:{nameof(MoeClusterOptions.DefaultWireCombine)}"] = parse.GetValue(wire.Combine),
            [$"{MoeClusterOptions.Section}:{nameof(MoeClusterOptions.Compute)}:{nameof(ComputeOptions.Backend)}"] = parse.GetValue(backend),
            [$"{MoeClusterOptions.Section}:{nameof(MoeClusterOptions.ExpectedExpertSilos)}"] = parse.GetValue(expectedExperts)?.ToString(CultureInfo.InvariantCulture),
            [$"{MoeClusterOptions.Section}:{nameof(MoeClusterOptions.Balancing)}:{nameof(BalancingOptions.RedundantExperts)}"] = parse.GetValue(redundant)?.ToString(CultureInfo.InvariantCulture),
            [$"{MoeClusterOptions.Section}:{nameof(MoeClusterOptions.Balancing)}:{nameof(BalancingOptions.PeriodSeconds)}"] = parse.GetValue(rebalanceEvery)?.ToString(CultureInfo.InvariantCulture),
            [$"{MoeClusterOptions.Section}:{nameof(MoeClusterOptions.Balancing)}:{nameof(BalancingOptions.ReplicaBytesPerSilo)}"] =
                parse.GetValue(replicaBytes) is string size ? ByteSizes.Parse(size, "--replica-bytes-per-silo").ToString(CultureInfo.InvariantCulture) : null,
            [ConfigurationKeys.Urls] = parse.GetValue(urls),
        }, parse.GetValue(models) ?? [], parse.GetValue(parentPid), cancel));
        return command;
    }

    /// <summary>The embedded defaults: a local cluster with no external service.</summary>
    internal static Dictionary<string, string?> Defaults(string role) => new()
    {
        [ConfigurationKeys.ClusterId] = "moecluster",
        [ConfigurationKeys.ServiceId] = "moecluster",
        [ConfigurationKeys.ClusteringProviderType] = "Development",
        [ConfigurationKeys.AdvertisedIPAddress] = "127.0.0.1",
        [ConfigurationKeys.SiloPort] = ConfigurationKeys.DefaultSiloPort.ToString(CultureInfo.InvariantCulture),
        [ConfigurationKeys.GatewayPort] = ConfigurationKeys.DefaultGatewayPort.ToString(CultureInfo.InvariantCulture),
        [ConfigurationKeys.SiloName] = role,
        // The front-end's gateway; an expert silo serves only /health and /alive, on an ephemeral port unless told.
        [ConfigurationKeys.Urls] = role == SiloRoles.Frontend ? $"http://127.0.0.1:{ConfigurationKeys.DefaultFrontendHttpPort}" : "http://127.0.0.1:0",
        ["Logging:LogLevel:Default"] = "Warning",
        ["Logging:LogLevel:MoECluster"] = "Information",
        ["Logging:LogLevel:Microsoft.Hosting.Lifetime"] = "Information",

        // A front-end waiting for its expert silos is unhealthy by design; /health says so, the log need not.
        ["Logging:LogLevel:Microsoft.Extensions.Diagnostics.HealthChecks"] = "Critical",
    };

    /// <summary>How long a silo whose parent died may take to stop gracefully before it kills itself.</summary>
    private static readonly TimeSpan OrphanGrace = TimeSpan.FromSeconds(5);

    private static async Task<int> RunAsync(TextWriter error, string role, Dictionary<string, string?> flags, string[] models, int? parentPidFlag, CancellationToken cancel)
    {
        int? parentPid;
        try
        {
            parentPid = ParentProcess.Resolve(parentPidFlag);
        }
        catch (ArgumentException e)
        {
            error.WriteLine($"moecluster silo: error: {e.Message}");
            return CliApp.ExitUsage;
        }

        var overrides = flags.Where(kv => kv.Value is not null).ToDictionary(kv => kv.Key, kv => kv.Value);
        overrides[ConfigurationKeys.Role] = role;
        foreach (string model in models)
        {
            int eq = model.IndexOf('=', StringComparison.Ordinal);
            if (eq <= 0 || eq == model.Length - 1)
            {
                error.WriteLine($"moecluster silo: error: --model {model}: expected ID=DIR");
                return CliApp.ExitUsage;
            }

            overrides[ConfigurationKeys.ModelPath(model[..eq])] = Path.GetFullPath(model[(eq + 1)..]);
        }

        WebApplication host;
        try
        {
            host = role == SiloRoles.Frontend ? BuildFrontend(role, overrides) : BuildExpert(role, overrides);
        }
        catch (Exception e) when (e is InvalidOperationException or FormatException or ArgumentException or OptionsValidationException)
        {
            error.WriteLine($"moecluster silo: error: {VerbRunner.Describe(e)}");
            return CliApp.ExitUsage;
        }

        using (host)
        {
            using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancel);
            if (parentPid is int pid)
            {
                _ = WatchParentAsync(pid, role, stop, error);
            }

            try
            {
                await host.RunAsync(stop.Token);
            }
            catch (Exception e) when (IsStartFailure(e))
            {
                // A bad key (options validated at start) or a served checkpoint that cannot be served: the configuration's fault.
                error.WriteLine($"moecluster silo ({role}): error: {VerbRunner.Describe(e)}");
                return CliApp.ExitUsage;
            }
            catch (Exception e) when (e is IOException or InvalidOperationException or OrleansException)
            {
                error.WriteLine($"moecluster silo ({role}): error: {VerbRunner.Describe(e)}");
                return CliApp.ExitFailure;
            }
        }

        return CliApp.ExitOk;
    }

    /// <summary>What fails a silo's start for its configuration: a bad key, a served checkpoint that cannot be served.</summary>
    private static bool IsStartFailure(Exception e) => e switch
    {
        OptionsValidationException or InvalidDataException or MoECluster.Model.Configuration.ModelConfigException
            or MoECluster.Model.Checkpoints.SafetensorsFormatException => true,
        AggregateException { InnerExceptions.Count: > 0 } all => all.InnerExceptions.All(IsStartFailure),
        _ => false,
    };

    private static WebApplication BuildFrontend(string role, Dictionary<string, string?> overrides)
    {
        var builder = CreateSiloBuilder(role, overrides);
        builder.Services.AddMoeGateway();
        var app = builder.Build();
        app.MapDefaultEndpoints();
        app.MapMoeGateway();

        // Behind the gateway's guard (MapMoeGateway put it ahead of every endpoint): API keys when configured.
        app.MapMetricsEndpoint();
        return app;
    }

    /// <summary>
    /// An expert silo serves its health endpoints (for launchers, systemd and Kubernetes probes) and <c>/metrics</c> over
    /// HTTP, with the gateway's API-key policy: with keys configured, <c>/metrics</c> needs one; the probes stay open.
    /// </summary>
    private static WebApplication BuildExpert(string role, Dictionary<string, string?> overrides)
    {
        var builder = CreateSiloBuilder(role, overrides);
        builder.Services.AddMoeExpertSiloHttpSecurity();
        var app = builder.Build();
        app.UseMoeExpertSiloHttpSecurity();
        app.MapDefaultEndpoints();
        app.MapMetricsEndpoint();
        return app;
    }

    private static WebApplicationBuilder CreateSiloBuilder(string role, Dictionary<string, string?> overrides)
    {
        var builder = WebApplication.CreateBuilder(new WebApplicationOptions { Args = [] });
        Configure(builder.Configuration, role, overrides);
        builder.WebHost.UseUrls(builder.Configuration[ConfigurationKeys.Urls]!);
        builder.AddServiceDefaults(sources =>
        {
            sources.Meters.Add(TrafficLedger.MeterName);
            sources.Meters.Add(TrafficLedger.OrleansMeterName);
            sources.CardinalityLimits[TrafficLedger.ExpertTokensInstrument] = TrafficLedger.ExpertTokensCardinalityLimit;
            sources.ActivitySources.Add("Microsoft.Orleans.Runtime");
            sources.ActivitySources.Add("Microsoft.Orleans.Application");
        });
        builder.Services.AddSiloHealthChecks();
        builder.Services.AddMoeConnectionLimits();
        builder.UseOrleans(silo => silo.AddMoeCluster(builder.Configuration));
        ConfigureEndpoints(builder.Services, builder.Configuration);
        return builder;
    }

    private static void Configure(ConfigurationManager configuration, string role, Dictionary<string, string?> overrides)
    {
        configuration.Sources.Insert(0, new MemoryConfigurationSource { InitialData = Defaults(role) });
        configuration.AddInMemoryCollection(overrides);
    }

    /// <summary>The advertised address comes from configuration as text; bind it explicitly.</summary>
    private static void ConfigureEndpoints(IServiceCollection services, ConfigurationManager configuration)
    {
        services.PostConfigure<EndpointOptions>(o =>
        {
            if (IPAddress.TryParse(configuration[ConfigurationKeys.AdvertisedIPAddress], out IPAddress? address))
            {
                o.AdvertisedIPAddress = address;
            }
        });
    }

    /// <summary>
    /// When the parent (a launcher) dies, stop: gracefully first, but the rest of the cluster is going away with the
    /// parent, so a graceful stop that waits on it is cut short after <see cref="OrphanGrace"/>.
    /// </summary>
    private static async Task WatchParentAsync(int pid, string role, CancellationTokenSource stop, TextWriter error)
    {
        try
        {
            await ParentProcess.WaitForExitAsync(pid, stop.Token, message => error.WriteLine($"moecluster silo ({role}): {message}"));
        }
        catch (OperationCanceledException)
        {
            return;
        }

        error.WriteLine($"moecluster silo ({role}): parent process {pid} exited; stopping");
        await stop.CancelAsync();
        await Task.Delay(OrphanGrace);
        using var self = Process.GetCurrentProcess();
        self.Kill();
    }
}
