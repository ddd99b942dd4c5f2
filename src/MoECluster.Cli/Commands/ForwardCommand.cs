using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using MoECluster.Model.Checkpoints;
using MoECluster.Model.Layers;

namespace MoECluster.Cli.Commands;

/// <summary><c>moecluster forward</c>: one MoE layer's mixer output, or the whole MoE stack, in process.</summary>
internal static class ForwardCommand
{
    public static Command Create(TextWriter output, TextWriter error)
    {
        var model = new Option<string>("--model") { Description = "Model directory (config.json + model.safetensors or an index and shards).", Required = true };
        var input = new Option<string>("--input") { Description = "Input safetensors with 'hidden_states' [T, d] (F32, BF16, F16 or F64).", Required = true };
        var outputPath = new Option<string>("--output") { Description = "Output safetensors; 'hidden_states' [T, d] F32.", Required = true };
        var layer = new Option<int?>("--layer") { Description = "Backbone index of the MoE layer whose mixer output y = mixer(x) to compute (input already normed). Default: the first MoE layer." };
        var stack = new Option<bool>("--stack") { Description = "Run every MoE layer in order: x <- x + mixer_l(RMSNorm_l(x))." };
        var command = new Command("forward", "Compute an MoE layer (or the MoE stack) for a batch of hidden states, in process.")
        {
            model, input, outputPath, layer, stack,
        };
        command.SetAction(parse => VerbRunner.Guard("forward", error, () =>
        {
            int? layerIndex = parse.GetValue(layer);
            bool runStack = parse.GetValue(stack);
            if (layerIndex is not null && runStack)
            {
                throw new UsageException("--layer and --stack exclude each other: --stack runs every MoE layer");
            }

            string outFile = Path.GetFullPath(parse.GetValue(outputPath)!);
            Directory.CreateDirectory(Path.GetDirectoryName(outFile)!);
            using var moe = MoeModel.Open(parse.GetValue(model)!);
            int d = moe.Config.HiddenSize;
            float[] x = HiddenStatesFile.Read(parse.GetValue(input)!, d, out int tokens);
            int target = layerIndex ?? moe.FirstMoeLayer;
            if (!runStack)
            {
                moe.Mixer(target);
            }

            var clock = Stopwatch.StartNew();
            float[] y = runStack ? moe.ForwardStack(x, tokens) : moe.ForwardLayer(target, x, tokens);
            double seconds = clock.Elapsed.TotalSeconds;
            string what = runStack ? $"stack of {moe.Config.MoeLayers.Count} MoE layers" : $"layer {target}";
            HiddenStatesFile.Write(outFile, y, tokens, d, new Dictionary<string, string>
            {
                ["producer"] = "moecluster forward",
                ["what"] = what,
            });
            using var self = Process.GetCurrentProcess();
            output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{what} ({(moe.Config.IsLatent ? $"latent l={moe.Config.MoeLatentSize}" : "standard")}, d={d}, N={moe.Config.NRoutedExperts}, K={moe.Config.NumExpertsPerTok}): {tokens} tokens in {seconds:F3} s, peak working set {self.PeakWorkingSet64 / (1024.0 * 1024.0):F0} MiB{MemorySplit()} -> {outFile}"));
            return CliApp.ExitOk;
        }));
        return command;
    }

    /// <summary>
    /// On Linux, the resident memory split into file-backed pages (the memory-mapped weights, shared with the
    /// page cache) and anonymous memory (activations and buffers): shows the weights are not held twice.
    /// </summary>
    private static string MemorySplit()
    {
        const string status = "/proc/self/status";
        if (!File.Exists(status))
        {
            return string.Empty;
        }

        string Field(string name) => File.ReadLines(status).FirstOrDefault(l => l.StartsWith(name, StringComparison.Ordinal))?[name.Length..].Trim() ?? "?";
        return $" (now: mapped weights {Field("RssFile:")}, anonymous {Field("RssAnon:")})";
    }
}
