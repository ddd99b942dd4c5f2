using System.Diagnostics;
using System.Globalization;
using System.Net.Http.Headers;
using System.Text.Json.Nodes;
using MoECluster.Cli.Load;
using MoECluster.Cluster.Hosting;
using MoECluster.Gateway;
using MoECluster.Model.Analysis;
using MoECluster.Model.Configuration;
using MoECluster.Wire;

namespace MoECluster.Cli.Commands;

/// <summary>
/// <c>moecluster cost --check-load URL</c>: the measured profile's prediction of a closed-loop <c>moecluster load</c>
/// against a running local cluster (all its processes and the load client on this machine), checked in the same run.
/// The machine is taken as saturated: a token costs the sum of the machine's time on each part of its path, each
/// measured here, now:
/// <list type="bullet">
/// <item>the layer at the front-end's batch (the cluster merges concurrent requests; a closed loop with one forward in
/// flight alternates two halves of its workers, so a forward carries about ⌈W/2⌉·T tokens): timed in this process as
/// <c>bench --layer-only</c> times it, divided by the batch;</item>
/// <item>the request's way in: W workers post forward requests of T tokens, encoded as <c>moecluster load</c> encodes
/// them, to the gateway, which reads and decodes each and refuses it at the layer (a layer that is not a number), for
/// about two seconds: the machine's time per request, divided by T;</item>
/// <item>the answer's way out: a [T, d] fp32 answer encoded and decoded by the real code on one core (divided by the
/// cores) and its bytes over the measured loopback;</item>
/// <item>the routed rows: the layer's routed payload per token, both directions, over the measured loopback.</item>
/// </list>
/// Not counted: Orleans' messaging, TLS and the wire codecs on the routed rows, the processes' threads contending
/// for the cores. The check prints each part, so a miss shows where the time went.
/// </summary>
internal static class LoadPrediction
{
    /// <summary>The front-end batch a closed loop of <paramref name="workers"/> × <paramref name="tokens"/> settles at.</summary>
    internal static int ClosedLoopBatch(int workers, int tokens) => ((workers + 1) / 2) * tokens;

