using MoECluster.Cluster.Contracts;
using MoECluster.Cluster.Grains;
using MoECluster.Cluster.Hosting;
using MoECluster.Testing;
using MoECluster.Wire;

namespace MoECluster.Cluster.Tests;

/// <summary>
/// Three expert silos; every shard of the latent model's first MoE layer pinned to the last expert silo, and the first
/// shard of the standard model's first MoE layer to the first: unpinned placement would spread each layer over all three.
/// </summary>
public sealed class PinnedMoeCluster() : InProcessMoeCluster(new InProcessMoeClusterSetup { ExpertSilos = 3 })
{
    public const string LatentPinSilo = "Silo_3";
    public const string StandardPinSilo = "Silo_1";

    public IReadOnlyList<string> LatentPinned => ShardKeys(Latent, Reference(Latent).FirstMoeLayer);

    public string StandardPinned => ShardKeys(Standard, Reference(Standard).FirstMoeLayer)[0];

    protected override IEnumerable<KeyValuePair<string, string?>> MoreSettings() =>
    [
        .. LatentPinned.Select(k => new KeyValuePair<string, string?>(Pin(k), LatentPinSilo)),
        new(Pin(StandardPinned), StandardPinSilo),
    ];

    private static string Pin(string shard) => $"{MoeClusterOptions.Section}:{nameof(MoeClusterOptions.Pins)}:{shard}";
}

/// <summary>MoECluster:Pins: a pinned shard activates on the silo the pin names, serves there, and stays there.</summary>
public sealed class PinTests(PinnedMoeCluster cluster) : IClassFixture<PinnedMoeCluster>
{
    [Fact]
    public async Task A_pinned_shard_activates_on_the_silo_its_pin_names()
    {
        var latent = await Task.WhenAll(cluster.LatentPinned.Select(k => cluster.Client.GetGrain<IExpertShardGrain>(k).Describe()));
        Assert.All(latent, d => Assert.Equal(PinnedMoeCluster.LatentPinSilo, cluster.NameOf(d.Silo)));
        var standard = await cluster.Client.GetGrain<IExpertShardGrain>(cluster.StandardPinned).Describe();
        Assert.Equal(PinnedMoeCluster.StandardPinSilo, cluster.NameOf(standard.Silo));
    }

    [Fact]
    public async Task Pinned_shards_serve_the_router_correctly_and_stay_on_their_silo()
    {
        var reference = cluster.Reference(InProcessMoeCluster.Latent);
        int layer = reference.FirstMoeLayer;
        int seed = TestInputs.NewSeed();
        const int tokens = 24;
        float[] x = TestInputs.Gaussian(tokens * reference.Config.HiddenSize, seed);
        var reply = await cluster.Grains.GetGrain<IMoeRouterGrain>(InProcessMoeCluster.Latent).Forward(new ForwardCall(layer, x, tokens, WireDType.F32));
        double error = Metrics.RelativeError(reply.Hidden, reference.ForwardLayer(layer, x, tokens));
        Assert.True(error <= 1e-6, $"seed {seed}: relative error {error:E2}");

        // Every shard of the layer answered from the pinned silo: the front-end's ledger saw one silo pair for the layer.
        var pairs = cluster.FrontendLedger.Snapshot(cluster.Frontend.SiloAddress.ToString()).Payload
            .Where(p => p.Model == InProcessMoeCluster.Latent && p.Layer == layer && p.Direction == "dispatch")
            .Select(p => cluster.NameOf(p.ToSilo)).Distinct();
        Assert.Equal([PinnedMoeCluster.LatentPinSilo], pairs);

        // Past two placement checks (the shards' rebalancing), the pinned shards have not moved.
        await Task.Delay(ExpertShardGrainPlacementCheck * 2.5);
        var latent = await Task.WhenAll(cluster.LatentPinned.Select(k => cluster.Client.GetGrain<IExpertShardGrain>(k).Describe()));
        Assert.All(latent, d => Assert.Equal(PinnedMoeCluster.LatentPinSilo, cluster.NameOf(d.Silo)));
    }

    private static TimeSpan ExpertShardGrainPlacementCheck => ExpertShardGrain.PlacementCheckPeriod;
}
