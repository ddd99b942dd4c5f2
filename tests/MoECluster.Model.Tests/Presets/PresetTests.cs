using MoECluster.Testing;
using System.Security.Cryptography;
using MoECluster.Model.Analysis;
using MoECluster.Model.Layers;
using MoECluster.Model.Presets;

namespace MoECluster.Model.Tests.Presets;

public sealed class PresetTests
{
    [Fact]
    public void Super_shape_has_nemotron_3_super_widths()
    {
        var c = ModelPresets.Get("super-shape").Build();
        Assert.Equal((4096, 1024, 2688, 5376, 22, 5.0, 64), (c.HiddenSize, c.MoeLatentSize!.Value, c.MoeIntermediateSize, c.MoeSharedExpertIntermediateSize, c.NumExpertsPerTok, c.RoutedScalingFactor, c.NRoutedExperts));
        Assert.Equal(2, c.MoeLayers.Count);
        var twin = ModelPresets.Get("super-standard").Build();
        Assert.Null(twin.MoeLatentSize);
        Assert.Equal((c.NRoutedExperts, c.NumExpertsPerTok, c.HiddenSize), (twin.NRoutedExperts, twin.NumExpertsPerTok, twin.HiddenSize));
        Assert.Equal(4.0, ModelCost.Of(c).RoutedBytesRatio);
    }

    [Fact]
    public void Paper_16b_pair_has_the_ablation_shapes()
    {
        var std = ModelPresets.Get("paper16b-standard").Build();
        var lat = ModelPresets.Get("paper16b-latent").Build();
        Assert.Equal((2048, 64, 6, 1408), (std.HiddenSize, std.NRoutedExperts, std.NumExpertsPerTok, std.MoeIntermediateSize));
        Assert.Equal((512, 256, 24), (lat.MoeLatentSize!.Value, lat.NRoutedExperts, lat.NumExpertsPerTok));
        // The accuracy variant: 4x experts and 4x K at 1/4 width routes the same bytes per token.
        Assert.Equal(ModelCost.Of(std).RoutedElementsPerTokenPerLayer, ModelCost.Of(lat).RoutedElementsPerTokenPerLayer);
    }

    [Fact]
    public void Expert_and_layer_counts_are_options()
    {
        var c = ModelPresets.Get("super-shape").Build(experts: 128, moeLayers: 3);
        Assert.Equal(128, c.NRoutedExperts);
        Assert.Equal([1, 3, 5], c.MoeLayers);
    }

    [Fact]
    public void Fewer_experts_than_top_k_is_refused()
    {
        var e = Assert.Throws<MoECluster.Model.Configuration.ModelConfigException>(() => ModelPresets.Get("super-shape").Build(experts: 16));
        Assert.Contains("num_experts_per_tok = 22", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Unknown_preset_lists_the_known_ones()
    {
        var e = Assert.Throws<ArgumentException>(() => ModelPresets.Get("mega"));
        Assert.Contains("super-shape", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Same_seed_gives_the_same_bytes_and_another_seed_other_bytes()
    {
        using var a = new TempDirectory();
        using var b = new TempDirectory();
        using var c = new TempDirectory();
        var config = ModelPresets.Get("tiny").Build(experts: 12);
        SyntheticCheckpoint.Write(a.Path, config, 42);
        SyntheticCheckpoint.Write(b.Path, config, 42);
        SyntheticCheckpoint.Write(c.Path, config, 43);
        static string Hash(string dir) => Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(Path.Combine(dir, "model.safetensors"))));
        Assert.Equal(Hash(a.Path), Hash(b.Path));
        Assert.NotEqual(Hash(a.Path), Hash(c.Path));
    }

    [Theory]
    [InlineData("tiny")]
    [InlineData("tiny-standard")]
    public void Synthetic_weights_keep_activations_order_one(string preset)
    {
        using var dir = new TempDirectory();
        var config = ModelPresets.Get(preset).Build();
        SyntheticCheckpoint.Write(dir.Path, config, 5);
        SyntheticCheckpoint.WriteSampleInput(dir.File("x.safetensors"), config.HiddenSize, 32, 5);
        using var model = MoeModel.Open(dir.Path);
        float[] x = MoECluster.Model.Checkpoints.HiddenStatesFile.Read(dir.File("x.safetensors"), config.HiddenSize, out int tokens);
        float[] y = model.ForwardLayer(model.FirstMoeLayer, x, tokens);
        double rms = Math.Sqrt(y.Sum(v => (double)v * v) / y.Length);
        Assert.InRange(rms, 0.1, 10);
        float[] stack = model.ForwardStack(x, tokens);
        double stackRms = Math.Sqrt(stack.Sum(v => (double)v * v) / stack.Length);
        Assert.InRange(stackRms, 0.5, 20);
    }
}
