using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using MoECluster.Cluster.Placement;
using MoECluster.Cluster.Telemetry;
using Orleans.Configuration;
using Orleans.Dashboard;
using Orleans.Runtime.MembershipService.SiloMetadata;

namespace MoECluster.Cluster.Hosting;

public static class MoeClusterSiloExtensions
{
    /// <summary>
    /// Adds MoECluster to a silo: options from the "MoECluster" section, silo metadata from "Orleans:Metadata"
    /// (the role), the expert-shard and silo-pinned placement directors, the model catalog, the traffic ledger, the
    /// Orleans Dashboard's collectors and activity propagation for traces.
    /// </summary>
    public static ISiloBuilder AddMoeCluster(this ISiloBuilder silo, IConfiguration configuration)
    {
        silo.UseSiloMetadata(configuration);
        silo.Services.Configure<MoeClusterOptions>(configuration.GetSection(MoeClusterOptions.Section));
        silo.Services.Configure<SiloIdentity>(o =>
        {
            o.Name = configuration["Orleans:Name"] ?? o.Name;
            o.Role = configuration[$"Orleans:Metadata:{SiloRoles.MetadataKey}"] ?? o.Role;
        });
        double timeout = configuration.GetValue($"{MoeClusterOptions.Section}:RequestTimeoutSeconds", 120.0);
        silo.Services.Configure<SiloMessagingOptions>(o => o.ResponseTimeout = TimeSpan.FromSeconds(timeout + 10));
        silo.Services.AddPlacementDirector<ExpertShardPlacement, ExpertShardPlacementDirector>();
        silo.Services.AddPlacementDirector<SiloPinnedPlacement, SiloPinnedPlacementDirector>();
        silo.Services.AddSingleton<ModelCatalog>();
        silo.Services.AddSingleton<TrafficLedger>();
        silo.Services.AddSingleton<ClusterStatistics>();

        // Every silo reports grain and silo counters to the Orleans Dashboard, which the gateway mounts.
        silo.AddDashboard();

        // Orleans traces grain calls as activities (sources Microsoft.Orleans.Runtime and .Application).
        silo.AddActivityPropagation();
        return silo;
    }
}
