using MoECluster.Cluster.Placement;

namespace MoECluster.Cluster.Telemetry;

/// <summary>One per silo (key = the silo's parsable address): reads that silo's <see cref="TrafficLedger"/>.</summary>
[Alias("moecluster.silo-telemetry")]
public interface ISiloTelemetryGrain : IGrainWithStringKey
{
    [Alias("traffic")]
    Task<SiloTraffic> GetTraffic();
}

[SiloPinnedPlacement]
public sealed class SiloTelemetryGrain(TrafficLedger ledger, ILocalSiloDetails silo) : Grain, ISiloTelemetryGrain
{
    public Task<SiloTraffic> GetTraffic() => Task.FromResult(ledger.Snapshot(silo.SiloAddress.ToString()));
}
