using MoECluster.Model.Checkpoints;
using MoECluster.Model.Configuration;
using MoECluster.Model.Layers;
using MoECluster.Model.Presets;
using MoECluster.Testing;

namespace MoECluster.Model.Tests.Layers;

/// <summary>
/// A checkpoint that lacks the tensors of an MoE layer its config declares is refused where it is opened, naming the
/// layers and the tensors (it used to open, and the first request that reached the layer failed).
/// </summary>
public sealed class CheckpointCompletenessTests
{
    [Fact]
    public void Open_refuses_a_checkpoint_lacking_declared_moe_layers_and_names_them()
    {
        using var dir = new TempDirectory();
        PartialCheckpoint.WriteOnlyLayerThreeOfFour(dir.Path);
        var e = Assert.Throws<InvalidDataException>(() => MoeModel.Open(dir.Path));
        Assert.Contains("declares MoE layers 0, 1, 2, 3", e.Message, StringComparison.Ordinal);
        Assert.Contains("layer(s) 0, 1, 2:", e.Message, StringComparison.Ordinal);
        Assert.Contains("backbone.layers.0.norm.weight", e.Message, StringComparison.Ordinal);
        Assert.Contains("backbone.layers.2.mixer.gate.weight", e.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("backbone.layers.3.", e.Message, StringComparison.Ordinal);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void Check_tensors_lists_what_each_declared_layer_lacks()
    {
        using var dir = new TempDirectory();
        var declared = PartialCheckpoint.WriteOnlyLayerThreeOfFour(dir.Path);
        using var tensors = CheckpointTensors.OpenDirectory(dir.Path);
        var checks = MoeModel.CheckTensors(tensors, declared);
        Assert.Equal([0, 1, 2, 3], checks.Select(c => c.Layer));
        Assert.True(checks[3].IsComplete, checks[3].Describe());
        Assert.Equal(string.Empty, checks[3].Describe());
        foreach (var check in checks.Take(3))
        {
            Assert.False(check.IsComplete);
            Assert.Empty(check.Wrong);

            // Every tensor of the layer is named: norm, gate, (bias), latent projections, shared expert, 8 experts × 2.
            Assert.Contains(MoeTensorNames.Norm(check.Layer), check.Missing);
            Assert.Contains(MoeTensorNames.Gate(check.Layer), check.Missing);
            Assert.Contains(MoeTensorNames.ExpertUp(check.Layer, 7), check.Missing);
            Assert.Contains(MoeTensorNames.ExpertDown(check.Layer, 0), check.Missing);
            Assert.All(check.Missing, name => Assert.StartsWith(MoeTensorNames.Prefix(check.Layer), name, StringComparison.Ordinal));
        }
    }

    [Fact]
    public void Check_tensors_finds_a_misshapen_tensor_from_the_header_alone()
    {
        using var dir = new TempDirectory();
        var config = ModelPresets.Get("tiny").Build(experts: 8);
        SyntheticCheckpoint.Write(dir.Path, config, 9);
        using var tensors = CheckpointTensors.OpenDirectory(dir.Path);
        Assert.All(MoeModel.CheckTensors(tensors, config), c => Assert.True(c.IsComplete, c.Describe()));

        var wider = config with { MoeIntermediateSize = config.MoeIntermediateSize + 1 };
        var checks = MoeModel.CheckTensors(tensors, wider);
        Assert.All(checks, c => Assert.Empty(c.Missing));
        Assert.Contains(checks[0].Wrong, w => w.StartsWith(MoeTensorNames.ExpertUp(config.MoeLayers[0], 0) + " has shape", StringComparison.Ordinal));
    }

    [Fact]
    public void A_complete_checkpoint_still_opens_and_forwards()
    {
        using var dir = new TempDirectory();
        var config = ModelPresets.Get("tiny").Build(experts: 8, moeLayers: 2);
        SyntheticCheckpoint.Write(dir.Path, config, 11);
        using var model = MoeModel.Open(dir.Path);
        var x = new float[3 * config.HiddenSize];
        for (int i = 0; i < x.Length; i++)
        {
            x[i] = (float)Math.Sin(i);
        }

        Assert.All(model.ForwardStack(x, 3), v => Assert.True(float.IsFinite(v)));
    }
}
