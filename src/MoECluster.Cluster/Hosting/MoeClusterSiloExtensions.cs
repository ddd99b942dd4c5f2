using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;
using MoECluster.Cluster.Contracts;
using MoECluster.Cluster.Grains;
using MoECluster.Cluster.Placement;
using MoECluster.Cluster.Security;
using MoECluster.Cluster.Telemetry;
using Orleans.Configuration;
using Orleans.Dashboard;
using Orleans.Placement;
using Orleans.Runtime.MembershipService.SiloMetadata;

namespace MoECluster.Cluster.Hosting;

public static class MoeClusterSiloExtensions
{
    /// <summary>
    /// Adds MoECluster to a silo: options from the "MoECluster" section, silo metadata from "Orleans:Metadata"
    /// (the role), the expert-shard and silo-pinned placement directors, the model catalog, the traffic ledger, the
    /// Orleans Dashboard's collectors, activity propagation for traces, and the keyed Redis connection that Orleans'
    /// Redis clustering asks for when Orleans:Clustering:ServiceKey is set, and mutual TLS on every Orleans connection
    /// (MoECluster:Tls; the files are loaded and checked here, so a silo without usable ones fails before it starts,
    /// with an <see cref="InvalidOperationException"/> that names the file and the remedy).
    /// </summary>
    public static ISiloBuilder AddMoeCluster(this ISiloBuilder silo, IConfiguration configuration)
    {
        var tls = ClusterTls.FromConfiguration(configuration);
        silo.UseClusterConnections(tls);
        silo.UseSiloMetadata(configuration);
        // Every key checked when the silo starts (MoeClusterOptionsValidator): a bad one fails the start, naming the key.
        silo.Services.AddOptions<MoeClusterOptions>().Bind(configuration.GetSection(MoeClusterOptions.Section)).ValidateOnStart();
        silo.Services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<MoeClusterOptions>, MoeClusterOptionsValidator>());
        silo.Services.Configure<SiloIdentity>(o =>
        {
            o.Name = configuration[ConfigurationKeys.SiloName] ?? o.Name;
            o.Role = configuration[ConfigurationKeys.Role] ?? o.Role;
            o.Tls = tls is not null;
        });
        double timeout = configuration.GetValue($"{MoeClusterOptions.Section}:{nameof(MoeClusterOptions.RequestTimeoutSeconds)}", 120.0);
        silo.Services.Configure<SiloMessagingOptions>(o => o.ResponseTimeout = TimeSpan.FromSeconds(timeout + 10));
        // Failure detection in seconds rather than Orleans's defaults (tens of seconds): a killed expert silo's shards
        // must re-activate on the survivors while routers retry (ShardCallRetry). Each silo probes 3 others every
        // ProbeTimeout; 2 missed probes make a suspicion, 2 suspicions a death. Overridable: Orleans__Membership__*.
        // MaxProbeTimeout bounds the adaptive probe timeout, and MaxProbeTimeout × NumMissedProbesLimit is also how long
        // after the last message from a silo its death votes are suppressed (Orleans's connection-liveness check): left at
        // its default (4 × ProbeTimeout) that floor was 16 s, which is how long a hung silo (SIGSTOP: connections open,
        // nothing answered) took to be declared dead. 3 s makes it 6 s; routers hedge overdue shard calls long before
        // (ShardCallHedging), so this only decides when the hung silo's shards are re-placed for good.
        silo.Services.Configure<ClusterMembershipOptions>(o =>
        {
            o.ProbeTimeout = TimeSpan.FromSeconds(2);
            o.MaxProbeTimeout = TimeSpan.FromSeconds(3);
            o.NumMissedProbesLimit = 2;
            o.NumVotesForDeathDeclaration = 2;
            o.TableRefreshTimeout = TimeSpan.FromSeconds(2);
        });
        silo.Services.Configure<ClusterMembershipOptions>(configuration.GetSection("Orleans:Membership"));

        // An expert shard loads (and packs) its experts' weights while it activates; a full-width shard on a small,
        // busy machine can take longer than Orleans' default 30 s, which would fail the first request.
        silo.Services.Configure<GrainCollectionOptions>(o => o.ActivationTimeout = TimeSpan.FromSeconds(Math.Max(timeout, o.ActivationTimeout.TotalSeconds)));
        silo.Services.AddPlacementDirector<ExpertShardPlacement, ExpertShardPlacementDirector>();
        silo.Services.AddPlacementFilter<ExpertSilosPlacementFilter, ExpertSilosPlacementFilterDirector>(ServiceLifetime.Singleton);
        silo.Services.AddShardPlacementPolicy();
        silo.Services.AddPlacementDirector<SiloPinnedPlacement, SiloPinnedPlacementDirector>();
        silo.Services.AddSingleton<ModelCatalog>();

        // Served checkpoints checked before Orleans starts: one that lacks a declared MoE layer's tensors fails the start.
        silo.Services.AddHostedService<ModelCheckpointCheck>();
        silo.Services.AddSingleton<TrafficLedger>();
        silo.Services.AddSingleton<ClusterStatistics>();
        silo.Services.AddSingleton<Dispatch.ShardCallHedging>();
        silo.Services.AddSingleton<Dispatch.RoutingTables>();
        silo.Services.AddSingleton<Balancing.PlacementRefresher>();
        silo.Services.AddSingleton<ILifecycleParticipant<ISiloLifecycle>>(sp => sp.GetRequiredService<Balancing.PlacementRefresher>());
        silo.Services.AddSingleton<Dispatch.ShardCalls>();
        silo.Services.AddSingleton<Requests.FrontEndBatcher>();
        silo.AddShardAlternates();

        // Every silo reports grain and silo counters to the Orleans Dashboard, which the gateway mounts.
        silo.AddDashboard();

        // Orleans traces grain calls as activities (sources Microsoft.Orleans.Runtime and .Application).
        silo.AddActivityPropagation();
        Telemetry.UnsampledTracePropagation.Add(silo);
        silo.Services.AddKeyedRedisConnections(configuration);
        return silo;
    }

    /// <summary>
    /// The placement of expert shards as a policy: the default <see cref="SpreadByIndexPlacementPolicy"/> unless another
    /// <see cref="IShardPlacementPolicy"/> is registered (before this call, or after it: the last registration wins), and
    /// MoECluster:Pins checked when the silo starts.
    /// </summary>
    public static IServiceCollection AddShardPlacementPolicy(this IServiceCollection services)
    {
        services.TryAddSingleton<IShardPlacementPolicy, SpreadByIndexPlacementPolicy>();
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<MoeClusterOptions>, PinsValidator>());
        services.AddOptions<MoeClusterOptions>().ValidateOnStart();
        return services;
    }
}
