using System.Collections.Frozen;
using MoECluster.Model.Configuration;

namespace MoECluster.Model.Presets;

/// <summary>One model of a served pair: its id on the cluster, its preset, its config and where it lives.</summary>
public sealed record PairMember(string Id, string Preset, MoeModelConfig Config, string Directory)
{
    /// <summary>The routing skew the checkpoint is written with (<see cref="GateSkew"/>), or null.</summary>
    public GateSkew? Skew { get; init; }
}

/// <summary>
/// The standard + latent model pairs that <c>moecluster run</c> and the launcher generate and serve: per pair name,
/// a LatentMoE preset and its standard twin of the same widths, written to <c>&lt;models-dir&gt;/&lt;preset&gt;-&lt;experts&gt;x&lt;layers&gt;</c>
/// so that every tool finds (and reuses) the same directories.
/// </summary>
public static class ModelPairs
{
    private static readonly FrozenDictionary<string, (string Latent, string Standard)> Pairs = new Dictionary<string, (string Latent, string Standard)>
    {
        ["tiny"] = ("tiny", "tiny-standard"),
        ["super"] = ("super-shape", "super-standard"),
        ["paper16b"] = ("paper16b-latent", "paper16b-standard"),
    }.ToFrozenDictionary();

    /// <summary>The pair names: tiny, super (Nemotron-3 Super widths), paper16b.</summary>
    public static IReadOnlyList<string> Names { get; } = ["tiny", "super", "paper16b"];

    /// <summary>
    /// The two models of <paramref name="pair"/> (standard first, then latent) with <paramref name="experts"/> routed
    /// experts (null: the preset's) and <paramref name="layers"/> MoE layers, as absolute directories under
    /// <paramref name="modelsDir"/>; with <paramref name="skew"/>, skewed routing in directories of their own
    /// (<c>…-zipf1.2</c>).
    /// </summary>
    public static IReadOnlyList<PairMember> Plan(string pair, int? experts, int layers, string modelsDir, GateSkew? skew = null)
    {
        if (!Pairs.TryGetValue(pair, out var names))
        {
            throw new ArgumentException($"unknown preset '{pair}'; presets: {string.Join(", ", Names)}", nameof(pair));
        }

        return [Member("standard", names.Standard, experts, layers, modelsDir, skew), Member("latent", names.Latent, experts, layers, modelsDir, skew)];
    }

    private static PairMember Member(string id, string presetName, int? experts, int layers, string modelsDir, GateSkew? skew)
    {
        var config = ModelPresets.Get(presetName).Build(experts, layers);
        string suffix = skew is null ? string.Empty : "-" + skew.ToString().Replace(":", string.Empty, StringComparison.Ordinal);
        string directory = Path.GetFullPath(Path.Combine(modelsDir, $"{presetName}-{config.NRoutedExperts}x{layers}{suffix}"));
        return new PairMember(id, presetName, config, directory) { Skew = skew };
    }
}