    internal static async Task<(JsonObject Json, bool Passed)> CheckAsync(TextWriter o, Uri url, string? apiKey, string modelId, string directory,
        MoeModelConfig config, HardwareProfile hardware, int workers, int tokens, double seconds, double tolerance, CancellationToken cancel)
    {
        var inv = CultureInfo.InvariantCulture;
        int batch = ClosedLoopBatch(workers, tokens);
        o.WriteLine(string.Create(inv, $"check against moecluster load at {url}: model {modelId}, closed loop, {workers} workers x {tokens} tokens (front-end batch about {batch} tokens)"));

        ServedModel served;
        using (var http = new HttpClient { BaseAddress = url, Timeout = TimeSpan.FromSeconds(30) }.WithApiKey(apiKey))
        {
            served = (await new GatewayClient(http).ModelsAsync(cancel)).FirstOrDefault(m => m.Id == modelId)
                ?? throw new UsageException($"--load-model '{modelId}' is not served at {url}");
        }

        if (served.HiddenSize != config.HiddenSize || served.Experts != config.NRoutedExperts || served.TopK != config.NumExpertsPerTok || served.LatentSize != config.MoeLatentSize)
        {
            throw new UsageException($"--load-model '{modelId}' at {url} (d {served.HiddenSize}, latent {served.LatentSize?.ToString(inv) ?? "none"}, N {served.Experts}, K {served.TopK}) is not the model of --model");
        }

        double layerSeconds = LayerSeconds(directory, config, batch);
        double requestSeconds = await RequestPathSecondsAsync(url, apiKey, modelId, config.HiddenSize, workers, tokens, cancel);
        double answerSeconds = AnswerSeconds(modelId, config.HiddenSize, tokens) / Environment.ProcessorCount
            + (double)tokens * config.HiddenSize * 4 / hardware.NetworkBytesPerSecond;
        // A token's row goes once to each shard that holds one of its experts (bf16 both ways, the default wire).
        double rowsPerToken = Model.Dispatch.ShardDispatchPlan.ExpectedRowsPerToken(
            new Model.Dispatch.ExpertRoutingTable(modelId, served.MoeLayers[0], served.Experts, served.ShardsPerLayer), served.TopK);
        double routedSecondsPerToken = rowsPerToken * config.RoutedWidth * 2 * 2 / hardware.NetworkBytesPerSecond;

        var parts = new (string Name, double SecondsPerToken)[]
        {
            (string.Create(inv, $"layer at {batch} tokens (in-process, managed)"), layerSeconds / batch),
            ($"request in (client encode, HTTP, gateway read and decode; {workers} workers)", requestSeconds / tokens),
            ("answer out (encode, decode, loopback)", answerSeconds / tokens),
            (string.Create(inv, $"routed rows over loopback ({rowsPerToken:F2} rows a token, bf16 both ways)"), routedSecondsPerToken),
        };
        double perToken = parts.Sum(p => p.SecondsPerToken);
        double predicted = 1 / perToken;
        o.WriteLine($"{"part",-70} {"us/token",10} {"share",7}");
        foreach (var (name, s) in parts)
        {
            o.WriteLine(string.Create(inv, $"{name,-70} {s * 1e6,10:F1} {s / perToken,7:P0}"));
        }

        o.WriteLine(string.Create(inv, $"predicted: {predicted:F0} tokens/s; running moecluster load for {seconds:0.#} s ..."));
        var (measured, report) = await RunLoadAsync(url, apiKey, modelId, workers, tokens, seconds, cancel);
        double ratio = measured / predicted;
        bool ok = Math.Abs(ratio - 1) <= tolerance;
        double? frontEndBatch = report?["cluster"]?["frontend_tokens_per_forward"]?.GetValue<double>();
        o.WriteLine(string.Create(inv,
            $"measured: {measured:F0} tokens/s (front-end batch {(frontEndBatch is double b ? b.ToString("F1", inv) : "?")} tokens); measured / predicted {ratio:F2} {(ok ? "ok" : "OFF")}"));
        var json = new JsonObject
        {
            ["url"] = url.ToString(),
            ["model"] = modelId,
            ["workers"] = workers,
            ["tokens"] = tokens,
            ["assumed_frontend_batch"] = batch,
            ["measured_frontend_batch"] = frontEndBatch,
            ["parts"] = new JsonArray([.. parts.Select(p => (JsonNode)new JsonObject { ["part"] = p.Name, ["seconds_per_token"] = p.SecondsPerToken })]),
            ["predicted_tokens_per_second"] = predicted,
            ["measured_tokens_per_second"] = measured,
            ["measured_over_predicted"] = ratio,
            ["within_tolerance"] = ok,
        };
        return (json, ok);
    }

    /// <summary>The model's first MoE layer at <paramref name="batch"/> tokens in this process, best of repetitions over a second.</summary>
    private static double LayerSeconds(string directory, MoeModelConfig config, int batch)
    {
        var compute = ComputeBackends.Create(ComputeBackends.Managed, out _);
        using var disposeBackend = compute as IDisposable;
        using var moe = Model.Layers.MoeModel.Open(directory, compute);
        int layer = moe.FirstMoeLayer;
        float[] x = BenchCommand.RandomValues(batch * config.HiddenSize, 11);
        return BenchCommand.BestSeconds(() => moe.ForwardLayer(layer, x, batch), 1.0);
    }

