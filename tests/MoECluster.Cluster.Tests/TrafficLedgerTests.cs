using MoECluster.Cluster.Contracts;
using MoECluster.Cluster.Telemetry;
using MoECluster.Wire;

namespace MoECluster.Cluster.Tests;

/// <summary>
/// The front-end's <see cref="TrafficLedger"/> adds up exactly what the routers' replies said each layer moved: payload and
/// message bytes each way, shard messages, routed rows, tokens and predicted bytes, per model and layer; its silo pairs run
/// from the front-end to the silos that hold the shards.
/// </summary>
[Collection(InProcessMoeClusterGroup.Name)]
public sealed class TrafficLedgerTests(InProcessMoeCluster cluster)
{
    private sealed record Sent(string Model, LayerTraffic Traffic);

    [Fact]
    public async Task Ledger_totals_after_n_requests_equal_the_layer_traffic_of_the_replies()
    {
        string frontend = cluster.Frontend.SiloAddress.ToString();
        var before = cluster.FrontendLedger.Snapshot(frontend);
        var sent = new List<Sent>();
        int seed = TestInputs.NewSeed();
        var rng = new Random(seed);
        const string lat = InProcessMoeCluster.Latent, std = InProcessMoeCluster.Standard;
        var moeLayers = cluster.Reference(lat).Config.MoeLayers;
        (string Model, int? Layer, string Wire)[] requests =
        [
            (lat, moeLayers[0], "fp32"), (lat, moeLayers[^1], "bf16"), (lat, null, "fp16"), (std, moeLayers[^1], "fp32"),
            (std, null, "bf16"), (lat, null, "fp32"), (std, moeLayers[0], "fp16"), (lat, moeLayers[0], "bf16"),
        ];
        foreach (var (model, layer, wire) in requests)
        {
            int d = cluster.Reference(model).Config.HiddenSize;
            int tokens = rng.Next(1, 33);
            var reply = await cluster.Grains.GetGrain<IMoeRouterGrain>(model)
                .Forward(new ForwardCall(layer, TestInputs.Gaussian(tokens * d, rng.Next()), tokens, WireCodecs.Parse(wire).Id));
            sent.AddRange(reply.Layers.Select(t => new Sent(model, t)));
        }

        var after = cluster.FrontendLedger.Snapshot(frontend);
        var layers = sent.GroupBy(s => (s.Model, s.Traffic.Layer)).ToList();
        Assert.Equal(2 * moeLayers.Count, layers.Count);
        foreach (var group in layers)
        {
            var (model, layer) = group.Key;
            string at = $"{model} layer {layer} (seed {seed})";
            var traffic = group.Select(s => s.Traffic).ToList();

            LayerTotals totals = Delta(after, before, model, layer);
            Assert.True(traffic.Sum(t => t.Tokens) == totals.Tokens, $"{at}: tokens");
            Assert.True(traffic.Count == totals.Batches, $"{at}: batches");
            Assert.True(traffic.Sum(t => t.PredictedPayloadBytes) == totals.PredictedPayloadBytes, $"{at}: predicted bytes");

            var dispatch = Delta(after, before, model, layer, "dispatch");
            var combine = Delta(after, before, model, layer, "combine");
            Assert.Equal(
                (traffic.Sum(t => t.DispatchPayloadBytes), traffic.Sum(t => t.DispatchMessageBytes), (long)traffic.Sum(t => t.Messages), (long)traffic.Sum(t => t.RoutedRows)),
                (dispatch.Sum(p => p.PayloadBytes), dispatch.Sum(p => p.MessageBytes), dispatch.Sum(p => p.Messages), dispatch.Sum(p => p.Rows)));
            Assert.Equal(
                (traffic.Sum(t => t.CombinePayloadBytes), traffic.Sum(t => t.CombineMessageBytes), (long)traffic.Sum(t => t.Messages), (long)traffic.Sum(t => t.RoutedRows)),
                (combine.Sum(p => p.PayloadBytes), combine.Sum(p => p.MessageBytes), combine.Sum(p => p.Messages), combine.Sum(p => p.Rows)));

            // Measured equals predicted: the activation blocks are exactly rows x width x element size each way.
            Assert.True(totals.PredictedPayloadBytes == dispatch.Sum(p => p.PayloadBytes) + combine.Sum(p => p.PayloadBytes), $"{at}: predicted vs measured payload");

            // Silo pairs: dispatch from the front-end to the silo of each shard, combine back along the same pair, the same rows.
            var shardSilos = (await Task.WhenAll(cluster.ShardKeys(model, layer).Select(k => cluster.Client.GetGrain<IExpertShardGrain>(k).Describe())))
                .Select(s => s.Silo).ToHashSet();
            Assert.All(dispatch, p => Assert.Equal(frontend, p.FromSilo));
            Assert.All(dispatch, p => Assert.Contains(p.ToSilo, shardSilos));
            Assert.Equal(
                dispatch.Select(p => (p.ToSilo, p.Messages, p.Rows)).Order(),
                combine.Select(p => (p.FromSilo, p.Messages, p.Rows)).Order());
            Assert.All(combine, p => Assert.Equal(frontend, p.ToSilo));
        }
    }

    private static LayerTotals Delta(SiloTraffic after, SiloTraffic before, string model, int layer)
    {
        var a = after.Layers.Single(l => l.Model == model && l.Layer == layer);
        var b = before.Layers.SingleOrDefault(l => l.Model == model && l.Layer == layer);
        return b is null ? a : a with { Tokens = a.Tokens - b.Tokens, Batches = a.Batches - b.Batches, PredictedPayloadBytes = a.PredictedPayloadBytes - b.PredictedPayloadBytes };
    }

    /// <summary>The payload rows of one (model, layer, direction), per silo pair, less what they held before.</summary>
    private static List<PayloadTraffic> Delta(SiloTraffic after, SiloTraffic before, string model, int layer, string direction) =>
        [.. after.Payload
            .Where(p => p.Model == model && p.Layer == layer && p.Direction == direction)
            .Select(a =>
            {
                var b = before.Payload.SingleOrDefault(p => (p.Model, p.Mode, p.Layer, p.Direction, p.FromSilo, p.ToSilo, p.Wire) == (a.Model, a.Mode, a.Layer, a.Direction, a.FromSilo, a.ToSilo, a.Wire));
                return b is null ? a : a with { PayloadBytes = a.PayloadBytes - b.PayloadBytes, MessageBytes = a.MessageBytes - b.MessageBytes, Messages = a.Messages - b.Messages, Rows = a.Rows - b.Rows };
            })
            .Where(p => p.Messages > 0)];
}
