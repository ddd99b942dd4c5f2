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

            output.WriteLine($"serving at {settings.Urls} (GET /stats, /v1/models, /health, /openapi/v1.json; POST /v1/layers/{{layer}}/forward, /v1/forward, KServe v2 /v2/models/{{model}}/infer). Ctrl+C stops every process.");
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
            WireDispatch: settings.Wire.Dispatch.Name, WireCombine: settings.Wire.Combine.Name);
        _silos.Add(new SupervisedSilo("frontend", Silo(frontend, settings.SiloPort, settings.GatewayPort, null), Alive(settings.Urls), error, output, settings.Verbose, tls));
        using var http = new HttpClient { BaseAddress = new Uri(settings.Urls), Timeout = TimeSpan.FromSeconds(5) }.WithApiKey(settings.ApiKey);
        await WaitAsync("front-end silo", async () => (await http.GetAsync("/alive", cancel)).IsSuccessStatusCode, cancel);
        for (int i = 1; i <= settings.ExpertSilos; i++)
        {
            // A fixed HTTP port per expert (free now), so that supervision can probe its /alive, before and after a restart.
            string expertUrl = $"http://127.0.0.1:{P(LoopbackPorts.Free())}";
            var expert = new SiloLaunch(SiloRoles.Expert, $"expert-{i}", models, settings.Shards, settings.Backend, Urls: expertUrl,
                WireDispatch: settings.Wire.Dispatch.Name, WireCombine: settings.Wire.Combine.Name);
            _silos.Add(new SupervisedSilo($"expert-{i}", Silo(expert, settings.SiloPort + i, 0, $"127.0.0.1:{P(settings.SiloPort)}"), Alive(expertUrl), error, output, settings.Verbose, tls));
        }

        var client = new GatewayClient(http);
        await WaitAsync($"{settings.ExpertSilos} expert silos", async () =>
        {
            var (_, body) = await client.HealthAsync(cancel);
            return body?["expert_silos"]?.GetValue<int>() == settings.ExpertSilos;
        }, cancel);
        output.WriteLine($"cluster up: gateway {settings.Urls}, 1 front-end silo + {settings.ExpertSilos} expert silos (pids {string.Join(", ", _silos.Select(s => s.Current.Id))}), {settings.Shards} shards per layer");

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
        double tolerance = settings.Wire.ParityTolerance;
        string dispatchWire = settings.Wire.Dispatch.Name, combineWire = settings.Wire.Combine.Name;
        output.WriteLine();
        output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"sample traffic: {settings.Tokens} tokens per model, wire {settings.Wire.Text} (dispatch {dispatchWire}, combine {combineWire}), compute {settings.Backend} on the silos, checked against the in-process reference backend; bytes per token per MoE layer, dispatch + combine"));
        output.WriteLine($"{"model",-9} {"mode",-8} {"d",6} {"width",6} {"payload measured",17} {"predicted",10} {"message",9} {"socket",9} {"tcp",9}  {"rel. error",10}  check");
        foreach (var (id, path) in models)
        {
            var info = served.Single(m => m.Id == id);
            int d = info.HiddenSize;
            var rng = DeterministicRandom.For(settings.Seed, "run-sample-" + id);
            var x = new float[settings.Tokens * d];
            for (int i = 0; i < x.Length; i++)
            {
                x[i] = (float)rng.NextGaussian();
            }

            using var reference = MoeModel.Open(path);
            var requests = new List<(int? Layer, string Name)> { (info.MoeLayers[0], $"layer {info.MoeLayers[0]}") };
            if (settings.Stack)
            {
                requests.Add((null, "stack"));
            }

            foreach (var (layer, name) in requests)
            {
                // Warm-up: the first request activates the shards (they load, and pack or upload, their experts).
                var warmClock = Stopwatch.StartNew();
                await client.ForwardAsync(id, layer, x[..d], 1, d, dispatchWire, combineWire, cancel);
                double warmSeconds = warmClock.Elapsed.TotalSeconds;
                var (socketBefore, tcpBefore, tls) = await SocketBytesAsync(client, cancel);
                var clock = Stopwatch.StartNew();
                var response = await client.ForwardAsync(id, layer, x, settings.Tokens, d, dispatchWire, combineWire, cancel);
                double clusterSeconds = clock.Elapsed.TotalSeconds;
                var (socketAfter, tcpAfter, _) = await SocketBytesAsync(client, cancel);
                float[] y = response.HiddenStates.Decode();
                clock.Restart();
                float[] expected = layer is int l ? reference.ForwardLayer(l, x, settings.Tokens) : reference.ForwardStack(x, settings.Tokens);
                double localSeconds = clock.Elapsed.TotalSeconds;
                double err = RelativeError.Of(y, expected);
                bool ok = err <= tolerance;
                passed &= ok;
                int layerCount = response.Layers.Count;
                double perToken(long bytes) => (double)bytes / settings.Tokens / layerCount;
                long dispatchPayload = response.Layers.Sum(t => t.DispatchPayloadBytes), combinePayload = response.Layers.Sum(t => t.CombinePayloadBytes);
                long payload = dispatchPayload + combinePayload;
                long routedRows = response.Layers.Sum(t => (long)t.RoutedRows);
                long predicted = response.Layers.Sum(t => t.PredictedPayloadBytes);
                long message = response.Layers.Sum(t => t.DispatchMessageBytes + t.CombineMessageBytes);
                long socket = socketAfter - socketBefore;
                long tcp = tcpAfter - tcpBefore;
                int width = response.Layers[0].Width;
                output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"{id,-9} {info.Mode,-8} {d,6} {width,6} {perToken(payload),17:N0} {perToken(predicted),10:N0} {perToken(message),9:N0} {perToken(socket),9:N0} {perToken(tcp),9:N0}  {err,10:E2}  {(ok ? "ok" : "FAILED")} ({name}, cluster {clusterSeconds:F2} s after a {warmSeconds:F1} s warm-up, in-process reference {localSeconds:F2} s)"));
                rows.Add(new JsonObject
                {
                    ["model"] = id,
                    ["path"] = path,
                    ["mode"] = info.Mode,
                    ["request"] = name,
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
                    ["tcp_bytes_during_request"] = tcp,
                    ["tls"] = tls,
                    ["tcp_over_socket"] = socket > 0 ? (double)tcp / socket : null,
                    ["bytes_per_token_per_layer"] = new JsonObject
                    {
                        ["payload_measured"] = perToken(payload),
                        ["payload_predicted"] = perToken(predicted),
                        ["message_measured"] = perToken(message),
                        ["socket_measured"] = perToken(socket),
                        ["tcp_measured"] = perToken(tcp),
                    },
                    ["relative_error_vs_in_process"] = err,
                    ["tolerance"] = tolerance,
                    ["passed"] = ok,
                    ["warm_up_seconds"] = warmSeconds,
                    ["cluster_seconds"] = clusterSeconds,
                    ["in_process_seconds"] = localSeconds,
                });
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
        var layerRows = rows.OfType<JsonObject>().Where(r => r["request"]!.GetValue<string>() != "stack").ToList();
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

        var stats = await client.StatsAsync(cancel);
        report["placement"] = stats["silos"]?.DeepClone();
        report["checks_passed"] = passed;
        output.WriteLine(passed ? "every cluster output matches the in-process forward within tolerance" : "some cluster outputs differ from the in-process forward beyond tolerance");
        return report;
    }

    /// <summary>Orleans' socket bytes (messages + frames, above TLS) and the bytes written to TCP (beneath TLS), cluster-wide, silo to silo.</summary>
    private static async Task<(long Socket, long Tcp, bool Tls)> SocketBytesAsync(GatewayClient client, CancellationToken cancel)
    {
        var totals = (await client.StatsAsync(cancel))["totals"];
        return (totals?["socket_bytes"]?.GetValue<long>() ?? 0, totals?["tcp_bytes"]?.GetValue<long>() ?? 0, totals?["tls"]?.GetValue<bool>() ?? false);
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
