using MoECluster.Model.Analysis;
using MoECluster.Model.Layers;
using MoECluster.Model.Presets;
using MoECluster.Model.Routing;
using MoECluster.Testing;

namespace MoECluster.Model.Tests.Analysis;

/// <summary>The floor arithmetic of <c>bench --layer-only</c>, against hand-computed values.</summary>
public sealed class LayerFloorsTests
{
    [Fact]
    public void A_super_shape_token_costs_gate_latent_k_experts_and_shared_expert_flops()
    {
        // gate 2·64·4096 = 524,288; W_down + W_up 2·2·1024·4096 = 16,777,216; 22 experts · 2·2·1024·2688 = 242,221,056;
        // shared 2·2·4096·5376 = 88,080,384.
        var config = ModelPresets.Get("super-shape").Build(experts: 64, moeLayers: 1);
        Assert.Equal(524_288L + 16_777_216 + 242_221_056 + 88_080_384, LayerFloors.FlopsPerToken(config));
    }

    [Fact]
    public void A_tiny_token_costs_its_hand_computed_flops_with_and_without_latent_and_shared_expert()
    {
        // tiny: d 64, l 16, N 8, K 2, m 32, ms 48: gate 1,024 + latent 4,096 + experts 2·4·16·32 = 4,096 + shared 12,288.
        var tiny = ModelPresets.Get("tiny").Build();
        Assert.Equal(21_504L, LayerFloors.FlopsPerToken(tiny));

        // standard twin: experts in d = 64, no W_down/W_up: 1,024 + 2·4·64·32 = 16,384 + 12,288.
        Assert.Equal(29_696L, LayerFloors.FlopsPerToken(ModelPresets.Get("tiny-standard").Build()));

        // no shared expert: the 12,288 go.
        Assert.Equal(9_216L, LayerFloors.FlopsPerToken(tiny with { NSharedExperts = 0 }));
    }

    [Fact]
    public void Distinct_experts_and_rows_per_expert_count_each_expert_once_per_batch()
    {
        var plan = new RoutingPlan(tokens: 3, topK: 2);
        int[] experts = [0, 3, 3, 1, 0, 3];
        experts.CopyTo(plan.Experts, 0);
        Assert.Equal([0, 1, 3], LayerFloors.DistinctExperts(plan));
        Assert.Equal([2, 1, 0, 3], LayerFloors.RowsPerExpert(plan, 4));
        Assert.Throws<ArgumentOutOfRangeException>(() => LayerFloors.RowsPerExpert(plan, 3));
    }

    [Fact]
    public void Weight_bytes_count_the_fixed_matrices_and_each_distinct_expert_at_element_size()
    {
        // tiny, BF16, 2 experts: gate 8·64 + latent 2·16·64 + shared 2·64·48 + 2 · 2·16·32 = 10,752 elements.
        var tiny = ModelPresets.Get("tiny").Build();
        Assert.Equal(21_504L, LayerFloors.WeightBytes(tiny, 2, 2));
        Assert.Equal(43_008L, LayerFloors.WeightBytes(tiny, 4, 2));

        // super-shape, BF16, all 64 experts: (64·4096 + 2·1024·4096 + 2·4096·5376 + 64·2·1024·2688) · 2.
        var super = ModelPresets.Get("super-shape").Build(experts: 64, moeLayers: 1);
        Assert.Equal(810_024_960L, LayerFloors.WeightBytes(super, 2, 64));
        Assert.Throws<ArgumentOutOfRangeException>(() => LayerFloors.WeightBytes(super, 2, 65));
    }

    [Fact]
    public void Weight_bytes_of_loaded_weights_are_read_at_the_stored_precision_once_per_expert()
    {
        using var dir = new TempDirectory();
        var config = ModelPresets.Get("tiny").Build();
        SyntheticCheckpoint.Write(dir.Path, config, 5); // BF16 weights
        using var model = MoeModel.Open(dir.Path);
        var weights = model.Mixer(model.FirstMoeLayer).Weights;
        Assert.Equal(LayerFloors.WeightBytes(config, 2, 2), LayerFloors.WeightBytes(weights, [4, 1, 4]));
        Assert.Equal(LayerFloors.WeightBytes(config, 2, 0), LayerFloors.WeightBytes(weights, []));

        var router = model.RouterMixer(model.FirstMoeLayer).Weights; // no routed experts loaded
        Assert.Throws<ArgumentException>(() => LayerFloors.WeightBytes(router, [1]));
    }

    [Fact]
    public void Combined_throughput_is_total_flops_over_the_sum_of_each_gemms_time()
    {
        // 100 FLOPs at 100/s (1 s) and 300 FLOPs at 300/s (1 s): 400 FLOPs in 2 s.
        Assert.Equal(200.0, LayerFloors.CombinedThroughput([(100, 100), (300, 300)]), 12);
        Assert.Throws<ArgumentOutOfRangeException>(() => LayerFloors.CombinedThroughput([(100, 0)]));
        Assert.Throws<ArgumentException>(() => LayerFloors.CombinedThroughput([]));
    }

    [Fact]
    public void Efficiency_is_the_larger_floor_over_the_measured_time()
    {
        // 1 GFLOP at 100 GFLOP/s = 10 ms; 2 GB at 100 GB/s = 20 ms; measured 40 ms.
        var floor = LayerFloors.Of(1e9, 2_000_000_000, 1e11, 1e11, 0.04);
        Assert.Equal(0.01, floor.ComputeSeconds, 12);
        Assert.Equal(0.02, floor.BytesSeconds, 12);
        Assert.Equal(0.5, floor.Efficiency, 12);
        Assert.Equal("bytes", floor.Bound);

        var compute = LayerFloors.Of(4e9, 2_000_000_000, 1e11, 1e11, 0.08);
        Assert.Equal(0.5, compute.Efficiency, 12);
        Assert.Equal("compute", compute.Bound);
        Assert.Throws<ArgumentOutOfRangeException>(() => LayerFloors.Of(1e9, 1, 1e11, 1e11, 0));
    }

    [Fact]
    public void The_read_probe_over_a_small_buffer_gives_a_sane_bandwidth()
    {
        // Sanity only: 8 MiB sits in the caches, so this says nothing of the memory's bandwidth.
        var r = MemoryReadBandwidth.Measure(8L << 20, threads: 2, runs: 3);
        Assert.True(double.IsFinite(r.BytesPerSecond) && r.BytesPerSecond > 1e7 && r.BytesPerSecond < 1e13, $"{r.BytesPerSecond:E3} B/s");
        Assert.Equal(8L << 20, r.BufferBytes);
        Assert.Equal(2, r.Threads);
        Assert.Equal(3, r.Runs);
        Assert.Throws<ArgumentOutOfRangeException>(() => MemoryReadBandwidth.Measure(64, threads: 2));
    }

    [Fact]
    public void The_read_probe_keeps_reading_for_its_minimum_time_and_counts_every_pass()
    {
        // A 1 MiB pass takes well under a millisecond: 0.2 s of them is far more than the 3 runs asked for.
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var r = MemoryReadBandwidth.Measure(1L << 20, threads: 2, runs: 3, minSeconds: 0.2);
        Assert.True(clock.Elapsed.TotalSeconds >= 0.2, $"{clock.Elapsed.TotalSeconds} s");
        Assert.True(r.Runs > 3, $"{r.Runs} runs");
    }
}
