using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using System.Text.Json.Nodes;
using MoECluster.Cluster.Hosting;
using MoECluster.Model.Analysis;
using MoECluster.Model.Configuration;
using MoECluster.Model.Presets;
using MoECluster.Wire;

namespace MoECluster.Cli.Commands;

/// <summary>
/// <c>moecluster cost</c>: the LatentMoE paper's accounting as a tool (docs/COST.md). For a model and a hardware profile,
/// per token and MoE layer, standard twin vs latent and each wire pair: weight bytes read, routed bytes, FLOPs, and the
/// memory-, compute- and communication-bound times at a batch and expert-parallel degree; the arithmetic intensity per
/// expert and the tokens per expert from which a layer is compute-bound.
/// </summary>
internal static class CostCommand
{
    /// <summary>The issue's pairs: dispatch/combine.</summary>
    internal static readonly string[] DefaultPairs =
        ["bf16/bf16", "mxfp8-e4m3/bf16", "mxfp8-e4m3/mxfp8-e4m3", "mxfp6-e2m3/bf16", "mxfp4/bf16", "nvfp4/bf16", "mxfp4/mxfp8-e4m3"];

    public static Command Create(TextWriter output, TextWriter error)
    {
        var model = new Option<string>("--model")
        {
            Description = $"A preset ({string.Join(", ", ModelPresets.All.Select(p => p.Name))}), a config.json or a model directory.",
            DefaultValueFactory = _ => "super-shape",
        };
        var experts = new Option<int?>("--experts") { Description = "Routed experts of a preset (default: the preset's)." };
        var profile = new Option<string>("--profile")
        {
            Description = $"Hardware: {string.Join(", ", HardwareProfile.BuiltIn.Select(p => p.Name))}, or measured (this machine: memory read bandwidth, managed GEMM throughput, loopback TCP).",
            DefaultValueFactory = _ => "gb200-nvl72",
        };
        var tokens = new Option<int>("--tokens") { Description = "Tokens per GPU per layer (the batch).", DefaultValueFactory = _ => 256 };
        var ep = new Option<int>("--ep") { Description = "Expert-parallel degree: GPUs the experts are spread over.", DefaultValueFactory = _ => 8 };
        var wires = new Option<string>("--wire")
        {
            Description = $"Comma-separated dispatch/combine pairs of {WireCodecs.NameList}.",
            DefaultValueFactory = _ => string.Join(',', DefaultPairs),
        };
        var report = new Option<string?>("--report") { Description = "Also write the estimate as JSON to this file." };
        var checkBench = new Option<string?>("--check-bench")
        {
            Description = "With --profile measured and a model directory: time the model's first MoE layer (managed backend, as bench --layer-only) at each --check-tokens in the same run and compare with the prediction (the largest of the memory and compute times, EP 1); exit 1 when one is off by more than --tolerance.",
            Arity = ArgumentArity.ZeroOrOne,
        };
        var checkTokens = new Option<int[]>("--check-tokens") { Description = "Batches for --check-bench.", DefaultValueFactory = _ => [1, 8, 64, 256], AllowMultipleArgumentsPerToken = true };
        var tolerance = new Option<double>("--tolerance") { Description = "Largest |measured / predicted − 1| --check-bench and --check-load accept.", DefaultValueFactory = _ => 0.25 };
        var checkLoad = new Option<string?>("--check-load")
        {
            Description = "With --profile measured and a model directory: the gateway URL of a running local cluster serving that model; predict a closed-loop moecluster load from parts measured now (the layer at the front-end's batch, the request's way in and out, the routed rows), run it, and compare; exit 1 when off by more than --tolerance.",
        };
        var loadModel = new Option<string>("--load-model") { Description = "The served model id --check-load loads.", DefaultValueFactory = _ => "latent" };
        var loadWorkers = new Option<int>("--load-workers") { Description = "Closed-loop workers of --check-load.", DefaultValueFactory = _ => 8 };
        var loadTokens = new Option<int>("--load-tokens") { Description = "Tokens per request of --check-load.", DefaultValueFactory = _ => 8 };
        var loadSeconds = new Option<double>("--load-seconds") { Description = "Measured seconds of --check-load's run (after 3 s of warm-up).", DefaultValueFactory = _ => 15 };
        var apiKey = ApiKeyOption.Create();
        var command = new Command("cost", "Estimate a MoE layer's weight bytes, routed bytes, FLOPs and memory/compute/communication times per token (the LatentMoE paper's accounting).")
        {
            model, experts, profile, tokens, ep, wires, report, checkBench, checkTokens, tolerance, checkLoad, loadModel, loadWorkers, loadTokens, loadSeconds, apiKey,
        };
        command.SetAction((parse, cancel) => VerbRunner.GuardAsync("cost", error, async () =>
        {
            MoeModelConfig config = ResolveModel(parse.GetValue(model)!, parse.GetValue(experts));
            var pairs = ParsePairs(parse.GetValue(wires)!, config.RoutedWidth, config.HiddenSize);
            Uri? loadUrl = CheckLoadUrl(parse.GetValue(checkLoad), parse.GetValue(loadWorkers), parse.GetValue(loadTokens), parse.GetValue(loadSeconds));
            string profileName = parse.GetValue(profile)!;
            var (hardware, measured) = string.Equals(profileName, "measured", StringComparison.OrdinalIgnoreCase)
                ? MeasureProfile(config, output)
                : (HardwareProfile.Get(profileName), null);
            var json = Run(output, config, hardware, parse.GetValue(tokens), parse.GetValue(ep), pairs);
            json["command"] = "moecluster " + string.Join(' ', parse.Tokens.Select(t => t.Value));
            if (measured is not null)
            {
                json["measured"] = measured;
            }

            bool checkPassed = true;
            if (parse.GetResult(checkBench) is not null)
            {
                string directory = parse.GetValue(model)!;
                if (measured is null || !Directory.Exists(directory))
                {
                    throw new UsageException("--check-bench needs --profile measured and --model a model directory");
                }

                (json["bench_check"], checkPassed) = CheckBench(output, directory, config, hardware, parse.GetValue(checkTokens)!, parse.GetValue(tolerance));
            }

            if (loadUrl is not null)
            {
                string directory = parse.GetValue(model)!;
                if (measured is null || !Directory.Exists(directory))
                {
                    throw new UsageException("--check-load needs --profile measured and --model a model directory");
                }

                (json["load_check"], bool loadPassed) = await LoadPrediction.CheckAsync(output, loadUrl, ApiKeyOption.Resolve(parse.GetValue(apiKey)),
                    parse.GetValue(loadModel)!, directory, config, hardware, parse.GetValue(loadWorkers), parse.GetValue(loadTokens), parse.GetValue(loadSeconds),
                    parse.GetValue(tolerance), cancel);
                checkPassed &= loadPassed;
            }

            if (parse.GetValue(report) is string path)
            {
                File.WriteAllText(path, json.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
                output.WriteLine($"report: {path}");
            }

            return checkPassed ? CliApp.ExitOk : CliApp.ExitFailure;
        }));
        return command;
    }

    /// <summary>
    /// The measured profile's prediction of one MoE layer on this machine (EP 1: the largest of the memory and compute
    /// times) against the layer itself, timed as <c>bench --layer-only</c> times it, in the same run. The memory read
    /// bandwidth is measured again with a probe pass after each repetition of the layer and the best pass of that window
    /// counts (this machine's bandwidth swings between about 45 and 80 GB/s within seconds; a probe at another moment
    /// than the layer would compare two different machines).
    /// </summary>
    internal static (JsonArray Rows, bool Passed) CheckBench(TextWriter o, string directory, MoeModelConfig config, HardwareProfile hardware, int[] tokens, double tolerance)
    {
        var compute = ComputeBackends.Create(ComputeBackends.Managed, out _);
        using var disposeBackend = compute as IDisposable;
        using var moe = Model.Layers.MoeModel.Open(directory, compute);
        using var probe = new MemoryReadProbe(MemoryReadBandwidth.DefaultBytes);
        int layer = moe.FirstMoeLayer;
        moe.Mixer(layer);
        o.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"check against the layer (managed backend, layer {layer}, best of repetitions over 1 s, a read-probe pass after each): predicted = max(memory, compute) at EP 1"));
        o.WriteLine($"{"T",6} {"read GB/s",10} {"predicted s",12} {"measured s",11} {"measured / predicted",21} check");
        var rows = new JsonArray();
        bool passed = true;
        foreach (int t in tokens)
        {
            float[] x = BenchCommand.RandomValues(t * config.HiddenSize, 11);
            var (seconds, read) = BenchCommand.BestSecondsInterleaved(() => moe.ForwardLayer(layer, x, t), probe, 1.0);
            var e = RoutingCost.Estimate(config, hardware with { MemoryBytesPerSecond = read }, t, 1, 2, 2);
            double predicted = Math.Max(e.MemorySeconds, e.ComputeSeconds);
            double ratio = seconds / predicted;
            bool ok = Math.Abs(ratio - 1) <= tolerance;
            passed &= ok;
            o.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{t,6} {read / 1e9,10:F1} {predicted,12:F4} {seconds,11:F4} {ratio,21:F2} {(ok ? "ok" : "OFF")}"));
            rows.Add(new JsonObject
            {
                ["tokens"] = t,
                ["read_bytes_per_second"] = read,
                ["predicted_seconds"] = predicted,
                ["measured_seconds"] = seconds,
                ["measured_over_predicted"] = ratio,
                ["within_tolerance"] = ok,
            });
        }

