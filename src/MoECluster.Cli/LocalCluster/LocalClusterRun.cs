using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;
using MoECluster.Cli.Commands;
using MoECluster.Cluster.Hosting;
using MoECluster.Cluster.Security;
using MoECluster.Gateway;
using MoECluster.Model.Configuration;
using MoECluster.Model.Layers;
using MoECluster.Model.Numerics;
using MoECluster.Model.Presets;
using MoECluster.Wire;

namespace MoECluster.Cli.LocalCluster;

/// <summary>Starts the processes of <c>moecluster run</c>, drives the sample traffic, reports, and stops them.</summary>
internal sealed class LocalClusterRun(RunSettings settings, TextWriter output, TextWriter error)
{
    private readonly List<SupervisedSilo> _silos = [];

    public async Task<int> RunAsync(CancellationToken cancel)
    {
        var models = PrepareModels();
        try
        {
            await StartClusterAsync(models, cancel);
            using var http = new HttpClient { BaseAddress = new Uri(settings.Urls), Timeout = TimeSpan.FromMinutes(15) }.WithApiKey(settings.ApiKey);
            var client = new GatewayClient(http);
            var report = await SampleTrafficAsync(client, models, cancel);
            bool passed = report["checks_passed"]!.GetValue<bool>();
            if (settings.Report is string path)
            {
                RunReport.Write(path, report);
                output.WriteLine($"report written to {Path.GetFullPath(path)}");
            }

            if (settings.Once)
            {
                return passed ? CliApp.ExitOk : CliApp.ExitFailure;
            }

            output.WriteLine($"serving at {settings.Urls} (GET /stats, /v1/models, /health, /openapi/v1.json, /v1/admin/placement; POST /v1/layers/{{layer}}/forward, /v1/forward, KServe v2 /v2/models/{{model}}/infer, /v1/admin/rebalance). Ctrl+C stops every process.");
            try
            {
                await Task.Delay(Timeout.Infinite, cancel);
            }
            catch (OperationCanceledException)
            {
            }

            return CliApp.ExitOk;
        }
        finally
        {
            await StopAsync();
        }
    }

    private List<(string Id, string Path)> PrepareModels()
    {
        if (settings.Model is string dir)
        {
            using var probe = MoeModel.Open(dir);
            return [("model", Path.GetFullPath(dir))];
        }

        return ModelPreparation.Prepare(settings.GeneratedModels(), settings.Seed, output);
    }

