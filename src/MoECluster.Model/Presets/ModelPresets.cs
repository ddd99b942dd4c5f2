using MoECluster.Model.Configuration;

namespace MoECluster.Model.Presets;

/// <summary>
/// The shapes MoECluster generates synthetic checkpoints for (DESIGN.md §2). Widths follow the public
/// Nemotron-3 configs and the LatentMoE paper's 16B-A2B ablation; the expert and layer counts are options
/// so that a full-width layer fits on a small machine.
/// </summary>
public static class ModelPresets
{
    private static MoeModelConfig Shape(int d, int? latent, int n, int k, int m, int ms, double rsf) => new()
    {
        HiddenSize = d,
        MoeLatentSize = latent,
        NRoutedExperts = n,
        NumExpertsPerTok = k,
        MoeIntermediateSize = m,
        MoeSharedExpertIntermediateSize = ms,
        NSharedExperts = 1,
        NGroup = 1,
        TopkGroup = 1,
        NormTopkProb = true,
        RoutedScalingFactor = rsf,
        LayerNormEpsilon = 1e-5,
        NumHiddenLayers = 2,
        HybridOverridePattern = "ME",
    };

    public static IReadOnlyList<ModelPreset> All { get; } =
    [
        new("tiny", "LatentMoE for tests: d 64, l 16, N 8, K 2, m 32, ms 48", Shape(64, 16, 8, 2, 32, 48, 2.5), 8, 2),
        new("tiny-standard", "standard twin of tiny: experts in d 64", Shape(64, null, 8, 2, 32, 48, 2.5), 8, 2),
        new("super-shape", "Nemotron-3 Super widths: d 4096, l 1024, K 22, m 2688, ms 5376, rsf 5.0", Shape(4096, 1024, 64, 22, 2688, 5376, 5.0), 64, 2),
        new("super-standard", "standard twin of super-shape: experts in d 4096, same N and K", Shape(4096, null, 64, 22, 2688, 5376, 5.0), 64, 2),
        new("ultra-shape", "Nemotron-3 Ultra widths: d 8192, l 2048, K 22, m 5120, ms 10240, rsf 5.0", Shape(8192, 2048, 64, 22, 5120, 10240, 5.0), 64, 2),
        new("paper16b-standard", "LatentMoE paper 16B-A2B baseline: d 2048, N 64, K 6, m 1408 (shared ms 2816 assumed)", Shape(2048, null, 64, 6, 1408, 2816, 2.5), 64, 2),
        new("paper16b-latent", "LatentMoE paper 16B-A2B latent: d 2048, l 512, N 256, K 24, m 1408", Shape(2048, 512, 256, 24, 1408, 2816, 2.5), 256, 2),
    ];

    public static ModelPreset Get(string name) =>
        All.FirstOrDefault(p => p.Name == name)
        ?? throw new ArgumentException($"unknown preset '{name}'; presets: {string.Join(", ", All.Select(p => p.Name))}", nameof(name));
}
