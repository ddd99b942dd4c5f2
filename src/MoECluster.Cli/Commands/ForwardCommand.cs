using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using MoECluster.Gateway;
using MoECluster.Wire;
using MoECluster.Model.Checkpoints;
using MoECluster.Model.Configuration;
using MoECluster.Model.Layers;

namespace MoECluster.Cli.Commands;

/// <summary>
/// <c>moecluster forward</c>: one MoE layer's mixer output, or the whole MoE stack — in process, or on a running
/// cluster with <c>--cluster URL</c>.
/// </summary>
internal static class ForwardCommand
{
    public static Command Create(TextWriter output, TextWriter error)
    {
        var model = new Option<string?>("--model") { Description = "Model directory (config.json + model.safetensors or an index and shards). Required in process." };
        var input = new Option<string>("--input") { Description = "Input safetensors with 'hidden_states' [T, d] (F32, BF16, F16 or F64).", Required = true };
        var outputPath = new Option<string>("--output") { Description = "Output safetensors; 'hidden_states' [T, d] F32.", Required = true };
        var layer = new Option<int?>("--layer") { Description = "Backbone index of the MoE layer whose mixer output y = mixer(x) to compute (input already normed). Default: the first MoE layer." };
        var stack = new Option<bool>("--stack") { Description = "Run every MoE layer in order: x <- x + mixer_l(RMSNorm_l(x))." };
        var cluster = new Option<string?>("--cluster") { Description = "Gateway URL of a running cluster (e.g. http://127.0.0.1:8080): compute there instead of in process." };
        var modelId = new Option<string?>("--model-id") { Description = "With --cluster: the served model id (default: the cluster's default model)." };
        var backend = new Option<string>("--backend") { Description = $"In process: {MoECluster.Cluster.Hosting.ComputeBackends.Description}.", DefaultValueFactory = _ => "auto" };
        backend.AcceptOnlyFromAmong([.. MoECluster.Cluster.Hosting.ComputeBackends.Names]);
        var wire = WireOption.CreateOptional("With --cluster: payload element type between router and shards (default: the cluster's).");
        var apiKey = ApiKeyOption.Create();
        var command = new Command("forward", "Compute an MoE layer (or the MoE stack) for a batch of hidden states, in process or on a cluster.")
        {
            model, input, outputPath, layer, stack, cluster, modelId, wire.Wire, wire.Dispatch, wire.Combine, backend, apiKey,
        };
        command.SetAction((parse, cancel) => VerbRunner.GuardAsync("forward", error, async () =>
        {
            int? layerIndex = parse.GetValue(layer);
            bool runStack = parse.GetValue(stack);
            if (layerIndex is not null && runStack)
            {
                throw new UsageException("--layer and --stack exclude each other: --stack runs every MoE layer");
            }

            string outFile = Path.GetFullPath(parse.GetValue(outputPath)!);
            Directory.CreateDirectory(Path.GetDirectoryName(outFile)!);
            string? url = parse.GetValue(cluster);
            if (url is not null)
            {
                return await OnClusterAsync(output, url, parse.GetValue(modelId), parse.GetValue(input)!, outFile, layerIndex, runStack, wire.Choice(parse), ApiKeyOption.Resolve(parse.GetValue(apiKey)), cancel);
            }

            string dir = parse.GetValue(model) ?? throw new UsageException("--model is required without --cluster");
            var compute = MoECluster.Cluster.Hosting.ComputeBackends.Create(parse.GetValue(backend)!, out string computeNote);
            using var disposeCompute = compute as IDisposable;
            using var moe = MoeModel.Open(dir, compute);
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
                $"{what} ({(moe.Config.IsLatent ? $"{MoeModes.Latent} l={moe.Config.MoeLatentSize}" : MoeModes.Standard)}, d={d}, N={moe.Config.NRoutedExperts}, K={moe.Config.NumExpertsPerTok}) on {computeNote}: {tokens} tokens in {seconds:F3} s, peak working set {self.PeakWorkingSet64 / (1024.0 * 1024.0):F0} MiB{MemorySplit()} -> {outFile}"));
            return CliApp.ExitOk;
        }));
        return command;
    }

    private static async Task<int> OnClusterAsync(TextWriter output, string url, string? modelId, string input, string outFile, int? layer, bool stack, WireChoice wire, string? apiKey, CancellationToken cancel)
    {
        if (!Uri.TryCreate(url, UriKind.Absolute, out Uri? baseUri) || (baseUri.Scheme != Uri.UriSchemeHttp && baseUri.Scheme != Uri.UriSchemeHttps))
        {
            throw new UsageException($"--cluster {url} is not an http(s) URL");
        }

        using var http = new HttpClient { BaseAddress = baseUri, Timeout = TimeSpan.FromMinutes(10) }.WithApiKey(apiKey);
        var client = new GatewayClient(http);
        IReadOnlyList<ServedModel> models;
        try
        {
            models = await client.ModelsAsync(cancel);
        }
        catch (HttpRequestException e)
        {
            throw new UsageException($"cannot reach the cluster at {url}: {e.Message}");
        }

        var served = models.FirstOrDefault(m => modelId is null ? m.IsDefault : m.Id == modelId)
            ?? throw new UsageException($"the cluster at {url} serves no model '{modelId}'; it serves {string.Join(", ", models.Select(m => m.Id))}");
        float[] x = HiddenStatesFile.Read(input, served.HiddenSize, out int tokens);
        int? target = stack ? null : layer ?? served.MoeLayers[0];
        var clock = Stopwatch.StartNew();
        GatewayForwardResponse response;
        try
        {
            response = await client.ForwardAsync(served.Id, target, x, tokens, served.HiddenSize, wire.Dispatch, wire.Combine, cancel);
        }
        catch (GatewayException e) when (e.StatusCode is >= 400 and < 500)
        {
            throw new UsageException($"the cluster refused the request ({e.StatusCode}): {e.Message}");
        }

        float[] y = response.HiddenStates.Decode();
        string what = target is int l ? $"layer {l}" : $"stack of {served.MoeLayers.Count} MoE layers";
        HiddenStatesFile.Write(outFile, y, tokens, served.HiddenSize, new Dictionary<string, string>
        {
            ["producer"] = "moecluster forward --cluster",
            ["what"] = what,
        });
        long dispatched = response.Layers.Sum(t => t.DispatchPayloadBytes), combined = response.Layers.Sum(t => t.CombinePayloadBytes);
        long payload = dispatched + combined;
        var first = response.Layers.FirstOrDefault();
        output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"{what} of {served.Id} ({served.Mode}) on {url}: {tokens} tokens in {clock.Elapsed.TotalSeconds:F3} s, routed {payload:N0} payload bytes ({(double)payload / tokens:F0} per token, wire {first?.Wire}; dispatch {dispatched:N0} bytes in {first?.WireDispatch}, combine {combined:N0} bytes in {first?.WireCombine}) -> {outFile}"));
        return CliApp.ExitOk;
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
