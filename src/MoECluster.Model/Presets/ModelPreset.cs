using MoECluster.Model.Configuration;

namespace MoECluster.Model.Presets;

/// <summary>A named model shape; the number of routed experts and of MoE layers can be overridden.</summary>
public sealed record ModelPreset(string Name, string Description, MoeModelConfig Shape, int DefaultExperts, int DefaultMoeLayers)
{
    /// <summary>
    /// The config for <paramref name="experts"/> routed experts and <paramref name="moeLayers"/> MoE layers.
    /// Layers alternate Mamba and MoE ("MEME…") as in Nemotron-H, so MoE layers sit at odd backbone indices;
    /// only the MoE layers carry tensors in a synthetic checkpoint.
    /// </summary>
    public MoeModelConfig Build(int? experts = null, int? moeLayers = null)
    {
        int n = experts ?? DefaultExperts;
        int layers = moeLayers ?? DefaultMoeLayers;
        if (layers < 1 || layers > 1000)
        {
            throw new ModelConfigException($"preset {Name}", [$"--layers = {layers} is out of range: must be 1..1000"]);
        }

        string pattern = string.Concat(Enumerable.Repeat("ME", layers));
        return (Shape with
        {
            NRoutedExperts = n,
            NumHiddenLayers = pattern.Length,
            HybridOverridePattern = pattern,
        }).Validate($"preset {Name} with {n} experts");
    }
}
