using MoECluster.Cluster.Contracts;
using MoECluster.Testing;
using MoECluster.Wire;

namespace MoECluster.Cluster.Tests;

/// <summary>
/// The router grain and the expert-shard grains compute what the model computes in process: the layer and the stack, on
/// fresh random inputs, within 1e-6 relative L2 on the fp32 wire (the same reference backend on both sides; only the
/// order of the cross-shard sum differs) and within the element type's rounding on bf16 and fp16.
/// </summary>
[Collection(InProcessMoeClusterGroup.Name)]
public sealed class RouterShardParityTests(InProcessMoeCluster cluster)
{
    /// <summary>
    /// Every wire codec of the registry on both models: fp32 to 1e-6 (only the order of the cross-shard sum differs), the
    /// others to their own parity tolerance. A codec added to the registry is covered here without a change.
    /// </summary>
    public static TheoryData<string, string, double> Wires()
    {
        var data = new TheoryData<string, string, double>();
        foreach (var codec in WireCodecs.All)
        {
            double tolerance = codec.Id == WireDType.F32 ? 1e-6 : codec.ParityTolerance;
            data.Add(InProcessMoeCluster.Latent, codec.Name, tolerance);
            data.Add(InProcessMoeCluster.Standard, codec.Name, tolerance);
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(Wires))]
    public async Task Router_layer_forward_equals_the_in_process_layer_forward(string model, string wire, double tolerance)
    {
        var reference = cluster.Reference(model);
        int d = reference.Config.HiddenSize;
        int seed = TestInputs.NewSeed();
        int tokens = 1 + (seed % 40);
        float[] x = TestInputs.Gaussian(tokens * d, seed);
        var router = cluster.Grains.GetGrain<IMoeRouterGrain>(model);
        foreach (int layer in reference.Config.MoeLayers)
        {
            var reply = await router.Forward(new ForwardCall(layer, x, tokens, WireCodecs.Parse(wire).Id));
            double error = Metrics.RelativeError(reply.Hidden, reference.ForwardLayer(layer, x, tokens));
            Assert.True(error <= tolerance, $"{model} layer {layer} wire {wire} seed {seed}: relative error {error:E2} > {tolerance:E0}");
            var traffic = Assert.Single(reply.Layers);
            Assert.Equal((layer, $"{wire}/{wire}", wire, wire, tokens), (traffic.Layer, traffic.Wire, traffic.WireDispatch, traffic.WireCombine, traffic.Tokens));
        }
    }

    [Theory]
    [InlineData(InProcessMoeCluster.Latent)]
    [InlineData(InProcessMoeCluster.Standard)]
    public async Task Router_stack_forward_on_the_fp32_wire_equals_the_in_process_stack(string model)
    {
        var reference = cluster.Reference(model);
        int d = reference.Config.HiddenSize;
        int seed = TestInputs.NewSeed();
        const int tokens = 17;
        float[] x = TestInputs.Gaussian(tokens * d, seed);
        var reply = await cluster.Grains.GetGrain<IMoeRouterGrain>(model).Forward(new ForwardCall(null, x, tokens, WireDType.F32));
        Assert.Equal(reference.Config.MoeLayers, reply.Layers.Select(l => l.Layer));
        double error = Metrics.RelativeError(reply.Hidden, reference.ForwardStack(x, tokens));
        Assert.True(error <= 1e-6, $"{model} stack seed {seed}: relative error {error:E2}");
    }
}
