using Microsoft.Extensions.Options;
using MoECluster.Cluster.Contracts;
using MoECluster.Cluster.Dispatch;
using MoECluster.Cluster.Hosting;
using MoECluster.Model.Dispatch;
using MoECluster.Model.Presets;
using MoECluster.Testing;
using MoECluster.Wire;

namespace MoECluster.Cluster.Tests;

/// <summary>
/// The default <see cref="InProcessMoeCluster"/> with the latent model's routing skewed like a trained router's
/// (Zipf 1.5 over its 16 experts: the contiguous shards leave one expert silo well above the mean) and a quick placement
/// refresh; a derived fixture adds balancing settings of its own.
/// </summary>
public abstract class SkewedPlacementCluster : InProcessMoeCluster
{
    protected sealed override GateSkew? LatentGateSkew => GateSkew.Parse("zipf:1.5");

    protected sealed override IEnumerable<KeyValuePair<string, string?>> MoreSettings() =>
        [new("MoECluster:Balancing:RefreshSeconds", "0.2"), .. BalancingSettings()];

    protected virtual IEnumerable<KeyValuePair<string, string?>> BalancingSettings() => [];
}

/// <summary>The skewed cluster with the default balancing options.</summary>
public sealed class RebalancingCluster : SkewedPlacementCluster
{
}

/// <summary>
/// A re-plan of expert placement on an in-process cluster: the plan's tables reach every silo at once, replicated
/// experts serve rows, and the layer still equals the in-process forward (fp32 wire, 1e-6: only the order of the
/// cross-shard sum differs).
/// </summary>
public sealed class ReplicatedPlacementTests(RebalancingCluster cluster) : IClassFixture<RebalancingCluster>
{
    [Fact]
    public async Task After_a_replan_every_silo_routes_by_the_replicated_tables_and_the_layer_still_equals_the_in_process_forward()
    {
        string model = InProcessMoeCluster.Latent;
        var reference = cluster.Reference(model);
        int d = reference.Config.HiddenSize;
        var router = cluster.Grains.GetGrain<IMoeRouterGrain>(model);
        int seed = TestInputs.NewSeed();
        for (int i = 0; i < 20; i++)
        {
            float[] x = TestInputs.Gaussian(32 * d, seed + i);
            await router.Forward(new ForwardCall(reference.FirstMoeLayer, x, 32, WireDType.F32));
        }

        var placement = cluster.Grains.GetGrain<IExpertPlacementGrain>(model);
        var dry = await placement.Rebalance(new RebalanceRequest(4, DryRun: true));
        Assert.False(dry.Changed);
        Assert.True(dry.DryRun);
        Assert.Equal(0, (await placement.Get()).Epoch);

        var report = await placement.Rebalance(new RebalanceRequest(4));
        Assert.True(report.Changed, string.Join("; ", report.Layers.Select(l => l.Reason)));
        Assert.Equal(1, report.Epoch);
        Assert.Equal(1 + cluster.Setup.ExpertSilos, report.SilosApplied);
        var change = report.Layers.Single(l => l.Layer == reference.FirstMoeLayer);
        Assert.True(change.ImbalanceAfter < change.ImbalanceBefore);
        Assert.InRange(change.ExtraReplicas, 1, 4);
        Assert.Equal(20 * 32 * reference.Config.NumExpertsPerTok, change.WindowTokens);

        // Every silo applied epoch 1 before Rebalance returned, and routes by a table with replicas.
        foreach (var silo in cluster.Cluster.GetActiveSilos())
        {
            var tables = cluster.Service<RoutingTables>(silo);
            Assert.Equal(1, tables.Epoch(model));
            var table = tables.For(model, reference.FirstMoeLayer);
            Assert.True(table.HasReplicas);
            Assert.Equal(change.ExtraReplicas, table.ExtraReplicas);
        }

        // Parity with replicas in use, on fresh inputs; the replicas' shards computed rows.
        for (int i = 0; i < 8; i++)
        {
            int tokens = 1 + ((seed + i) % 40);
            float[] x = TestInputs.Gaussian(tokens * d, seed + 100 + i);
            var reply = await router.Forward(new ForwardCall(reference.FirstMoeLayer, x, tokens, WireDType.F32));
            double error = Metrics.RelativeError(reply.Hidden, reference.ForwardLayer(reference.FirstMoeLayer, x, tokens));
            Assert.True(error <= 1e-6, $"seed {seed}: relative error {error:E2} with replicas");
        }

        var replicated = cluster.Service<RoutingTables>(cluster.Frontend).For(model, reference.FirstMoeLayer);
        var described = await Task.WhenAll(replicated.Shards.Select(s => cluster.Client.GetGrain<IExpertShardGrain>(s.Key).Describe()));
        foreach (int e in Enumerable.Range(0, replicated.Experts).Where(e => replicated.ShardsOf(e).Length > 1))
        {
            // Replicas of one expert sit on different expert silos.
            var silos = replicated.ShardsOf(e).ToArray().Select(s => described[s].Silo).ToList();
            Assert.Equal(silos.Count, silos.Distinct().Count());
        }

        var history = (await placement.Get()).History;
        Assert.Contains(history, h => h.Epoch == 1 && h.Changed);
    }

