using MoECluster.Testing;
using MoECluster.Kernels.Cpu;
using MoECluster.Model.Layers;
using MoECluster.Model.Presets;

namespace MoECluster.Kernels.Tests.Cpu;

/// <summary>A whole MoE layer and stack on the managed backend compute what the reference backend computes.</summary>
public sealed class ManagedLayerTests
{
    [Theory]
    [InlineData("tiny", 1)]
    [InlineData("tiny", 37)]
    [InlineData("tiny-standard", 64)]
    [InlineData("paper16b-latent", 5)]
    public void Layer_and_stack_on_the_managed_backend_match_the_reference_backend(string preset, int tokens)
    {
        var dir = Directory.CreateTempSubdirectory("moecluster-managed-layer-");
        try
        {
            var config = preset.StartsWith("paper", StringComparison.Ordinal)
                ? ModelPresets.Get(preset).Build(experts: 32, moeLayers: 1) with { NumExpertsPerTok = 8 }
                : ModelPresets.Get(preset).Build(experts: 16);
            SyntheticCheckpoint.Write(dir.FullName, config.Validate(), (ulong)Random.Shared.Next());
            using var reference = MoeModel.Open(dir.FullName);
            using var managed = MoeModel.Open(dir.FullName, new ManagedCpuBackend());
            var rng = new Random();
            float[] x = [.. Enumerable.Range(0, tokens * config.HiddenSize).Select(_ => (float)((rng.NextDouble() * 2) - 1))];
            foreach (int layer in config.MoeLayers)
            {
                Assert.True(Metrics.RelativeError(managed.ForwardLayer(layer, x, tokens), reference.ForwardLayer(layer, x, tokens)) <= 1e-5);
            }

            Assert.True(Metrics.RelativeError(managed.ForwardStack(x, tokens), reference.ForwardStack(x, tokens)) <= 1e-5);
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }
}
