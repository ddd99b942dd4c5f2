using System.CommandLine;
using System.Globalization;
using MoECluster.Model.Analysis;
using MoECluster.Model.Configuration;
using MoECluster.Model.Layers;

namespace MoECluster.Cli.Commands;

/// <summary><c>moecluster info</c>: shapes, parameter counts and routed bytes per token, standard vs latent.</summary>
internal static class InfoCommand
{
    public static Command Create(TextWriter output, TextWriter error)
    {
        var model = new Option<string>("--model") { Description = "Model directory.", Required = true };
        var command = new Command("info", "Show a model's shapes, parameter counts (total / active per token) and routed bytes per token.")
        {
            model,
        };
        command.SetAction(parse => VerbRunner.Guard("info", error, () =>
        {
            using var moe = MoeModel.Open(parse.GetValue(model)!);
            foreach (int layer in moe.Config.MoeLayers)
            {
                moe.Mixer(layer); // checks every tensor's presence and shape
            }

            Print(output, moe.Config, moe.Directory);
            return CliApp.ExitOk;
        }));
        return command;
    }

    internal static void Print(TextWriter o, MoeModelConfig c, string directory)
    {
        var cost = ModelCost.Of(c);
        var inv = CultureInfo.InvariantCulture;
        o.WriteLine($"model            {directory}");
        o.WriteLine($"design           {(c.IsLatent ? "LatentMoE" : "standard MoE")}");
        o.WriteLine(string.Create(inv, $"hidden d         {c.HiddenSize}"));
        o.WriteLine(c.MoeLatentSize is int l ? string.Create(inv, $"latent l         {l}  (d/l = {(double)c.HiddenSize / l:0.##})") : "latent l         none (experts in d)");
        o.WriteLine(string.Create(inv, $"routed experts   N {c.NRoutedExperts}, top-K {c.NumExpertsPerTok}, groups {c.NGroup} (keep {c.TopkGroup}), scoring {c.ScoringFunc.ToString().ToLowerInvariant()}, norm_topk_prob {c.NormTopkProb}, routed_scaling_factor {c.RoutedScalingFactor}"));
        o.WriteLine(string.Create(inv, $"expert           up [{c.MoeIntermediateSize}, {c.RoutedWidth}], down [{c.RoutedWidth}, {c.MoeIntermediateSize}], relu2"));
        o.WriteLine(c.HasSharedExpert ? string.Create(inv, $"shared expert    up [{c.MoeSharedExpertIntermediateSize}, {c.HiddenSize}], down [{c.HiddenSize}, {c.MoeSharedExpertIntermediateSize}]") : "shared expert    none");
        o.WriteLine(string.Create(inv, $"MoE layers       {c.MoeLayers.Count} of {c.NumHiddenLayers}: {string.Join(", ", c.MoeLayers)}"));
        o.WriteLine(string.Create(inv, $"parameters       {Count(cost.TotalParameters)} total, {Count(cost.ActiveParametersPerToken)} active per token (MoE layers only)"));
        long bf16 = cost.RoutedBytesPerTokenPerLayer(2);
        long std = cost.StandardRoutedBytesPerTokenPerLayer(2);
        o.WriteLine(string.Create(inv, $"routed bytes     per token per MoE layer, bf16, dispatch + combine (2 x K x width x 2 B):"));
        o.WriteLine(string.Create(inv, $"  standard       {std,10:N0} B  (width d = {c.HiddenSize})"));
        o.WriteLine(string.Create(inv, $"  this model     {bf16,10:N0} B  (width {c.RoutedWidth}){(c.IsLatent ? $"  -> {cost.RoutedBytesRatio:0.##}x fewer" : string.Empty)}"));
    }

    private static string Count(long n) => n switch
    {
        >= 1_000_000_000 => string.Create(CultureInfo.InvariantCulture, $"{n / 1e9:0.###} B"),
        >= 1_000_000 => string.Create(CultureInfo.InvariantCulture, $"{n / 1e6:0.###} M"),
        _ => n.ToString("N0", CultureInfo.InvariantCulture),
    };
}
