using MoECluster.Cluster.Contracts;
using MoECluster.Cluster.Placement;

namespace MoECluster.Cluster.Telemetry;

[SiloPinnedPlacement]
public sealed class SiloTelemetryGrain(TrafficLedger ledger, ILocalSiloDetails silo) : Grain, ISiloTelemetryGrain
{
    public Task<SiloTraffic> GetTraffic() => Task.FromResult(ledger.Snapshot(silo.SiloAddress.ToString()));

    public Task<IReadOnlyList<LayerExpertLoad>> GetExpertLoads(string model) => Task.FromResult(ledger.ExpertLoads(model));
}
