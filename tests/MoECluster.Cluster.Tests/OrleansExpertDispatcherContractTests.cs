using System.Diagnostics;
using MoECluster.Cluster.Dispatch;
using MoECluster.Model.Dispatch;
using MoECluster.Model.Layers;
using MoECluster.Model.Routing;
using MoECluster.Testing;
using MoECluster.Wire;

namespace MoECluster.Cluster.Tests;

/// <summary>
/// The dispatcher contract on the cluster's dispatcher: the front-end's <see cref="OrleansExpertDispatcher"/> (fp32
/// wire) sending the rows to the expert-shard grains of an in-process cluster (16 experts in 4 shards on 2 expert silos).
/// </summary>
[Collection(InProcessMoeClusterGroup.Name)]
public sealed class OrleansExpertDispatcherContractTests(InProcessMoeCluster cluster) : ExpertDispatcherContract
{
    protected override MoeModel Model => cluster.Reference(InProcessMoeCluster.Latent);

    protected override IExpertDispatcher Dispatcher() =>
        cluster.Service<ShardCalls>(cluster.Frontend).Dispatcher(InProcessMoeCluster.Latent, WireDType.F32);

    [Fact]
    public async Task A_finished_layer_leaves_its_traffic_rows_once_per_token_and_shard_and_one_message_per_shard()
    {
        var model = Model;
        int layer = model.Config.MoeLayers[0], tokens = 12, k = model.Config.NumExpertsPerTok, w = model.Config.RoutedWidth;
        var rng = new Random();
        var plan = new RoutingPlan(tokens, k);
        for (int t = 0; t < tokens; t++)
        {
            Enumerable.Range(0, model.Config.NRoutedExperts).OrderBy(_ => rng.Next()).Take(k).ToArray().CopyTo(plan.Experts, t * k);
        }

        Array.Fill(plan.Weights, 0.5f);
        float[] z = [.. Enumerable.Range(0, tokens * w).Select(_ => (float)rng.NextDouble())];
        var dispatcher = cluster.Service<ShardCalls>(cluster.Frontend).Dispatcher(InProcessMoeCluster.Latent, WireDType.BF16);
        var request = new ExpertDispatchRequest(layer, plan, z, w, z, Stopwatch.GetTimestamp());
        await dispatcher.DispatchAsync(request);
        Assert.Empty(dispatcher.Traffic);
        dispatcher.LayerFinished(request);

        var table = cluster.Service<RoutingTables>(cluster.Frontend).For(InProcessMoeCluster.Latent, layer);
        var shardsOf = Enumerable.Range(0, tokens).Select(t => plan.ExpertsOf(t).ToArray().Select(table.ShardOf).Distinct().ToArray()).ToArray();
        var traffic = Assert.Single(dispatcher.Traffic);
        Assert.Equal((layer, "bf16/bf16", "bf16", "bf16", tokens, w), (traffic.Layer, traffic.Wire, traffic.WireDispatch, traffic.WireCombine, traffic.Tokens, traffic.Width));
        Assert.Equal(shardsOf.Sum(s => s.Length), traffic.RoutedRows);
        Assert.Equal(shardsOf.SelectMany(s => s).Distinct().Count(), traffic.Messages);
        Assert.Equal(2L * traffic.RoutedRows * w, traffic.DispatchPayloadBytes);
        Assert.True(traffic.Milliseconds > 0);
    }
}
