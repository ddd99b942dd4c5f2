using MoECluster.Cluster.Contracts;
using MoECluster.Cluster.Telemetry;
using MoECluster.Testing;
using MoECluster.Wire;

namespace MoECluster.Cluster.Tests;

/// <summary>
/// The block-scaled wire types across real silos: each direction's bytes are its codec's block sizes (scales and, for
/// NVFP4, one fp32 per message included), predicted from the routing plan exactly as measured, and the output stays
/// within the pair's tolerance of the fp32 in-process reference.
/// </summary>
[Collection(InProcessMoeClusterGroup.Name)]
public sealed class MicroscalingTrafficTests(InProcessMoeCluster cluster)
{
    public static TheoryData<string, WireDType, WireDType> Pairs()
    {
        var data = new TheoryData<string, WireDType, WireDType>();
        foreach (var codec in WireCodecs.All.Where(c => c.BlockSize > 1))
        {
            data.Add(InProcessMoeCluster.Latent, codec.Id, codec.Id);
            data.Add(InProcessMoeCluster.Standard, codec.Id, WireDType.BF16);
        }

        data.Add(InProcessMoeCluster.Latent, WireDType.MxFp4, WireDType.MxFp8E4M3);
        data.Add(InProcessMoeCluster.Latent, WireDType.BF16, WireDType.NvFp4);
        return data;
    }

    [Theory]
    [MemberData(nameof(Pairs))]
    public async Task Each_direction_moves_its_codecs_blocks_as_predicted_within_the_pairs_tolerance(string model, WireDType dispatchType, WireDType combineType)
    {
        var pair = WirePair.Of(dispatchType, combineType);
        string frontend = cluster.Frontend.SiloAddress.ToString();
        var reference = cluster.Reference(model);
        int d = reference.Config.HiddenSize;
        int seed = TestInputs.NewSeed();
        int tokens = 8 + (seed % 24);
        float[] x = TestInputs.Gaussian(tokens * d, seed);
        var router = cluster.Grains.GetGrain<IMoeRouterGrain>(model);
        int layer = reference.Config.MoeLayers[0];

        var before = cluster.FrontendLedger.Snapshot(frontend);
        var reply = await router.Forward(new ForwardCall(layer, x, tokens, pair));
        var after = cluster.FrontendLedger.Snapshot(frontend);
        string at = $"{model} {pair.Text} seed {seed}";

        double error = Metrics.RelativeError(reply.Hidden, reference.ForwardLayer(layer, x, tokens));
        Assert.True(error <= pair.ParityTolerance, $"{at}: relative error {error:E2} > {pair.ParityTolerance:E0}");
        Assert.True(error > 1e-6, $"{at}: relative error {error:E2}: the wire did not quantize");

        var traffic = Assert.Single(reply.Layers);
        var dispatch = LedgerDelta.Payload(after, before, model, layer, "dispatch", pair.Dispatch.Name);
        var combine = LedgerDelta.Payload(after, before, model, layer, "combine", pair.Combine.Name);
        long messages = dispatch.Sum(p => p.Messages);
        Assert.Equal(messages, combine.Sum(p => p.Messages));
        Assert.Equal((long)traffic.RoutedRows, dispatch.Sum(p => p.Rows));

        // Rows are self-contained: a block of r rows is r row-sizes (plus NVFP4's 4-byte message scale, once per message).
        long Expected(IWireCodec codec) => codec.PayloadBytes(traffic.RoutedRows, traffic.Width) + (codec.Id == WireDType.NvFp4 ? 4 * (messages - 1) : 0);
        Assert.Equal(Expected(pair.Dispatch), traffic.DispatchPayloadBytes);
        Assert.Equal(Expected(pair.Combine), traffic.CombinePayloadBytes);
        Assert.Equal(traffic.DispatchPayloadBytes + traffic.CombinePayloadBytes, traffic.PredictedPayloadBytes);
        Assert.Equal(traffic.DispatchPayloadBytes, dispatch.Sum(p => p.PayloadBytes));
        Assert.Equal(traffic.CombinePayloadBytes, combine.Sum(p => p.PayloadBytes));
    }
}
