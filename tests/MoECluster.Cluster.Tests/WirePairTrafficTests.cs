using MoECluster.Cluster.Contracts;
using MoECluster.Cluster.Telemetry;
using MoECluster.Testing;
using MoECluster.Wire;

namespace MoECluster.Cluster.Tests;

/// <summary>
/// Dispatch and combine in element types of their own: the routed rows travel in the dispatch type, the partial sums in
/// the combine type, as the traffic records and the ledger measure them, and the output stays within the pair's tolerance
/// of the fp32 in-process reference.
/// </summary>
[Collection(InProcessMoeClusterGroup.Name)]
public sealed class WirePairTrafficTests(InProcessMoeCluster cluster)
{
    [Theory]
    [InlineData(InProcessMoeCluster.Latent)]
    [InlineData(InProcessMoeCluster.Standard)]
    public async Task Dispatch_fp32_and_combine_bf16_move_4_and_2_bytes_an_element_within_the_pairs_tolerance(string model)
    {
        var pair = WirePair.Of(WireDType.F32, WireDType.BF16);
        string frontend = cluster.Frontend.SiloAddress.ToString();
        var reference = cluster.Reference(model);
        int d = reference.Config.HiddenSize;
        int seed = TestInputs.NewSeed();
        int tokens = 1 + (seed % 24);
        float[] x = TestInputs.Gaussian(tokens * d, seed);
        var router = cluster.Grains.GetGrain<IMoeRouterGrain>(model);
        foreach (int layer in reference.Config.MoeLayers)
        {
            var before = cluster.FrontendLedger.Snapshot(frontend);
            var reply = await router.Forward(new ForwardCall(layer, x, tokens, pair));
            var after = cluster.FrontendLedger.Snapshot(frontend);
            string at = $"{model} layer {layer} seed {seed}";

            double error = Metrics.RelativeError(reply.Hidden, reference.ForwardLayer(layer, x, tokens));
            Assert.True(error <= pair.ParityTolerance, $"{at}: relative error {error:E2} > {pair.ParityTolerance:E0}");

            var traffic = Assert.Single(reply.Layers);
            Assert.Equal(("fp32/bf16", "fp32", "bf16"), (traffic.Wire, traffic.WireDispatch, traffic.WireCombine));
            long elements = (long)traffic.RoutedRows * traffic.Width;
            Assert.True(elements > 0, at);
            Assert.Equal(4 * elements, traffic.DispatchPayloadBytes);
            Assert.Equal(2 * elements, traffic.CombinePayloadBytes);
            Assert.Equal(6 * elements, traffic.PredictedPayloadBytes);

            // The ledger (/stats, metrics) tags each direction's bytes with that direction's type.
            var dispatch = LedgerDelta.Payload(after, before, model, layer, "dispatch", "fp32");
            var combine = LedgerDelta.Payload(after, before, model, layer, "combine", "bf16");
            Assert.Equal((4 * elements, (long)traffic.RoutedRows), (dispatch.Sum(p => p.PayloadBytes), dispatch.Sum(p => p.Rows)));
            Assert.Equal((2 * elements, (long)traffic.RoutedRows), (combine.Sum(p => p.PayloadBytes), combine.Sum(p => p.Rows)));
        }
    }

    [Fact]
    public async Task A_mixed_pair_is_batched_apart_from_its_mirror_and_both_are_recorded_with_their_directions()
    {
        const string model = InProcessMoeCluster.Latent;
        string frontend = cluster.Frontend.SiloAddress.ToString();
        int d = cluster.Reference(model).Config.HiddenSize;
        var router = cluster.Grains.GetGrain<IMoeRouterGrain>(model);
        foreach (var pair in new[] { WirePair.Of(WireDType.F16, WireDType.F32), WirePair.Of(WireDType.F32, WireDType.F16) })
        {
            var reply = await router.Forward(new ForwardCall(null, TestInputs.Gaussian(3 * d, 7), 3, pair));
            Assert.All(reply.Layers, l => Assert.Equal((pair.Text, pair.Dispatch.Name, pair.Combine.Name), (l.Wire, l.WireDispatch, l.WireCombine)));
            Assert.All(reply.Layers, l => Assert.Equal(
                (pair.Dispatch.PayloadBytes(l.RoutedRows, l.Width), pair.Combine.PayloadBytes(l.RoutedRows, l.Width)),
                (l.DispatchPayloadBytes, l.CombinePayloadBytes)));
        }

        var batches = cluster.FrontendLedger.Snapshot(frontend).FrontEndBatches.Where(b => b.Model == model && b.Target == "stack").ToList();
        Assert.Contains(batches, b => (b.Wire, b.WireDispatch, b.WireCombine) == ("fp16/fp32", "fp16", "fp32"));
        Assert.Contains(batches, b => (b.Wire, b.WireDispatch, b.WireCombine) == ("fp32/fp16", "fp32", "fp16"));
    }
}
