using MoECluster.Cluster.Telemetry;

namespace MoECluster.Cluster.Tests;

/// <summary>What a silo's ledger recorded between two snapshots.</summary>
internal static class LedgerDelta
{
    /// <summary>The payload rows of one (model, layer, direction, wire), per silo pair, less what they held before.</summary>
    public static List<PayloadTraffic> Payload(SiloTraffic after, SiloTraffic before, string model, int layer, string direction, string wire) =>
        [.. after.Payload
            .Where(p => p.Model == model && p.Layer == layer && p.Direction == direction && p.Wire == wire)
            .Select(a =>
            {
                var b = before.Payload.SingleOrDefault(p => (p.Model, p.Layer, p.Direction, p.FromSilo, p.ToSilo, p.Wire) == (a.Model, a.Layer, a.Direction, a.FromSilo, a.ToSilo, a.Wire));
                return b is null ? a : a with { PayloadBytes = a.PayloadBytes - b.PayloadBytes, Messages = a.Messages - b.Messages, Rows = a.Rows - b.Rows };
            })
            .Where(p => p.Messages > 0)];
}
