using MoECluster.Cluster.Contracts;
using MoECluster.Wire;

namespace MoECluster.Gateway;

/// <summary>
/// The one mapping from the router's traffic record (<see cref="LayerTraffic"/>, an Orleans DTO) to the gateway's
/// public contract (<see cref="GatewayLayerTraffic"/>, MessagePack and JSON). A test reflects over both types: a field
/// added to one and not to the other, or not copied here, fails it.
/// </summary>
public static class GatewayTraffic
{
    public static GatewayLayerTraffic From(LayerTraffic traffic)
    {
        ArgumentNullException.ThrowIfNull(traffic);
        return new GatewayLayerTraffic
        {
            Layer = traffic.Layer,
            Mode = traffic.Mode,
            Wire = traffic.Wire,
            Tokens = traffic.Tokens,
            Width = traffic.Width,
            RoutedRows = traffic.RoutedRows,
            DispatchPayloadBytes = traffic.DispatchPayloadBytes,
            CombinePayloadBytes = traffic.CombinePayloadBytes,
            DispatchMessageBytes = traffic.DispatchMessageBytes,
            CombineMessageBytes = traffic.CombineMessageBytes,
            PredictedPayloadBytes = traffic.PredictedPayloadBytes,
            Messages = traffic.Messages,
            Milliseconds = traffic.Milliseconds,
            BatchRequests = traffic.BatchRequests,
            BatchTokens = traffic.BatchTokens,
            WireDispatch = traffic.WireDispatch,
            WireCombine = traffic.WireCombine,
        };
    }
}
