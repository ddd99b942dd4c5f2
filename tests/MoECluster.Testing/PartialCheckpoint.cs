using MoECluster.Model.Configuration;
using MoECluster.Model.Presets;

namespace MoECluster.Testing;

/// <summary>Checkpoints that do not hold every tensor their config.json declares.</summary>
public static class PartialCheckpoint
{
    /// <summary>
    /// A tiny checkpoint (8 experts) holding only MoE layer 3, under a config.json whose pattern ("EEEE") declares layers
    /// 0, 1, 2 and 3 MoE; returns the declared config.
    /// </summary>
    public static MoeModelConfig WriteOnlyLayerThreeOfFour(string directory, ulong seed = 5)
    {
        var tiny = ModelPresets.Get("tiny").Build(experts: 8, moeLayers: 1);
        var onlyThree = tiny with { NumHiddenLayers = 4, HybridOverridePattern = "MMME" };
        SyntheticCheckpoint.Write(directory, onlyThree, seed);
        var declared = tiny with { NumHiddenLayers = 4, HybridOverridePattern = "EEEE" };
        File.WriteAllText(Path.Combine(directory, "config.json"), declared.ToJson());
        return declared;
    }
}
