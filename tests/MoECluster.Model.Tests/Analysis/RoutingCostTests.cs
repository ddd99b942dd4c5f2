using MoECluster.Model.Analysis;
using MoECluster.Model.Configuration;
using MoECluster.Model.Presets;

namespace MoECluster.Model.Tests.Analysis;

/// <summary>
/// The LatentMoE paper's cost accounting (<c>moecluster cost</c>): its two worked numbers for Qwen3-235B-A22B on GB200,
/// and the layer estimate against hand-computed values.
/// </summary>
public sealed class RoutingCostTests
{
    // Qwen3-235B-A22B: d 4096, expert intermediate m 1536, 128 experts, top-8.
    private const int QwenHidden = 4096;
    private const int QwenIntermediate = 1536;

    private static readonly HardwareProfile Gb200 = HardwareProfile.Get("gb200-nvl72");

    [Fact]
    public void The_papers_Qwen3_235B_example_on_GB200_turns_compute_bound_only_above_about_1419_tokens_per_expert()
    {
        // X = 20e15 FLOP/s · 0.5 B / 8e12 B/s = 1250 FLOPs per element read; t* = 1250·w·m / (2·w·m − 1250·(w + m)).
        Assert.Equal(1250, Gb200.FlopsPerElementRead, 9);
        double threshold = RoutingCost.ComputeBoundTokensPerExpert(QwenHidden, QwenIntermediate, Gb200);
        Assert.Equal(1419, Math.Round(threshold));
        Assert.Equal(7_864_320_000.0 / 5_542_912.0, threshold, 6);

        // At the threshold the intensity is the ridge point, below it less, above it more.
        double ridge = Gb200.PeakFlopsPerSecond / Gb200.MemoryBytesPerSecond;
        Assert.Equal(ridge, RoutingCost.ArithmeticIntensity(QwenHidden, QwenIntermediate, threshold, 0.5), 6);
        Assert.True(RoutingCost.ArithmeticIntensity(QwenHidden, QwenIntermediate, 1000, 0.5) < ridge);
        Assert.True(RoutingCost.ArithmeticIntensity(QwenHidden, QwenIntermediate, 2000, 0.5) > ridge);
    }

    [Fact]
    public void With_FP4_dispatch_and_BF16_combine_the_papers_example_communicates_about_nine_times_longer_than_it_computes()
    {
        // (0.5 + 2) B · 20e15 / (2 · 2 · 1536 · 900e9) = 9.04.
        double ratio = RoutingCost.CommunicationOverComputation(QwenIntermediate, 0.5, 2, Gb200);
        Assert.Equal(9, Math.Round(ratio));
        Assert.Equal(2.5 * 20e15 / (4.0 * 1536 * 900e9), ratio, 9);

        // Both directions in BF16: (2 + 2) / 2.5 times more; NVFP4's block scales (1 B per 16 elements) a little more.
        Assert.Equal(ratio * 4 / 2.5, RoutingCost.CommunicationOverComputation(QwenIntermediate, 2, 2, Gb200), 9);
    }

    [Fact]
    public void A_never_compute_bound_expert_has_an_infinite_threshold()
    {
        // w = m = 64: the intensity approaches 2·64·64 / 128 = 64 FLOPs per element, below GB200's 1250.
        Assert.Equal(double.PositiveInfinity, RoutingCost.ComputeBoundTokensPerExpert(64, 64, Gb200));
    }

    [Fact]
    public void The_layer_estimate_counts_replicated_weights_active_experts_flops_and_routed_rows()
    {
        // super-shape at 512 experts, EP 8, 4 tokens per GPU: 32 global tokens, 512/8 = 64 experts per GPU, each active
        // with probability 1 − (1 − 22/512)^32.
        MoeModelConfig config = ModelPresets.Get("super-shape").Build(experts: 512, moeLayers: 1);
        var profile = HardwareProfile.Get("h100-nvlink");
        var estimate = RoutingCost.Estimate(config, profile, tokens: 4, expertParallel: 8, dispatchBytes: 2, combineBytes: 2);

        double active = 64 * (1 - Math.Pow(1 - (22.0 / 512), 32));
        double replicated = (512.0 * 4096) + (2.0 * 1024 * 4096) + (2.0 * 4096 * 5376);
        double weightBytes = (replicated + (active * 2 * 1024 * 2688)) * 1; // FP8: 1 B per element
        Assert.Equal(active, estimate.ActiveExpertsPerGpu, 9);
        Assert.Equal(32.0 * 22 / 512, estimate.TokensPerExpert, 9);
        Assert.Equal(weightBytes / 4, estimate.WeightBytesPerToken, 3);
        Assert.Equal(22.0 * 1024 * 4, estimate.RoutedBytesPerToken, 9);
        Assert.Equal(LayerFloors.FlopsPerToken(config), estimate.FlopsPerToken, 9);
        Assert.Equal(weightBytes / 3.35e12, estimate.MemorySeconds, 12);
        Assert.Equal(4.0 * LayerFloors.FlopsPerToken(config) / 1979e12, estimate.ComputeSeconds, 15);
        Assert.Equal(4.0 * 22 * 1024 * 4 / 450e9, estimate.CommunicationSeconds, 15);
        Assert.Equal("memory", estimate.Bound);

        // The standard twin routes d-wide rows: d/ℓ = 4 times the bytes per token.
        var standard = RoutingCost.Estimate(config with { MoeLatentSize = null }, profile, 4, 8, 2, 2);
        Assert.Equal(4 * estimate.RoutedBytesPerToken, standard.RoutedBytesPerToken, 9);
        Assert.Equal("standard", standard.Mode);
    }

    [Fact]
    public void At_a_large_batch_over_InfiniBand_the_layer_is_communication_bound()
    {
        MoeModelConfig config = ModelPresets.Get("super-shape").Build(experts: 512, moeLayers: 1);
        var estimate = RoutingCost.Estimate(config, HardwareProfile.Get("h100-ib400"), tokens: 4096, expertParallel: 64, dispatchBytes: 2, combineBytes: 2);
        Assert.Equal("communication", estimate.Bound);
        Assert.Equal(estimate.CommunicationSeconds, estimate.FloorSeconds);
    }

    [Fact]
    public void Experts_that_do_not_split_over_the_expert_parallel_degree_are_refused()
    {
        MoeModelConfig config = ModelPresets.Get("super-shape").Build(experts: 64, moeLayers: 1);
        Assert.Throws<ArgumentException>(() => RoutingCost.Estimate(config, Gb200, 1, 3, 2, 2));
    }
}