    [Fact]
    public async Task A_budget_beyond_one_replica_per_expert_silo_is_refused()
    {
        var placement = cluster.Grains.GetGrain<IExpertPlacementGrain>(InProcessMoeCluster.Standard);
        var e = await Assert.ThrowsAsync<ArgumentException>(() => placement.Rebalance(new RebalanceRequest(1000)));
        Assert.Contains("redundant_experts 1000", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_silo_never_goes_back_to_an_older_version_of_the_same_placement_but_follows_a_new_placement_grain()
    {
        var silo = cluster.Frontend;
        var tables = new RoutingTables(cluster.Service<ModelCatalog>(silo), cluster.Service<IOptions<MoeClusterOptions>>(silo));
        string model = InProcessMoeCluster.Standard;
        int layer = cluster.Reference(model).FirstMoeLayer;
        int experts = cluster.Reference(model).Config.NRoutedExperts;
        LayerPlacement Sets(params int[][] groups) => LayerPlacement.Of(ExpertRoutingTable.FromGroups(model, layer, experts, 4, groups, 1));
        var first = Sets([.. Enumerable.Range(0, 9)], [.. Enumerable.Range(8, 8)]);
        var second = Sets([.. Enumerable.Range(0, 8)], [.. Enumerable.Range(7, 9)]);
        var instance = Guid.NewGuid();

        Assert.True(tables.Apply(new ModelPlacement(model, 1, [first], [], [], instance, 3)));
        Assert.Equal(1, tables.Epoch(model));
        string firstKey = tables.For(model, layer).Shards[0].Key;

        // A stale answer (an older version of the same grain) changes nothing.
        Assert.False(tables.Apply(new ModelPlacement(model, 0, [], [], [], instance, 2)));
        Assert.Equal(1, tables.Epoch(model));

        // A newer version switches every layer at once; the previous epoch's keys stay allowed while recent.
        Assert.True(tables.Apply(new ModelPlacement(model, 2, [second], [first], [], instance, 4)));
        Assert.Equal(2, tables.Epoch(model));
        Assert.True(tables.Allows(model, layer, firstKey));
        Assert.True(tables.Allows(model, layer, tables.For(model, layer).Shards[1].Key));
        Assert.False(tables.Allows(model, layer, $"{model}/{layer}/s0/0-3,5-6"));

        // A new activation of the placement grain (its silo was lost) is followed back to the default tables.
        Assert.True(tables.Apply(new ModelPlacement(model, 0, [], [], [], Guid.NewGuid(), 1)));
        Assert.Equal(0, tables.Epoch(model));
        Assert.Same(tables.Default(model, layer), tables.For(model, layer));
        Assert.False(tables.Allows(model, layer, firstKey));
    }
}

/// <summary>The skewed <see cref="RebalancingCluster"/> with its replica budget in bytes: two experts a silo in every MoE layer.</summary>
public sealed class ByteBudgetRebalancingCluster : SkewedPlacementCluster
{
    /// <summary>One expert of the tiny latent model as the synthetic checkpoint stores it: up and down, w × m each, BF16.</summary>
    public long ExpertBytes => 2L * TinyLatent.RoutedWidth * TinyLatent.MoeIntermediateSize * 2;

    public long BudgetBytes => 2 * ExpertBytes * TinyLatent.MoeLayers.Count;

    private Model.Configuration.MoeModelConfig TinyLatent => ModelPresets.Get("tiny").Build(experts: Setup.Experts);

    protected override IEnumerable<KeyValuePair<string, string?>> BalancingSettings() =>
        [new("MoECluster:Balancing:ReplicaBytesPerSilo", BudgetBytes.ToString(System.Globalization.CultureInfo.InvariantCulture))];
}

/// <summary>A replica budget in bytes per expert silo (MoECluster:Balancing:ReplicaBytesPerSilo) instead of a count.</summary>
public sealed class ByteBudgetPlacementTests(ByteBudgetRebalancingCluster cluster) : IClassFixture<ByteBudgetRebalancingCluster>
{
    [Fact]
    public async Task A_byte_budget_per_silo_is_spent_as_whole_experts_and_no_silo_holds_more_than_it_allows()
    {
        string model = InProcessMoeCluster.Latent;
        var reference = cluster.Reference(model);
        int d = reference.Config.HiddenSize;
        int layer = reference.FirstMoeLayer;
        var router = cluster.Grains.GetGrain<IMoeRouterGrain>(model);
        int seed = TestInputs.NewSeed();
        for (int i = 0; i < 10; i++)
        {
            await router.Forward(new ForwardCall(layer, TestInputs.Gaussian(32 * d, seed + i), 32, WireDType.F32));
        }

        var report = await cluster.Grains.GetGrain<IExpertPlacementGrain>(model).Rebalance(new RebalanceRequest());
        var change = report.Layers.Single(l => l.Layer == layer);
        Assert.True(change.Changed, change.Reason);
        int silos = cluster.Setup.ExpertSilos;
        Assert.Equal(2 * silos, change.ExtraReplicas);

        // Each expert silo holds its even share of the experts plus two, the budget's worth, and not one more.
        var table = cluster.Service<RoutingTables>(cluster.Frontend).For(model, layer);
        var described = await Task.WhenAll(table.Shards.Select(s => cluster.Client.GetGrain<IExpertShardGrain>(s.Key).Describe()));
        var perSilo = described.GroupBy(s => s.Silo).Select(g => g.Sum(s => s.ExpertCount)).ToList();
        Assert.Equal(silos, perSilo.Count);
        Assert.All(perSilo, held => Assert.Equal((reference.Config.NRoutedExperts / silos) + 2, held));
        Assert.All(described.GroupBy(s => s.Silo), g => Assert.True(g.Sum(s => s.WeightBytes) <= (reference.Config.NRoutedExperts / silos * cluster.ExpertBytes) + (cluster.BudgetBytes / reference.Config.MoeLayers.Count),
            $"{g.Key} holds {g.Sum(s => s.WeightBytes)} bytes of layer {layer}"));
    }
}

/// <summary>The skewed <see cref="RebalancingCluster"/> re-planning on its own every second (MoECluster:Balancing:PeriodSeconds).</summary>
public sealed class PeriodicRebalancingCluster : SkewedPlacementCluster
{
    protected override IEnumerable<KeyValuePair<string, string?>> BalancingSettings() => [new("MoECluster:Balancing:PeriodSeconds", "1")];
}

/// <summary>Re-planning on a period: the front-end asks for a plan every PeriodSeconds; a layer it balanced is then left alone.</summary>
public sealed class PeriodicReplanTests(PeriodicRebalancingCluster cluster) : IClassFixture<PeriodicRebalancingCluster>
{
    [Fact]
    public async Task A_skewed_layer_is_replanned_without_being_asked_and_then_left_alone()
    {
        string model = InProcessMoeCluster.Latent;
        var reference = cluster.Reference(model);
        int d = reference.Config.HiddenSize;
        int layer = reference.FirstMoeLayer;
        var router = cluster.Grains.GetGrain<IMoeRouterGrain>(model);
        var placement = cluster.Grains.GetGrain<IExpertPlacementGrain>(model);
        int seed = TestInputs.NewSeed();
        var clock = System.Diagnostics.Stopwatch.StartNew();
        double? switchedAt = null;
        for (int i = 0; clock.Elapsed < TimeSpan.FromSeconds(20); i++)
        {
            float[] x = TestInputs.Gaussian(16 * d, seed + i);
            var reply = await router.Forward(new ForwardCall(layer, x, 16, WireDType.F32));
            double error = Metrics.RelativeError(reply.Hidden, reference.ForwardLayer(layer, x, 16));
            Assert.True(error <= 1e-6, $"seed {seed} request {i}: relative error {error:E2}");
            if (switchedAt is null && (await placement.Get()).Epoch >= 1)
            {
                switchedAt = clock.Elapsed.TotalSeconds;
            }

            // Three more seconds of traffic after the switch: three more periodic re-plans, each of which must leave it alone.
            if (switchedAt is double at && clock.Elapsed.TotalSeconds > at + 3)
            {
                break;
            }
        }

        Assert.True(switchedAt is not null, "no periodic re-plan switched the skewed layer within 20 s");
        var now = await placement.Get();
        Assert.Equal(1, now.Epoch);
        var changes = now.History.Where(h => h.Layer == layer).ToList();
        Assert.Contains(changes, h => h.Changed && h.Epoch == 1 && h.ImbalanceBefore >= 1.1);
        Assert.Contains(changes, h => !h.Changed && h.Reason.Contains("left alone", StringComparison.Ordinal));
        Assert.All(cluster.Cluster.GetActiveSilos(), s => Assert.Equal(1, cluster.Service<RoutingTables>(s).Epoch(model)));
    }
}
