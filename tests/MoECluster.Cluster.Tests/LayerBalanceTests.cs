using MoECluster.Cluster.Contracts;
using MoECluster.Cluster.Telemetry;
using MoECluster.Wire;

namespace MoECluster.Cluster.Tests;

/// <summary>
/// <c>/stats</c>'s balance of a layer over the expert silos: each silo's rows, (row, expert) pairs and compute time from
/// its shards (and alternates), and the busiest silo over the mean of each.
/// </summary>
[Collection(InProcessMoeClusterGroup.Name)]
public sealed class LayerBalanceTests(InProcessMoeCluster cluster)
{
    [Fact]
    public async Task Expert_silos_account_every_routed_row_and_pair_of_a_forward_with_its_compute_time()
    {
        const string model = InProcessMoeCluster.Latent;
        var reference = cluster.Reference(model);
        int d = reference.Config.HiddenSize, layer = reference.Config.MoeLayers[0];
        int tokens = 9;
        var before = Work(model, layer);
        var reply = await cluster.Grains.GetGrain<IMoeRouterGrain>(model)
            .Forward(new ForwardCall(layer, TestInputs.Gaussian(tokens * d, 5), tokens, WirePair.Of(WireDType.F32, WireDType.F32)));
        var after = Work(model, layer);

        // Every (token, expert) pair is computed once by some shard; every routed row reaches one.
        Assert.Equal((long)tokens * reference.Config.NumExpertsPerTok, after.Pairs - before.Pairs);
        Assert.Equal(Assert.Single(reply.Layers).RoutedRows, after.Rows - before.Rows);
        Assert.True(after.Micros > before.Micros);
    }

    private (long Rows, long Pairs, long Micros) Work(string model, int layer)
    {
        var balance = LayerBalance.From(cluster.Experts.SelectMany(s => cluster.Service<TrafficLedger>(s).Snapshot(s.SiloAddress.ToString()).ShardBatches))
            .SingleOrDefault(b => b.Model == model && b.Layer == layer);
        return balance is null ? (0, 0, 0) : (balance.Silos.Sum(w => w.Rows), balance.Silos.Sum(w => w.Pairs), balance.Silos.Sum(w => w.ComputeMicroseconds));
    }

    [Fact]
    public void Each_layers_work_is_summed_per_silo_and_its_imbalance_is_the_busiest_over_the_mean()
    {
        ShardBatchTotals Shard(string key, string silo, long rows, long pairs, long micros) =>
            new(key, silo, Batches: 3, Requests: 3, Rows: rows, MergedBatches: 0, MaxRequests: 1, MaxRows: rows, ComputeMicroseconds: micros, Pairs: pairs);
        var balance = LayerBalance.From(
        [
            Shard("lat/1/s0/0-16", "expert-1", 300, 900, 6000),
            Shard("lat/1/s2/32-48", "expert-1", 100, 300, 2000),
            Shard("lat/1/s1/16-32", "expert-2", 100, 200, 1000),
            Shard("lat/1/s3/48-64", "expert-2", 100, 200, 1000),
            Shard("lat/1/s3/48-64/alt", "expert-1", 0, 0, 0), // an alternate counts where it ran
            Shard("lat/3/s0/0-32", "expert-1", 50, 100, 700),
            Shard("lat/3/s1/32-64", "expert-2", 50, 100, 700),
            Shard("not a shard key", "expert-2", 9999, 9999, 9999), // ignored, never breaks /stats
        ]);

        Assert.Equal([("lat", 1), ("lat", 3)], balance.Select(b => (b.Model, b.Layer)));
        var layer1 = balance[0];
        Assert.Equal([new SiloWork("expert-1", 3, 400, 1200, 8000), new SiloWork("expert-2", 2, 200, 400, 2000)], layer1.Silos);
        Assert.Equal(400 / 300.0, layer1.RowsImbalance, 12);
        Assert.Equal(1200 / 800.0, layer1.PairsImbalance, 12);
        Assert.Equal(8000 / 5000.0, layer1.ComputeImbalance, 12);
        Assert.Equal((1.0, 1.0, 1.0), (balance[1].RowsImbalance, balance[1].PairsImbalance, balance[1].ComputeImbalance));
    }

    [Fact]
    public void Nothing_measured_is_balanced() => Assert.Equal(1, Model.Balancing.ExpertLoad.Imbalance([0, 0]));
}