    private async Task StartClusterAsync(List<(string Id, string Path)> models, CancellationToken cancel)
    {
        // The one description of a silo's command line and environment (shared with the Aspire AppHost); the ports and
        // localhost clustering as flags.
        string P(int port) => port.ToString(CultureInfo.InvariantCulture);
        string[] Silo(SiloLaunch launch, int siloPort, int gatewayPort, string? primary) =>
            [.. launch.Arguments(), .. SiloLaunch.PortArguments(siloPort, gatewayPort, primary)];

        // Mutual TLS between the silos: the certificates are made once beside the models and reused by later runs.
        string tlsDir = LocalClusterTls.DirectoryFor(settings.ModelsDir);
        output.WriteLine(LocalClusterTls.Ensure(tlsDir));
        var tls = SiloLaunch.Environment(tlsDir);
        var frontend = new SiloLaunch(SiloRoles.Frontend, "frontend", models, settings.Shards, settings.Backend, ExpectedExpertSilos: settings.ExpertSilos, Urls: settings.Urls,
            WireDispatch: settings.Wire.Dispatch.Name, WireCombine: settings.Wire.Combine.Name, RedundantExperts: settings.RedundantExperts, RebalanceEverySeconds: settings.RebalanceEverySeconds, ReplicaBytesPerSilo: settings.ReplicaBytesPerSilo);
        _silos.Add(new SupervisedSilo("frontend", Silo(frontend, settings.SiloPort, settings.GatewayPort, null), Alive(settings.Urls), error, output, settings.Verbose, tls));
        using var http = new HttpClient { BaseAddress = new Uri(settings.Urls), Timeout = TimeSpan.FromSeconds(5) }.WithApiKey(settings.ApiKey);
        await WaitAsync("front-end silo", async () => (await http.GetAsync("/alive", cancel)).IsSuccessStatusCode, cancel);
        for (int i = 1; i <= settings.ExpertSilos; i++)
        {
            // A fixed HTTP port per expert (free now), so that supervision can probe its /alive, before and after a restart.
            string expertUrl = $"http://127.0.0.1:{P(LoopbackPorts.Free())}";
            var expert = new SiloLaunch(SiloRoles.Expert, $"expert-{i}", models, settings.Shards, settings.Backend, Urls: expertUrl,
                WireDispatch: settings.Wire.Dispatch.Name, WireCombine: settings.Wire.Combine.Name, RedundantExperts: settings.RedundantExperts, RebalanceEverySeconds: settings.RebalanceEverySeconds, ReplicaBytesPerSilo: settings.ReplicaBytesPerSilo);
            // --pin-expert-cores: expert i on core (i - 1) mod cores, so silos stop sharing cores and imbalance shows.
            string? cpus = settings.PinExpertCores ? P((i - 1) % Environment.ProcessorCount) : null;
            _silos.Add(new SupervisedSilo($"expert-{i}", Silo(expert, settings.SiloPort + i, 0, $"127.0.0.1:{P(settings.SiloPort)}"), Alive(expertUrl), error, output, settings.Verbose, tls, cpus));
        }

        var client = new GatewayClient(http);
        await WaitAsync($"{settings.ExpertSilos} expert silos", async () =>
        {
            var (_, body) = await client.HealthAsync(cancel);
            return body?["expert_silos"]?.GetValue<int>() == settings.ExpertSilos;
        }, cancel);
        output.WriteLine($"cluster up: gateway {settings.Urls}, 1 front-end silo + {settings.ExpertSilos} expert silos (pids {string.Join(", ", _silos.Select(s => s.Current.Id))}), {settings.Shards} shards per layer");
        if (settings.PinExpertCores)
        {
            output.WriteLine($"expert silos pinned one per core (taskset): {string.Join(", ", Enumerable.Range(1, settings.ExpertSilos).Select(i => $"expert-{i} on core {(i - 1) % Environment.ProcessorCount}"))}; the front-end floats");
        }

        // From now on a silo that exits is restarted (localhost clustering: when the front-end, its primary, restarts,
        // the expert silos find the membership gone and exit; they are restarted too and rejoin).
        output.WriteLine("supervising: a silo that exits is restarted with the same name and ports (backoff from 0.5 s, at most 5 restarts within 120 s); one that does not answer /alive for 10 s is killed and restarted");
        _silos[0].ExitedUnexpectedly += _ =>
        {
            // Localhost clustering keeps the membership table in the front-end (its primary): the expert silos cannot
            // survive its restart (Orleans makes them exit once they see the table start over, which took them 10-15 s),
            // so they are restarted with it at once and rejoin the new front-end.
            output.WriteLine("the front-end held the membership (localhost clustering): restarting the expert silos with it");
            foreach (var expert in _silos.Skip(1))
            {
                expert.Kill();
            }
        };
        _silos.ForEach(s => s.Supervise());
    }

    private static Uri Alive(string url) => new(new Uri(url), "/alive");