    /// <summary>
    /// The machine's time per request on the way in: <paramref name="workers"/> clients post forward requests of
    /// <paramref name="tokens"/> tokens that the gateway reads, decodes and refuses at the layer, for about two seconds
    /// after half a second of warm-up; elapsed time over requests answered.
    /// </summary>
    private static async Task<double> RequestPathSecondsAsync(Uri url, string? apiKey, string modelId, int width, int workers, int tokens, CancellationToken cancel)
    {
        using var http = new HttpClient { BaseAddress = url, Timeout = TimeSpan.FromSeconds(30) }.WithApiKey(apiKey);
        float[] hidden = BenchCommand.RandomValues(tokens * width, 13);
        long count = 0;
        bool counting = false;
        var stop = Stopwatch.StartNew();
        long started = 0;
        async Task WorkerAsync()
        {
            while (stop.Elapsed < TimeSpan.FromSeconds(2.5))
            {
                var request = new GatewayForwardRequest { Model = modelId, HiddenStates = ActivationBlock.Encode(hidden, tokens, width, WireDType.F32) };
                using var content = new ByteArrayContent(WireFormat.Serialize(request));
                content.Headers.ContentType = new MediaTypeHeaderValue(GatewayEndpoints.MessagePackContentType);
                using var response = await http.PostAsync("/v1/layers/probe/forward", content, cancel);
                await response.Content.ReadAsByteArrayAsync(cancel);
                if (response.StatusCode != System.Net.HttpStatusCode.NotFound)
                {
                    throw new InvalidOperationException($"the request-path probe expected 404 (a layer that is not a number) from {url}, got {(int)response.StatusCode}");
                }

                if (Volatile.Read(ref counting))
                {
                    Interlocked.Increment(ref count);
                }
            }
        }

        var all = Enumerable.Range(0, workers).Select(_ => Task.Run(WorkerAsync, cancel)).ToArray();
        await Task.Delay(TimeSpan.FromSeconds(0.5), cancel);
        started = Stopwatch.GetTimestamp();
        Volatile.Write(ref counting, true);
        await Task.WhenAll(all);
        double elapsed = Stopwatch.GetElapsedTime(started).TotalSeconds;
        return count > 0 ? elapsed / count : throw new InvalidOperationException("the request-path probe got no answer");
    }

    /// <summary>One core's time to encode a [tokens, width] fp32 answer as the gateway does and decode it as the client does.</summary>
    private static double AnswerSeconds(string modelId, int width, int tokens)
    {
        var answer = new GatewayForwardResponse
        {
            Model = modelId,
            HiddenStates = ActivationBlock.Encode(BenchCommand.RandomValues(tokens * width, 17), tokens, width, WireDType.F32),
            Layers = [new GatewayLayerTraffic { Layer = 1, Mode = "latent", Wire = "bf16/bf16", WireDispatch = "bf16", WireCombine = "bf16", Tokens = tokens, Width = width }],
        };
        var limits = new WireLimits();
        return BenchCommand.BestSeconds(() => GatewayWire.DecodeResponse(WireFormat.Serialize(answer), limits), 0.5);
    }

    /// <summary>A closed-loop <c>moecluster load</c> run in this process (3 s warm-up): its tokens per second and its report.</summary>
    private static async Task<(double TokensPerSecond, JsonNode? Report)> RunLoadAsync(Uri url, string? apiKey, string modelId, int workers, int tokens, double seconds, CancellationToken cancel)
    {
        string json = Path.Combine(Path.GetTempPath(), $"moecluster-cost-load-{Environment.ProcessId}.json");
        try
        {
            var settings = new LoadSettings(url.ToString().TrimEnd('/'), LoadSettings.Closed, 0, workers, seconds, 3, [tokens], [modelId],
                new WireChoice(null, null), json, null, null, 7, 60, "moecluster cost --check-load", apiKey);
            settings.Validate();
            using var quiet = new StringWriter(CultureInfo.InvariantCulture);
            int rc = await new LoadRunner(settings, quiet, quiet).RunAsync(cancel);
            var report = JsonNode.Parse(await File.ReadAllTextAsync(json, cancel));
            long failed = report?["requests"]?["failed"]?.GetValue<long>() ?? 0;
            if (rc != 0 || failed > 0)
            {
                throw new InvalidOperationException($"the load run failed (exit {rc}, {failed} failed requests):\n{quiet}");
            }

            return (report!["tokens_per_second"]!.GetValue<double>(), report);
        }
        finally
        {
            File.Delete(json);
        }
    }
}
