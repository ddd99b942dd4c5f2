using MoECluster.Cluster.Telemetry;

namespace MoECluster.Cluster.Contracts;

/// <summary>One per silo (key = the silo's parsable address): reads that silo's <see cref="TrafficLedger"/>.</summary>
[Alias("moecluster.silo-telemetry")]
public interface ISiloTelemetryGrain : IGrainWithStringKey
{
    [Alias("traffic")]
    Task<SiloTraffic> GetTraffic();

    /// <summary>Tokens per expert of each MoE layer of <paramref name="model"/> over the balancing window (<see cref="TrafficLedger.ExpertLoads"/>).</summary>
    [Alias("expert-loads")]
    Task<IReadOnlyList<LayerExpertLoad>> GetExpertLoads(string model);
}
