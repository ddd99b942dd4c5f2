using System.Globalization;

namespace MoECluster.Model.Layers;

/// <summary>Hugging Face tensor names of one Nemotron-H MoE layer (DESIGN.md §2).</summary>
public static class MoeTensorNames
{
    public static string Prefix(int layer) => string.Create(CultureInfo.InvariantCulture, $"backbone.layers.{layer}.");

    public static string Norm(int layer) => Prefix(layer) + "norm.weight";

    public static string Gate(int layer) => Prefix(layer) + "mixer.gate.weight";

    public static string GateBias(int layer) => Prefix(layer) + "mixer.gate.e_score_correction_bias";

    public static string LatentDown(int layer) => Prefix(layer) + "mixer.fc1_latent_proj.weight";

    public static string LatentUp(int layer) => Prefix(layer) + "mixer.fc2_latent_proj.weight";

    public static string ExpertUp(int layer, int expert) =>
        string.Create(CultureInfo.InvariantCulture, $"{Prefix(layer)}mixer.experts.{expert}.up_proj.weight");

    public static string ExpertDown(int layer, int expert) =>
        string.Create(CultureInfo.InvariantCulture, $"{Prefix(layer)}mixer.experts.{expert}.down_proj.weight");

    public static string SharedUp(int layer) => Prefix(layer) + "mixer.shared_experts.up_proj.weight";

    public static string SharedDown(int layer) => Prefix(layer) + "mixer.shared_experts.down_proj.weight";
}