    private async Task WaitAsync(string what, Func<Task<bool>> ready, CancellationToken cancel)
    {
        var clock = Stopwatch.StartNew();
        while (true)
        {
            if (_silos.FirstOrDefault(s => s.Current.HasExited) is { } dead)
            {
                throw new IOException($"silo {dead.Name} exited with code {dead.Current.ExitCode} while waiting for {what} (see its log lines above)");
            }

            try
            {
                if (await ready())
                {
                    return;
                }
            }
            catch (HttpRequestException)
            {
            }
            catch (TaskCanceledException) when (!cancel.IsCancellationRequested)
            {
            }

            if (clock.Elapsed > TimeSpan.FromSeconds(90))
            {
                throw new IOException($"timed out after 90 s waiting for {what}");
            }

            await Task.Delay(250, cancel);
        }
    }

    private async Task<JsonObject> SampleTrafficAsync(GatewayClient client, List<(string Id, string Path)> models, CancellationToken cancel)
    {
        var served = await client.ModelsAsync(cancel);
        var rows = new JsonArray();
        bool passed = true;
        IReadOnlyList<WirePair> pairs = settings.WireSweep is { Count: > 0 } sweep ? sweep : [settings.Wire];
        string dispatchWire = settings.Wire.Dispatch.Name, combineWire = settings.Wire.Combine.Name;
        output.WriteLine();
        output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"sample traffic: {settings.Tokens} tokens per model, wire {(pairs.Count == 1 ? $"{pairs[0].Text} (dispatch {pairs[0].Dispatch.Name}, combine {pairs[0].Combine.Name})" : string.Join(", ", pairs.Select(p => p.Text)) + " (dispatch/combine)")}, inputs {string.Join(", ", settings.SampleInputs)}, compute {settings.Backend} on the silos, checked against the in-process reference backend; bytes per token per MoE layer, dispatch + combine"));
        output.WriteLine($"{"model",-9} {"mode",-8} {"wire",-24} {"input",-9} {"d",6} {"width",6} {"payload measured",17} {"predicted",10} {"message",9} {"socket",9} {"tcp",9}  {"rel. error",10}  check");
        foreach (string input in settings.SampleInputs)
        {
            foreach (var (id, path) in models)
            {
                var info = served.Single(m => m.Id == id);
                int d = info.HiddenSize;
                float[] x = SampleInput(input, id, d);
                if (settings.Dump is string dump)
                {
                    WriteHidden(Path.Combine(dump, $"{id}-{input}-input.safetensors"), x, settings.Tokens, d);
                }

                using var reference = MoeModel.Open(path);
                var requests = new List<(int? Layer, string Name)> { (info.MoeLayers[0], $"layer {info.MoeLayers[0]}") };
                if (settings.Stack)
                {
                    requests.Add((null, "stack"));
                }

                foreach (var (layer, name) in requests)
                {
                    var referenceClock = Stopwatch.StartNew();
                    float[] expected = layer is int l0 ? reference.ForwardLayer(l0, x, settings.Tokens) : reference.ForwardStack(x, settings.Tokens);
                    double referenceSeconds = referenceClock.Elapsed.TotalSeconds;
                    foreach (WirePair pair in pairs)
                    {
                        var row = await SampleRequestAsync(client, id, path, info, layer, name, input, pair, x, (expected, referenceSeconds), cancel);
                        passed &= row["passed"]!.GetValue<bool>();
                        rows.Add(row);
                    }
                }
            }
        }

        var report = new JsonObject
        {
            ["command"] = "moecluster run " + string.Join(' ', Environment.GetCommandLineArgs().Skip(1).SkipWhile(a => a != "run").Skip(1)),
            ["wire"] = settings.Wire.Text,
            ["wire_dispatch"] = dispatchWire,
            ["wire_combine"] = combineWire,
            ["backend"] = settings.Backend,
            ["expert_silos"] = settings.ExpertSilos,
            ["shards_per_layer"] = settings.Shards,
            ["tokens"] = settings.Tokens,
            ["results"] = rows,
        };
        var layerRows = rows.OfType<JsonObject>()
            .Where(r => r["request"]!.GetValue<string>() != "stack" && r["wire"]!.GetValue<string>() == pairs[0].Text && r["input"]!.GetValue<string>() == settings.SampleInputs[0])
            .ToList();
        var standard = layerRows.FirstOrDefault(r => r["mode"]!.GetValue<string>() == MoeModes.Standard);
        var latent = layerRows.FirstOrDefault(r => r["mode"]!.GetValue<string>() == MoeModes.Latent);
        if (standard is not null && latent is not null)
        {
            double Ratio(string key) => standard["bytes_per_token_per_layer"]![key]!.GetValue<double>() / latent["bytes_per_token_per_layer"]![key]!.GetValue<double>();
            double analytic = (double)standard["routed_width"]!.GetValue<int>() / latent["routed_width"]!.GetValue<int>();
            report["standard_over_latent"] = new JsonObject
            {
                ["payload_measured"] = Ratio("payload_measured"),
                ["payload_predicted"] = Ratio("payload_predicted"),
                ["message_measured"] = Ratio("message_measured"),
                ["socket_measured"] = Ratio("socket_measured"),
                ["tcp_measured"] = Ratio("tcp_measured"),
                ["analytic_d_over_l"] = analytic,
            };
            output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"standard / latent bytes per token: payload {Ratio("payload_measured"):F2} measured, {Ratio("payload_predicted"):F2} predicted; MessagePack messages {Ratio("message_measured"):F2}; Orleans socket {Ratio("socket_measured"):F2}; TCP {Ratio("tcp_measured"):F2}; d/l = {analytic:F2}"));
            foreach (var row in layerRows)
            {
                if (row["tcp_over_socket"]?.GetValue<double>() is double overhead)
                {
                    output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                        $"{row["model"]!.GetValue<string>()}: TCP bytes / Orleans socket bytes = {overhead:F4} ({(row["tls"]!.GetValue<bool>() ? "mutual TLS 1.3 on every silo connection" : "TLS off")}: {(overhead - 1) * 100:F2}% more on the wire)"));
                }
            }
        }

        if (pairs.Count > 1 || settings.SampleInputs.Count > 1)
        {
            report["wire_sweep"] = WireSweepSummary(rows);
        }

        var stats = await client.StatsAsync(cancel);
        report["placement"] = stats["silos"]?.DeepClone();
        report["balance"] = stats["balance"]?.DeepClone();
        foreach (var layer in stats["balance"]?.AsArray().OfType<JsonObject>() ?? [])
        {
            output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{layer["model"]} layer {layer["layer"]}: expert-silo imbalance (busiest / mean) rows {layer["rows_imbalance"]!.GetValue<double>():F2}, (row, expert) pairs {layer["pairs_imbalance"]!.GetValue<double>():F2}, compute {layer["compute_imbalance"]!.GetValue<double>():F2}"));
        }

        report["checks_passed"] = passed;
        output.WriteLine(passed ? "every cluster output matches the in-process forward within tolerance" : "some cluster outputs differ from the in-process forward beyond tolerance");
        return report;
    }

    /// <summary>One request of the sample traffic in one wire pair: the cluster's answer against the in-process forward, and its bytes.</summary>
    private async Task<JsonObject> SampleRequestAsync(GatewayClient client, string id, string path, ServedModel info, int? layer, string name, string input,
        WirePair pair, float[] x, (float[] Output, double Seconds) reference, CancellationToken cancel)
    {
        float[] expected = reference.Output;
        int d = info.HiddenSize;
        string dispatchWire = pair.Dispatch.Name, combineWire = pair.Combine.Name;

        // Warm-up: the first request activates the shards (they load, and pack or upload, their experts).
        var warmClock = Stopwatch.StartNew();
        await client.ForwardAsync(id, layer, x[..d], 1, d, dispatchWire, combineWire, cancel);
        double warmSeconds = warmClock.Elapsed.TotalSeconds;
        var before = await SocketBytesAsync(client, cancel);
        var clock = Stopwatch.StartNew();
        var response = await client.ForwardAsync(id, layer, x, settings.Tokens, d, dispatchWire, combineWire, cancel);
        double clusterSeconds = clock.Elapsed.TotalSeconds;
        var after = await SocketBytesAsync(client, cancel);
        float[] y = response.HiddenStates.Decode();
        if (settings.Dump is string dump && layer is not null)
        {
            WriteHidden(Path.Combine(dump, $"{id}-{input}-{dispatchWire}_{combineWire}-output.safetensors"), y, settings.Tokens, d);
        }

        double err = RelativeError.Of(y, expected);
        double tolerance = pair.ParityTolerance;
        bool ok = err <= tolerance;
        int layerCount = response.Layers.Count;
        double perToken(long bytes) => (double)bytes / settings.Tokens / layerCount;
        long dispatchPayload = response.Layers.Sum(t => t.DispatchPayloadBytes), combinePayload = response.Layers.Sum(t => t.CombinePayloadBytes);
        long payload = dispatchPayload + combinePayload;
        long routedRows = response.Layers.Sum(t => (long)t.RoutedRows);
        long predicted = response.Layers.Sum(t => t.PredictedPayloadBytes);
        long message = response.Layers.Sum(t => t.DispatchMessageBytes + t.CombineMessageBytes);
        long socket = after.Socket - before.Socket;
        long socketDispatch = after.Requests - before.Requests, socketCombine = after.Responses - before.Responses;
        long tcp = after.Tcp - before.Tcp;
        int width = response.Layers[0].Width;
        output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"{id,-9} {info.Mode,-8} {pair.Text,-24} {input,-9} {d,6} {width,6} {perToken(payload),17:N0} {perToken(predicted),10:N0} {perToken(message),9:N0} {perToken(socket),9:N0} {perToken(tcp),9:N0}  {err,10:E2}  {(ok ? "ok" : "FAILED")} ({name}, cluster {clusterSeconds:F2} s after a {warmSeconds:F1} s warm-up, in-process reference {reference.Seconds:F2} s)"));
        return new JsonObject
        {
            ["model"] = id,
            ["path"] = path,
            ["mode"] = info.Mode,
            ["request"] = name,
            ["input"] = input,
            ["hidden_size"] = d,
            ["routed_width"] = width,
            ["experts"] = info.Experts,
            ["top_k"] = info.TopK,
            ["shards_per_layer"] = info.ShardsPerLayer,
            ["tokens"] = settings.Tokens,
            ["moe_layers"] = layerCount,
            ["routed_rows"] = routedRows,
            ["wire"] = response.Layers[0].Wire,
            ["wire_dispatch"] = response.Layers[0].WireDispatch,
            ["wire_combine"] = response.Layers[0].WireCombine,
            ["payload_bytes"] = payload,
            ["dispatch_payload_bytes"] = dispatchPayload,
            ["combine_payload_bytes"] = combinePayload,
            ["dispatch_bytes_per_element"] = routedRows > 0 ? (double)dispatchPayload / routedRows / width : null,
            ["combine_bytes_per_element"] = routedRows > 0 ? (double)combinePayload / routedRows / width : null,
            ["predicted_payload_bytes"] = predicted,
            ["message_bytes"] = message,
            ["socket_bytes_during_request"] = socket,
            ["socket_request_bytes_during_request"] = socketDispatch,
            ["socket_response_bytes_during_request"] = socketCombine,
            ["tcp_bytes_during_request"] = tcp,
            ["tls"] = after.Tls,
            ["tcp_over_socket"] = socket > 0 ? (double)tcp / socket : null,
            ["bytes_per_token_per_layer"] = new JsonObject
            {
                ["payload_measured"] = perToken(payload),
                ["payload_predicted"] = perToken(predicted),
                ["dispatch_payload_measured"] = perToken(dispatchPayload),
                ["combine_payload_measured"] = perToken(combinePayload),
                ["message_measured"] = perToken(message),
                ["socket_measured"] = perToken(socket),
                ["socket_dispatch_measured"] = perToken(socketDispatch),
                ["socket_combine_measured"] = perToken(socketCombine),
                ["tcp_measured"] = perToken(tcp),
            },
            ["relative_error_vs_in_process"] = err,
            ["tolerance"] = tolerance,
            ["passed"] = ok,
            ["warm_up_seconds"] = warmSeconds,
            ["cluster_seconds"] = clusterSeconds,
            ["in_process_seconds"] = reference.Seconds,
        };
    }

    /// <summary>
    /// The sample batch of one input kind: "gaussian" (N(0, 1)), or "outliers" (the same with every 512th column, from
    /// column 7, 50 times larger, as real activations have a few large channels).
    /// </summary>
    private float[] SampleInput(string kind, string id, int d)
    {
        var rng = DeterministicRandom.For(settings.Seed, "run-sample-" + id);
        var x = new float[settings.Tokens * d];
        for (int i = 0; i < x.Length; i++)
        {
            x[i] = (float)rng.NextGaussian();
            if (kind == RunSettings.OutlierInput && i % d % OutlierStride == OutlierColumn % Math.Min(d, OutlierStride))
            {
                x[i] *= OutlierScale;
            }
        }

        return x;
    }

    /// <summary>Columns c with c mod 512 = 7 (1 in 512) of an "outliers" input are this many times larger.</summary>
    internal const float OutlierScale = 50f;

    private const int OutlierStride = 512;
    private const int OutlierColumn = 7;

    private static void WriteHidden(string path, float[] values, int tokens, int width)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        byte[] bytes = System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()).ToArray();
        MoECluster.Model.Checkpoints.SafetensorsWriter.Write(path,
            [(new MoECluster.Model.Checkpoints.TensorSpec("hidden_states", MoECluster.Model.Checkpoints.DType.F32, [tokens, width]), (ReadOnlyMemory<byte>)bytes)]);
    }

    /// <summary>
    /// Per wire pair and input: each model's socket bytes per token (dispatch, combine, both) and error, the dispatch
    /// socket bytes of each latent pair over those of bf16 dispatch, and standard bf16/bf16 over each latent pair.
    /// </summary>
    private JsonArray WireSweepSummary(JsonArray rows)
    {
        var layerRows = rows.OfType<JsonObject>().Where(r => r["request"]!.GetValue<string>() != "stack").ToList();
        double Get(JsonObject r, string key) => r["bytes_per_token_per_layer"]![key]!.GetValue<double>();
        var summary = new JsonArray();
        output.WriteLine();
        output.WriteLine("wire sweep (bytes per token per MoE layer on the Orleans sockets; error against the in-process fp32 forward):");
        output.WriteLine($"{"input",-9} {"wire",-24} {"latent socket",14} {"latent dispatch",16} {"vs bf16 disp.",14} {"latent error",13} {"standard socket",16} {"standard error",15} {"std bf16 / latent",18}");
        foreach (var group in layerRows.GroupBy(r => r["input"]!.GetValue<string>()))
        {
            var latent = group.Where(r => r["mode"]!.GetValue<string>() == MoeModes.Latent).ToDictionary(r => r["wire"]!.GetValue<string>());
            var standard = group.Where(r => r["mode"]!.GetValue<string>() == MoeModes.Standard).ToDictionary(r => r["wire"]!.GetValue<string>());
            latent.TryGetValue("bf16/bf16", out var latentBf16);
            standard.TryGetValue("bf16/bf16", out var standardBf16);
            foreach (string wire in group.Select(r => r["wire"]!.GetValue<string>()).Distinct())
            {
                latent.TryGetValue(wire, out var l);
                standard.TryGetValue(wire, out var st);
                double? dispatchVsBf16 = l is not null && latentBf16 is not null ? Get(l, "socket_dispatch_measured") / Get(latentBf16, "socket_dispatch_measured") : null;
                double? standardOverLatent = l is not null && standardBf16 is not null ? Get(standardBf16, "socket_measured") / Get(l, "socket_measured") : null;
                summary.Add(new JsonObject
                {
                    ["input"] = group.Key,
                    ["wire"] = wire,
                    ["latent_socket_bytes_per_token"] = l is null ? null : Get(l, "socket_measured"),
                    ["latent_socket_dispatch_bytes_per_token"] = l is null ? null : Get(l, "socket_dispatch_measured"),
                    ["latent_socket_combine_bytes_per_token"] = l is null ? null : Get(l, "socket_combine_measured"),
                    ["latent_dispatch_over_bf16_dispatch"] = dispatchVsBf16,
                    ["latent_relative_error"] = l?["relative_error_vs_in_process"]?.GetValue<double>(),
                    ["standard_socket_bytes_per_token"] = st is null ? null : Get(st, "socket_measured"),
                    ["standard_relative_error"] = st?["relative_error_vs_in_process"]?.GetValue<double>(),
                    ["standard_bf16_over_latent_socket"] = standardOverLatent,
                });
                string Num(double? v, string f) => v is double x ? x.ToString(f, CultureInfo.InvariantCulture) : "-";
                output.WriteLine($"{group.Key,-9} {wire,-24} {Num(l is null ? null : Get(l, "socket_measured"), "N0"),14} {Num(l is null ? null : Get(l, "socket_dispatch_measured"), "N0"),16} {Num(dispatchVsBf16, "F3"),14} {Num(l?["relative_error_vs_in_process"]?.GetValue<double>(), "E2"),13} {Num(st is null ? null : Get(st, "socket_measured"), "N0"),16} {Num(st?["relative_error_vs_in_process"]?.GetValue<double>(), "E2"),15} {Num(standardOverLatent, "F2"),18}");
            }
        }

        return summary;
    }

    /// <summary>Orleans' socket bytes (messages + frames, above TLS) and the bytes written to TCP (beneath TLS), cluster-wide, silo to silo.</summary>
    /// <remarks>
    /// Requests and Responses split the socket bytes by Orleans' message direction: the router's calls to the shards
    /// (dispatch) and the shards' answers (combine), plus the little other traffic of the same kind (statistics calls).
    /// </remarks>
    private static async Task<(long Socket, long Tcp, bool Tls, long Requests, long Responses)> SocketBytesAsync(GatewayClient client, CancellationToken cancel)
    {
        var stats = await client.StatsAsync(cancel);
        var totals = stats["totals"];
        long Direction(string direction) => stats["socket"]?.AsArray().OfType<JsonObject>()
            .Where(s => s["message_direction"]?.GetValue<string>() == direction)
            .Sum(s => s["message_bytes"]!.GetValue<long>() + s["frame_bytes"]!.GetValue<long>()) ?? 0;
        return (totals?["socket_bytes"]?.GetValue<long>() ?? 0, totals?["tcp_bytes"]?.GetValue<long>() ?? 0, totals?["tls"]?.GetValue<bool>() ?? false,
            Direction("Request"), Direction("Response"));
    }

    private async Task StopAsync()
    {
        await Task.WhenAll(_silos.Select(s => s.StopSupervisingAsync()));
        _silos.ForEach(s => s.Quiet());

        // Expert silos first, then the front-end silo: it is the primary of localhost clustering, and the others
        // report their own departure to it.
        await Task.WhenAll(_silos.Skip(1).Select(s => s.StopAsync(TimeSpan.FromSeconds(10))));
        await Task.WhenAll(_silos.Take(1).Select(s => s.StopAsync(TimeSpan.FromSeconds(10))));
        foreach (var silo in _silos)
        {
            silo.Dispose();
        }

        _silos.Clear();
    }
}
