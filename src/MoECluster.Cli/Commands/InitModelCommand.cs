using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using MoECluster.Model.Presets;

namespace MoECluster.Cli.Commands;

/// <summary><c>moecluster init-model</c>: a synthetic checkpoint of a preset shape, deterministic from a seed.</summary>
internal static class InitModelCommand
{
    public static Command Create(TextWriter output, TextWriter error)
    {
        var preset = new Option<string>("--preset")
        {
            Description = "Shape: " + string.Join("; ", ModelPresets.All.Select(p => $"{p.Name} ({p.Description})")),
            Required = true,
        };
        preset.AcceptOnlyFromAmong([.. ModelPresets.All.Select(p => p.Name)]);
        var outDir = new Option<string>("--out") { Description = "Directory to write config.json, model.safetensors and sample_input.safetensors into.", Required = true };
        var experts = new Option<int?>("--experts") { Description = "Number of routed experts (default: the preset's)." };
        var layers = new Option<int?>("--layers") { Description = "Number of MoE layers (default: the preset's, 2)." };
        var seed = new Option<ulong>("--seed") { Description = "Seed; the same seed gives the same bytes.", DefaultValueFactory = _ => 1UL };
        var sampleTokens = new Option<int>("--sample-tokens") { Description = "Tokens in sample_input.safetensors.", DefaultValueFactory = _ => 8 };
        var force = new Option<bool>("--force") { Description = "Overwrite an existing model in --out." };
        var skew = new Option<string?>("--gate-skew")
        {
            Description = "Skew the routing like a trained router's: zipf:S makes expert e take a share of tokens proportional to (e + 1)^-S (capped at every token), through a correction bias fitted to each layer's gate.",
        };
        var command = new Command("init-model", "Write a synthetic checkpoint in the Hugging Face layout (BF16 weights, F32 gate bias).")
        {
            preset, outDir, experts, layers, seed, sampleTokens, force, skew,
        };
        command.SetAction(parse => VerbRunner.Guard("init-model", error, () =>
        {
            var p = ModelPresets.Get(parse.GetValue(preset)!);
            var config = p.Build(parse.GetValue(experts), parse.GetValue(layers));
            string dir = parse.GetValue(outDir)!;
            int tokens = parse.GetValue(sampleTokens);
            if (tokens < 1 || tokens > 1 << 16)
            {
                throw new UsageException($"--sample-tokens = {tokens} is out of range: must be 1..65536");
            }

            ulong s = parse.GetValue(seed);
            GateSkew? gateSkew = parse.GetValue(skew) is string text ? ParseSkew(text) : null;
            if (File.Exists(Path.Combine(dir, "model.safetensors")) && !parse.GetValue(force))
            {
                if (!SyntheticCheckpoint.IsSame(dir, config, s, gateSkew))
                {
                    throw new UsageException($"{dir} already holds another model.safetensors; pass --force to overwrite");
                }

                SyntheticCheckpoint.WriteSampleInput(Path.Combine(dir, SyntheticCheckpoint.SampleInputFile), config.HiddenSize, tokens, s);
                output.WriteLine($"{p.Name}: {dir} already holds this model (same config and seed); wrote only {SyntheticCheckpoint.SampleInputFile}");
                return CliApp.ExitOk;
            }

            var clock = Stopwatch.StartNew();
            long lastPercent = -1;
            var progress = new SyncProgress<(long Done, long Total)>(v =>
            {
                long percent = v.Done * 100 / Math.Max(1, v.Total);
                if (v.Total >= 64L << 20 && percent / 10 != lastPercent / 10)
                {
                    lastPercent = percent;
                    error.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  {percent,3}% of {v.Total / (1024.0 * 1024.0):F0} MiB"));
                }
            });
            SyntheticCheckpoint.Write(dir, config, s, progress, gateSkew);
            SyntheticCheckpoint.WriteSampleInput(Path.Combine(dir, SyntheticCheckpoint.SampleInputFile), config.HiddenSize, tokens, s);
            output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{p.Name}: {config.MoeLayers.Count} MoE layers x {config.NRoutedExperts} experts written to {dir} in {clock.Elapsed.TotalSeconds:F1} s (seed {s}{(gateSkew is null ? string.Empty : $", gate skew {gateSkew}")})"));
            return CliApp.ExitOk;
        }));
        return command;
    }

    internal static GateSkew ParseSkew(string text)
    {
        try
        {
            return GateSkew.Parse(text);
        }
        catch (FormatException e)
        {
            throw new UsageException($"--gate-skew: {e.Message}");
        }
    }

    /// <summary>Reports on the caller's thread (Progress&lt;T&gt; would post to the thread pool).</summary>
    private sealed class SyncProgress<T>(Action<T> report) : IProgress<T>
    {
        public void Report(T value) => report(value);
    }
}