        return (rows, passed);
    }

    /// <summary>The gateway of --check-load (null: no check), its run's numbers checked before anything is measured.</summary>
    private static Uri? CheckLoadUrl(string? gateway, int workers, int tokens, double seconds)
    {
        if (gateway is null)
        {
            return null;
        }

        if (!Uri.TryCreate(gateway, UriKind.Absolute, out var url) || url.Scheme is not ("http" or "https"))
        {
            throw new UsageException($"--check-load '{gateway}' is not the http(s) URL of a gateway");
        }

        if (workers < 1 || tokens < 1 || !(seconds > 0))
        {
            throw new UsageException("--load-workers and --load-tokens must be at least 1 and --load-seconds above 0");
        }

        return url;
    }

    internal static MoeModelConfig ResolveModel(string text, int? experts)
    {
        if (ModelPresets.All.FirstOrDefault(p => p.Name == text) is { } preset)
        {
            return preset.Build(experts: experts, moeLayers: 1);
        }

        if (experts is not null)
        {
            throw new UsageException("--experts applies to a preset only; a config.json says how many experts it has");
        }

        string path = Directory.Exists(text) ? Path.Combine(text, "config.json") : text;
        if (!File.Exists(path))
        {
            throw new UsageException($"--model '{text}' is neither a preset ({string.Join(", ", ModelPresets.All.Select(p => p.Name))}) nor a config.json or model directory");
        }

        return MoeModelConfig.Load(path);
    }

    /// <summary>Dispatch/combine pairs with the bytes one element costs in each (block scales included, for a row of the width).</summary>
    internal static List<(string Name, double Dispatch, double Combine, double StandardDispatch, double StandardCombine)> ParsePairs(string text, int routedWidth, int hiddenSize)
    {
        var pairs = new List<(string, double, double, double, double)>();
        foreach (string item in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            // Both directions named: a lone type (which WirePair reads as both) is not a pair here.
            if (!item.Contains(WirePair.Separator) || !WirePair.TryParse(item, out var pair))
            {
                throw new UsageException($"--wire '{item}' is not a dispatch/combine pair of {WireCodecs.NameList}");
            }

            pairs.Add((pair.Text, BytesPerElement(pair.Dispatch, routedWidth), BytesPerElement(pair.Combine, routedWidth),
                BytesPerElement(pair.Dispatch, hiddenSize), BytesPerElement(pair.Combine, hiddenSize)));
        }

        return pairs.Count > 0 ? pairs : throw new UsageException("--wire names no pair");
    }

    /// <summary>Bytes per element of a row of <paramref name="width"/> (scales included; NVFP4's per-message fp32 spread over 1,024 rows).</summary>
    internal static double BytesPerElement(IWireCodec codec, int width) => codec.PayloadBytes(1024, width) / (1024.0 * width);

    internal static JsonObject Run(TextWriter o, MoeModelConfig config, HardwareProfile hardware, int tokens, int ep,
        IReadOnlyList<(string Name, double Dispatch, double Combine, double StandardDispatch, double StandardCombine)> pairs)
    {
        var inv = CultureInfo.InvariantCulture;
        o.WriteLine(string.Create(inv, $"profile {hardware.Name}: {hardware.Description}"));
        o.WriteLine(string.Create(inv, $"  {hardware.PeakFlopsPerSecond / 1e12:N1} TFLOP/s at {hardware.ElementBytes} B per element, memory {hardware.MemoryBytesPerSecond / 1e9:N0} GB/s, link {hardware.NetworkBytesPerSecond / 1e9:N1} GB/s per direction ({hardware.Source})"));
        o.WriteLine(string.Create(inv, $"model: d {config.HiddenSize}, routed width {config.RoutedWidth}, N {config.NRoutedExperts}, K {config.NumExpertsPerTok}, m {config.MoeIntermediateSize}; {tokens} tokens per GPU, EP {ep}"));
        o.WriteLine("per token and MoE layer (times per layer on one GPU; every (token, expert) pair routed out and back):");
        o.WriteLine($"{"mode",-9} {"wire",-24} {"weight B/tok",13} {"routed B/tok",13} {"MFLOP/tok",10} {"memory us",10} {"compute us",11} {"comm us",10} {"comm/comp",10} bound");
        var rows = new JsonArray();
        LayerCostEstimate? standardBf16 = null;
        var latentByPair = new Dictionary<string, LayerCostEstimate>();
        var models = config.IsLatent ? new[] { config with { MoeLatentSize = null }, config } : new[] { config };
        LayerCostEstimate? first = null;
        foreach (var c in models)
        {
            foreach (var (name, dispatch, combine, stdDispatch, stdCombine) in pairs)
            {
                bool standard = !c.IsLatent;
                var e = RoutingCost.Estimate(c, hardware, tokens, ep, standard ? stdDispatch : dispatch, standard ? stdCombine : combine);
                first ??= e;
                if (standard && name == "bf16/bf16")
                {
                    standardBf16 = e;
                }
                else if (!standard)
                {
                    latentByPair[name] = e;
                }

                o.WriteLine(string.Create(inv,
                    $"{e.Mode,-9} {name,-24} {e.WeightBytesPerToken,13:N0} {e.RoutedBytesPerToken,13:N0} {e.FlopsPerToken / 1e6,10:N1} {e.MemorySeconds * 1e6,10:N1} {e.ComputeSeconds * 1e6,11:N1} {e.CommunicationSeconds * 1e6,10:N1} {e.CommunicationOverComputation,10:N2} {e.Bound}"));
                rows.Add(new JsonObject
                {
                    ["mode"] = e.Mode,
                    ["wire"] = name,
                    ["weight_bytes_per_token"] = e.WeightBytesPerToken,
                    ["routed_bytes_per_token"] = e.RoutedBytesPerToken,
                    ["flops_per_token"] = e.FlopsPerToken,
                    ["memory_seconds"] = e.MemorySeconds,
                    ["compute_seconds"] = e.ComputeSeconds,
                    ["communication_seconds"] = e.CommunicationSeconds,
                    ["communication_over_computation"] = e.CommunicationOverComputation,
                    ["bound"] = e.Bound,
                    ["tokens_per_expert"] = e.TokensPerExpert,
                    ["active_experts_per_gpu"] = e.ActiveExpertsPerGpu,
                    ["arithmetic_intensity"] = e.ArithmeticIntensity,
                    ["compute_bound_tokens_per_expert"] = Finite(e.ComputeBoundTokensPerExpert),
                });
            }
        }

        var json = new JsonObject
        {
            ["profile"] = JsonSerializer.SerializeToNode(hardware),
            ["model"] = new JsonObject
            {
                ["hidden_size"] = config.HiddenSize,
                ["routed_width"] = config.RoutedWidth,
                ["experts"] = config.NRoutedExperts,
                ["top_k"] = config.NumExpertsPerTok,
                ["moe_intermediate_size"] = config.MoeIntermediateSize,
            },
            ["tokens_per_gpu"] = tokens,
            ["expert_parallel"] = ep,
            ["rows"] = rows,
        };

        foreach (var c in models)
        {
            var e = RoutingCost.Estimate(c, hardware, tokens, ep, 2, 2);
            double threshold = e.ComputeBoundTokensPerExpert;
            o.WriteLine(string.Create(inv,
                $"{e.Mode}: {e.TokensPerExpert:N1} tokens per expert, arithmetic intensity {e.ArithmeticIntensity:N1} FLOP/B (ridge {hardware.PeakFlopsPerSecond / hardware.MemoryBytesPerSecond:N0}); compute-bound from {(double.IsFinite(threshold) ? threshold.ToString("N0", inv) : "never (intensity's limit below the ridge)")} tokens per expert"));
            json[e.Mode] = new JsonObject
            {
                ["tokens_per_expert"] = e.TokensPerExpert,
                ["arithmetic_intensity"] = e.ArithmeticIntensity,
                ["compute_bound_tokens_per_expert"] = Finite(threshold),
            };
        }

        if (standardBf16 is not null && latentByPair.Count > 0)
        {
            var best = latentByPair.MinBy(p => p.Value.RoutedBytesPerToken);
            double ratio = standardBf16.RoutedBytesPerToken / best.Value.RoutedBytesPerToken;
            o.WriteLine(string.Create(inv, $"standard bf16/bf16 / latent {best.Key}: {ratio:N2}x fewer routed bytes per token"));
            json["standard_bf16_over_latent_best"] = new JsonObject { ["latent_wire"] = best.Key, ["routed_bytes_ratio"] = ratio };
        }

        return json;
    }

    private static JsonValue? Finite(double value) => double.IsFinite(value) ? JsonValue.Create(value) : null;

    /// <summary>This machine as a profile: managed GEMM throughput at the expert's shape, memory read bandwidth, loopback TCP.</summary>
    internal static (HardwareProfile Profile, JsonObject Measured) MeasureProfile(MoeModelConfig config, TextWriter o)
    {
        o.WriteLine("measuring this machine (memory read, managed GEMM at the expert's shape, loopback TCP) ...");
        var read = MemoryReadBandwidth.Measure(runs: 5, minSeconds: 1);
        double gemm = BenchCommand.MeasureGemm(config.MoeIntermediateSize, config.RoutedWidth, rows: 256, minSeconds: 1);
        double loopback = LoopbackBytesPerSecond(256L << 20);
        var profile = new HardwareProfile("measured", $"this machine ({Environment.ProcessorCount} cores), BF16 weights",
            gemm, 2, read.BytesPerSecond, loopback,
            "measured now: managed GEMM [256 × " + config.RoutedWidth + "] x [" + config.RoutedWidth + " → " + config.MoeIntermediateSize + "], STREAM-like read over 1 GiB, one TCP stream over 127.0.0.1");
        var measured = new JsonObject
        {
            ["gemm_flops_per_second"] = gemm,
            ["read_bytes_per_second"] = read.BytesPerSecond,
            ["loopback_bytes_per_second"] = loopback,
        };
        return (profile, measured);
    }

    /// <summary>One TCP stream over loopback: <paramref name="bytes"/> written in 1 MiB writes, timed until all are read.</summary>
    internal static double LoopbackBytesPerSecond(long bytes)
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        using var client = new TcpClient();
        client.Connect((IPEndPoint)listener.LocalEndpoint);
        using var server = listener.AcceptTcpClient();
        var buffer = new byte[1 << 20];
        Random.Shared.NextBytes(buffer);
        var started = Stopwatch.GetTimestamp();
        var reader = Task.Run(() =>
        {
            var sink = new byte[1 << 20];
            long left = bytes;
            using var stream = server.GetStream();
            while (left > 0)
            {
                int n = stream.Read(sink, 0, (int)Math.Min(sink.Length, left));
                if (n == 0)
                {
                    throw new IOException("loopback probe: the stream ended early");
                }

                left -= n;
            }
        });
        using (var stream = client.GetStream())
        {
            for (long sent = 0; sent < bytes; sent += buffer.Length)
            {
                stream.Write(buffer, 0, (int)Math.Min(buffer.Length, bytes - sent));
            }

            reader.GetAwaiter().GetResult();
        }

        return bytes / Stopwatch.GetElapsedTime(started).TotalSeconds;
    }
}
