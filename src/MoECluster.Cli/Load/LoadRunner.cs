using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;
using MoECluster.Cli.Commands;
using MoECluster.Gateway;

namespace MoECluster.Cli.Load;

/// <summary>
/// One model the load run sends to: its id, mode, width and the MoE layer it targets (the first). When the gateway
/// refused to list its models (401/403) the shape is unknown: the target is unlisted (<see cref="Listed"/> false), its
/// requests go to <c>/v1/forward</c> of the named model (<see cref="RequestModel"/>, null: the gateway's default) so
/// that each is answered, and counted, as the gateway answers it.
/// </summary>
internal sealed record LoadTarget(string Id, string Mode, int Width, int? Layer)
{
    public bool Listed { get; init; } = true;

    public string? RequestModel { get; init; } = Id;
}

/// <summary>
/// The load engine. Open loop: arrivals from <see cref="ArrivalSchedule"/> (gamma gaps of shape --burstiness, Poisson by
/// default, at the rate or along the ramp), each request started at its intended time whatever the others do (up to the
/// --max-concurrency cap, past which it waits), latency measured from the intended start (no coordinated omission). Closed loop: C workers that send
/// back to back. Requests alternate between the models; token counts are drawn uniformly from the list.
/// </summary>
internal sealed class LoadRunner(LoadSettings settings, TextWriter output, TextWriter error)
{
    private const int BuffersPerShape = 4;

    public async Task<int> RunAsync(CancellationToken cancel)
    {
        using var http = new HttpClient(new SocketsHttpHandler { PooledConnectionLifetime = TimeSpan.FromMinutes(5) })
        {
            BaseAddress = settings.BaseAddress(),
            Timeout = Timeout.InfiniteTimeSpan,
        }.WithApiKey(settings.ApiKey);
        foreach (var (name, value) in settings.Headers)
        {
            http.DefaultRequestHeaders.TryAddWithoutValidation(name, value);
        }

        var client = new GatewayClient(http);
        var startUtc = DateTimeOffset.UtcNow;
        var (targets, modelsDocument) = await TargetsAsync(http, cancel);
        var inputs = Inputs(targets);
        var (statsBefore, _) = await TryStatsAsync(client, cancel);
        var metadata = RunMetadata.Build(settings, startUtc, modelsDocument, statsBefore);
        if (settings.Sweep is { } levels)
        {
            return await SweepAsync(levels, client, targets, inputs, metadata, cancel);
        }

        error.WriteLine($"load: {settings.Mode} loop against {settings.Url}, models {string.Join(", ", targets.Select(Describe))}, "
            + $"tokens {string.Join(",", settings.Tokens)}, {Level(settings)}, "
            + $"warm-up {F(settings.WarmupSeconds, "0.##")} s, duration {F(settings.DurationSeconds, "0.##")} s");

        var snapshot = await MeasureAsync(settings, client, targets, inputs, cancel);
        var (stats, statsError) = await TryStatsAsync(client, cancel);

        // Ctrl+C ends the run early: what was measured is still reported (requests it cut short count as failed).
        var report = LoadReport.Build(settings, targets, snapshot);
        report["metadata"] = metadata;
        ClusterCounters? cluster = statsBefore is not null && stats is not null ? ClusterCounters.From(stats).Since(ClusterCounters.From(statsBefore)) : null;
        report["cluster"] = cluster?.ToJson();
        LoadReport.PrintSummary(output, settings, report, snapshot);
        output.WriteLine(cluster?.Summary() ?? $"cluster: GET /stats failed, no messages or bytes per token from the cluster: {statsError}");
        if (settings.RecordsPath is { } recordsPath)
        {
            output.WriteLine($"records written to {Path.GetFullPath(recordsPath)}");
        }

        if (settings.JsonPath is { } path)
        {
            RunReport.Write(path, report);
            output.WriteLine($"results written to {Path.GetFullPath(path)}");
        }

        if (settings.HtmlPath is { } htmlPath)
        {
            if (statsError is not null)
            {
                // The report is still written, without the expert load.
                error.WriteLine($"load: GET /stats failed, the HTML report has no expert load: {statsError}");
            }

            HtmlReport.Write(htmlPath, HtmlReport.Build(report, snapshot, stats, statsError));
            output.WriteLine($"HTML report written to {Path.GetFullPath(htmlPath)}");
        }

        long unauthorized = snapshot.Overall.Errors[RequestErrorKind.Unauthorized] + snapshot.Warmup.Errors[RequestErrorKind.Unauthorized];
        if (unauthorized > 0)
        {
            error.WriteLine($"load: {unauthorized} requests answered 401: the gateway wants an API key ({ApiKeyOption.Hint})");
        }

        if (snapshot.Overall.Ok == 0)
        {
            error.WriteLine($"moecluster load: error: no request succeeded in the measured window ({snapshot.Overall.Failed} failed, {snapshot.Overall.Busy} busy (429) of {snapshot.Overall.Sent})");
            return CliApp.ExitFailure;
        }

        double p99 = LoadReport.PercentileMs(snapshot.Overall.Latency, 99);
        if (settings.SloP99Ms is double slo && p99 > slo)
        {
            error.WriteLine($"moecluster load: SLO missed: p99 {F(p99, "0.###")} ms > {F(slo, "0.###")} ms");
            return LoadCommand.ExitSloMissed;
        }

        return CliApp.ExitOk;
    }

    /// <summary>The cluster's <c>/stats</c>, or why it could not be read (a run goes on without it).</summary>
    private async Task<(JsonNode? Stats, string? Error)> TryStatsAsync(GatewayClient client, CancellationToken cancel)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancel);
        timeout.CancelAfter(TimeSpan.FromSeconds(Math.Min(settings.TimeoutSeconds, 15)));
        try
        {
            return (await client.StatsAsync(timeout.Token), null);
        }
        catch (Exception e) when (e is HttpRequestException or GatewayException or System.Text.Json.JsonException or OperationCanceledException)
        {
            return (null, e.Message);
        }
    }

    /// <summary>
    /// One measured run at the level of <paramref name="run"/> (its rate or workers): warm-up, measured window, the
    /// requests still in flight awaited; what it recorded.
    /// </summary>
    private async Task<LoadSnapshot> MeasureAsync(
        LoadSettings run, GatewayClient client, IReadOnlyList<LoadTarget> targets, Dictionary<(int Width, int Tokens), float[][]> inputs, CancellationToken cancel)
    {
        var recorder = new LoadRecorder(targets.Select(t => (t.Id, t.Mode)));
        using var abort = CancellationTokenSource.CreateLinkedTokenSource(cancel);
        using var cap = run.IsOpen && run.MaxConcurrency is int max ? new SemaphoreSlim(max, max) : null;
        var zeroUtc = DateTimeOffset.UtcNow;
        var clock = Stopwatch.StartNew();
        using var records = run.RecordsPath is { } recordsPath ? new RecordsWriter(recordsPath, zeroUtc, Stopwatch.Frequency) : null;
        long warmupTicks = Ticks(run.WarmupSeconds);
        long endTicks = warmupTicks + Ticks(run.DurationSeconds);
        var engine = new Engine(run, client, targets, inputs, recorder, clock, warmupTicks, cap, records, abort.Token);

        using var progressStop = new CancellationTokenSource();
        var progress = ProgressAsync(recorder, clock, warmupTicks, progressStop.Token);
        var requests = run.IsOpen ? await engine.OpenLoopAsync(endTicks, cancel) : await engine.ClosedLoopAsync(endTicks, cancel);

        // Requests still in flight are awaited (each has its own timeout); past a grace period they are cancelled,
        // which ends them as failed: every request sent is counted ok or failed.
        var all = Task.WhenAll(requests);
        try
        {
            await all.WaitAsync(TimeSpan.FromSeconds(run.TimeoutSeconds + 5), CancellationToken.None);
        }
        catch (TimeoutException)
        {
            await abort.CancelAsync();
            await all;
        }

        await progressStop.CancelAsync();
        await progress;
        return recorder.Snapshot();
    }

    /// <summary>
    /// <c>--sweep</c>: one measured run per level, one after another against the same cluster, each with its own
    /// warm-up; a line per step, then the table, the goodput under <c>--slo-p99</c>, the JSON and the HTML.
    /// Exit 3 when no step meets the SLO, 1 when no step had a request answered.
    /// </summary>
    private async Task<int> SweepAsync(
        IReadOnlyList<double> levels, GatewayClient client, IReadOnlyList<LoadTarget> targets, Dictionary<(int Width, int Tokens), float[][]> inputs,
        JsonObject metadata, CancellationToken cancel)
    {
        error.WriteLine($"load: sweep, {settings.Mode} loop against {settings.Url}, models {string.Join(", ", targets.Select(Describe))}, "
            + $"tokens {string.Join(",", settings.Tokens)}, {SweepReport.LevelName(settings.Mode)} {string.Join(",", levels.Select(SweepReport.LevelText))}, "
            + $"each step warm-up {F(settings.WarmupSeconds, "0.##")} s, duration {F(settings.DurationSeconds, "0.##")} s");
        var steps = new List<SweepStep>();
        foreach (double level in levels)
        {
            if (cancel.IsCancellationRequested)
            {
                break;
            }

            var snapshot = await MeasureAsync(settings.AtLevel(level), client, targets, inputs, cancel);
            var step = SweepStep.From(level, snapshot, settings.DurationSeconds);
            steps.Add(step);
            error.WriteLine(SweepReport.ProgressLine(steps.Count - 1, levels.Count, settings.Mode, step));
        }

        var report = SweepReport.Build(settings, steps);
        report["metadata"] = metadata;
        SweepReport.PrintSummary(output, settings, steps);
        if (settings.JsonPath is { } path)
        {
            RunReport.Write(path, report);
            output.WriteLine($"results written to {Path.GetFullPath(path)}");
        }

        if (settings.HtmlPath is { } htmlPath)
        {
            HtmlReport.Write(htmlPath, SweepReport.Html(report, steps));
            output.WriteLine($"HTML report written to {Path.GetFullPath(htmlPath)}");
        }

        if (steps.All(s => s.Ok == 0))
        {
            error.WriteLine($"moecluster load: error: no request succeeded in any step's measured window ({steps.Sum(s => s.Failed)} failed of {steps.Sum(s => s.Sent)})");
            return CliApp.ExitFailure;
        }

        if (settings.SloP99Ms is double slo && SweepReport.Goodput(steps, slo) is null)
        {
            error.WriteLine($"moecluster load: SLO missed: no step has p99 <= {F(slo, "0.###")} ms with no failed request");
            return LoadCommand.ExitSloMissed;
        }

        return CliApp.ExitOk;
    }

    private static string Describe(LoadTarget t) => t.Listed ? $"{t.Id} ({t.Mode}, layer {t.Layer})" : $"{t.Id} (not listed: shape unknown)";

    private static string Level(LoadSettings run)
    {
        if (!run.IsOpen)
        {
            return $"concurrency {run.Concurrency}";
        }

        string rate = run.RampUp is { } ramp
            ? $"rate {ramp.Strategy} ramp {F(ramp.StartRps, "0.##")} -> {F(ramp.EndRps, "0.##")}/s"
            : $"rate {F(run.Rate, "0.##")}/s";
        return rate + $", burstiness {F(run.Burstiness, "0.###")}" + (run.MaxConcurrency is int cap ? $", max concurrency {cap}" : string.Empty);
    }

    /// <summary>
    /// The targets from <c>GET /v1/models</c> (either shape: a list of models or <c>{"object":"list","data":[...]}</c>)
    /// and the document itself. When the gateway refuses the listing for want of a key (401, 403) the run still goes
    /// on, to count how the gateway answers each request: the targets are the <c>--models</c> named (or the
    /// gateway's default), unlisted.
    /// </summary>
    private async Task<(IReadOnlyList<LoadTarget> Targets, JsonNode? Document)> TargetsAsync(HttpClient http, CancellationToken cancel)
    {
        JsonNode? document;
        using (var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancel))
        {
            timeout.CancelAfter(TimeSpan.FromSeconds(Math.Min(settings.TimeoutSeconds, 15)));
            try
            {
                using var response = await http.GetAsync("/v1/models", timeout.Token);
                string text = await response.Content.ReadAsStringAsync(timeout.Token);
                if (response.StatusCode is System.Net.HttpStatusCode.Unauthorized or System.Net.HttpStatusCode.Forbidden)
                {
                    error.WriteLine($"load: GET /v1/models answered {(int)response.StatusCode} ({ErrorText(text)}; {ApiKeyOption.Hint}): "
                        + "the models' shapes are unknown; the run goes on to count how the gateway answers each request");
                    return ([.. (settings.Models ?? ["default"]).Select(id => new LoadTarget(id, "unknown", 1, null) { Listed = false, RequestModel = settings.Models is null ? null : id })], null);
                }

                if (!response.IsSuccessStatusCode)
                {
                    throw new HttpRequestException($"{(int)response.StatusCode}: {ErrorText(text)}");
                }

                document = JsonNode.Parse(text);
            }
            catch (Exception e) when (!cancel.IsCancellationRequested && e is HttpRequestException or System.Text.Json.JsonException or OperationCanceledException)
            {
                throw new UsageException($"cannot list the models of the gateway at {settings.Url} (GET /v1/models): {e.Message}");
            }
        }

        IReadOnlyList<ServedModel> served;
        try
        {
            served = RunMetadata.ServedModels(document);
        }
        catch (System.Text.Json.JsonException e)
        {
            throw new UsageException($"cannot list the models of the gateway at {settings.Url} (GET /v1/models): {e.Message}");
        }

        var byId = served.ToDictionary(m => m.Id, StringComparer.Ordinal);
        var ids = settings.Models ?? [.. served.Select(m => m.Id)];
        if (ids.Count == 0)
        {
            throw new UsageException($"the gateway at {settings.Url} serves no model");
        }

        var targets = new List<LoadTarget>();
        foreach (string id in ids)
        {
            if (!byId.TryGetValue(id, out var m))
            {
                throw new UsageException($"--models: '{id}' is not served by {settings.Url} (served: {string.Join(", ", served.Select(s => s.Id))})");
            }

            if (m.MoeLayers.Count == 0)
            {
                throw new UsageException($"model '{id}' has no MoE layer");
            }

            targets.Add(new LoadTarget(m.Id, m.Mode, m.HiddenSize, m.MoeLayers[0]));
        }

        return (targets, document);
    }

    /// <summary>The gateway's JSON <c>error</c>, else the body's text (shortened).</summary>
    private static string ErrorText(string body)
    {
        try
        {
            if (JsonNode.Parse(body)?["error"] is JsonValue v && v.TryGetValue(out string? text))
            {
                return text;
            }
        }
        catch (System.Text.Json.JsonException)
        {
        }

        return body.Length > 200 ? body[..200] : body;
    }

    /// <summary>A few Gaussian [tokens, width] batches per (width, tokens), deterministic from the seed, shared read-only.</summary>
    private Dictionary<(int Width, int Tokens), float[][]> Inputs(IReadOnlyList<LoadTarget> targets)
    {
        var rng = new Random(unchecked((int)(settings.Seed ^ (settings.Seed >> 32))));
        var inputs = new Dictionary<(int, int), float[][]>();
        foreach (int width in targets.Select(t => t.Width).Distinct())
        {
            foreach (int tokens in settings.Tokens.Distinct())
            {
                var buffers = new float[BuffersPerShape][];
                for (int b = 0; b < buffers.Length; b++)
                {
                    var x = new float[checked(width * tokens)];
                    for (int i = 0; i < x.Length; i++)
                    {
                        x[i] = (float)Gaussian(rng);
                    }

                    buffers[b] = x;
                }

                inputs[(width, tokens)] = buffers;
            }
        }

        return inputs;
    }

    private static double Gaussian(Random rng)
    {
        double u1 = 1.0 - rng.NextDouble();
        double u2 = rng.NextDouble();
        return Math.Sqrt(-2.0 * Math.Log(u1)) * Math.Cos(2.0 * Math.PI * u2);
    }

    private async Task ProgressAsync(LoadRecorder recorder, Stopwatch clock, long warmupTicks, CancellationToken stop)
    {
        using var timer = new PeriodicTimer(TimeSpan.FromSeconds(1));
        long lastTokens = 0;
        long lastTicks = 0;
        try
        {
            while (await timer.WaitForNextTickAsync(stop))
            {
                long now = clock.ElapsedTicks;
                var p = recorder.Progress();
                double seconds = (double)(now - lastTicks) / Stopwatch.Frequency;
                double tokensPerSecond = seconds > 0 ? (p.Tokens - lastTokens) / seconds : 0;
                lastTokens = p.Tokens;
                lastTicks = now;
                string phase = now < warmupTicks ? " (warm-up)" : string.Empty;
                string lat = p.P50 is double p50 && p.P99 is double p99 ? $"p50 {F(p50, "0.00")} ms  p99 {F(p99, "0.00")} ms" : "p50 -  p99 -";
                error.WriteLine($"load {F((double)now / Stopwatch.Frequency, "0.0")} s{phase}  sent {p.Sent}  ok {p.Ok}  failed {p.Failed}  busy {p.Busy}  {lat}  {F(tokensPerSecond, "0")} tokens/s");
            }
        }
        catch (OperationCanceledException)
        {
        }
    }

    internal static long Ticks(double seconds) => (long)(seconds * Stopwatch.Frequency);

    internal static string F(double v, string format) => v.ToString(format, CultureInfo.InvariantCulture);

    /// <summary>Sends the requests and records them; one per run.</summary>
    private sealed class Engine(
        LoadSettings settings, GatewayClient client, IReadOnlyList<LoadTarget> targets, Dictionary<(int Width, int Tokens), float[][]> inputs,
        LoadRecorder recorder, Stopwatch clock, long warmupTicks, SemaphoreSlim? cap, RecordsWriter? records, CancellationToken abort)
    {
        private readonly long _lateThresholdMicros = (long)(settings.LateThresholdMs * 1000);
        private long _next = -1;

        public async Task<List<Task>> OpenLoopAsync(long endTicks, CancellationToken cancel)
        {
            var schedule = new ArrivalSchedule(settings.Rate, settings.Burstiness, settings.RampUp, settings.WarmupSeconds, settings.DurationSeconds, settings.Seed);
            var requests = new List<Task>();
            while (!cancel.IsCancellationRequested)
            {
                long intended = Ticks(schedule.Next());
                if (intended >= endTicks)
                {
                    break;
                }

                long wait = intended - clock.ElapsedTicks;
                if (wait > 0)
                {
                    try
                    {
                        // Timers have millisecond granularity and can fire up to a tick early: sleep for the whole
                        // milliseconds, then spin the rest, so no request starts before its intended time (a request
                        // started early would measure a latency too small, down to nothing).
                        long wholeMs = wait * 1000 / Stopwatch.Frequency - 1;
                        if (wholeMs > 0)
                        {
                            await Task.Delay(TimeSpan.FromMilliseconds(wholeMs), cancel);
                        }

                        while (clock.ElapsedTicks < intended && !cancel.IsCancellationRequested)
                        {
                            Thread.SpinWait(64);
                        }
                    }
                    catch (OperationCanceledException)
                    {
                        break;
                    }
                }

                // Behind schedule (a slow timer or a busy machine): the request still counts from its intended time,
                // and, started more than the late threshold after it, as late. Past the --max-concurrency cap it waits
                // for a request to end, also counted from its intended time.
                requests.Add(Task.Run(() => OneAsync(intended), CancellationToken.None));
            }

            return requests;
        }

        public async Task<List<Task>> ClosedLoopAsync(long endTicks, CancellationToken cancel)
        {
            var workers = Enumerable.Range(0, settings.Concurrency).Select(_ => Task.Run(async () =>
            {
                while (!cancel.IsCancellationRequested)
                {
                    long start = clock.ElapsedTicks;
                    if (start >= endTicks)
                    {
                        return;
                    }

                    if (await OneAsync(start) is TimeSpan retryAfter)
                    {
                        // A 429 came with Retry-After: this worker honours it (never past the end of the run).
                        long left = endTicks - clock.ElapsedTicks;
                        var wait = TimeSpan.FromSeconds(Math.Min(retryAfter.TotalSeconds, Math.Max(0, left) / (double)Stopwatch.Frequency));
                        if (wait > TimeSpan.Zero)
                        {
                            try
                            {
                                await Task.Delay(wait, cancel);
                            }
                            catch (OperationCanceledException)
                            {
                                return;
                            }
                        }
                    }
                }
            }, CancellationToken.None)).ToList();
            await Task.WhenAll(workers);
            return workers;
        }

        /// <summary>One request, recorded; the Retry-After of a 429 (an expert shard's queue full), null otherwise.</summary>
        private async Task<TimeSpan?> OneAsync(long intendedTicks)
        {
            long n = Interlocked.Increment(ref _next);
            var target = targets[(int)(n % targets.Count)];
            int tokens = settings.Tokens[(int)(Mix(settings.Seed, (ulong)n) % (ulong)settings.Tokens.Count)];
            var buffers = inputs[(target.Width, tokens)];
            float[] hidden = buffers[(int)(n / targets.Count % buffers.Length)];
            var phase = intendedTicks < warmupTicks ? LoadPhase.Warmup : LoadPhase.Measured;
            recorder.Sent(target.Id, phase);
            bool waited = false, holding = false, started = false;
            long startTicks = intendedTicks;
            int status = 0;
            string outcome = "ok";
            string? errorText = null;
            TimeSpan? retryAfter = null;
            try
            {
                if (cap is not null)
                {
                    if (!cap.Wait(0))
                    {
                        waited = true;
                        await cap.WaitAsync(abort);
                    }

                    holding = true;
                }

                startTicks = clock.ElapsedTicks;
                recorder.Started(phase, (startTicks - intendedTicks) * 1_000_000 / Stopwatch.Frequency, waited, _lateThresholdMicros);
                started = true;
                using var timeout = CancellationTokenSource.CreateLinkedTokenSource(abort);
                timeout.CancelAfter(TimeSpan.FromSeconds(settings.TimeoutSeconds));
                var response = await client.ForwardAsync(target.RequestModel, target.Layer, hidden, tokens, target.Width, settings.Wire.Dispatch, settings.Wire.Combine, timeout.Token);
                status = 200;
                long micros = (clock.ElapsedTicks - intendedTicks) * 1_000_000 / Stopwatch.Frequency;
                long payload = response.Layers.Sum(l => l.DispatchPayloadBytes + l.CombinePayloadBytes);
                long predicted = response.Layers.Sum(l => l.PredictedPayloadBytes);
                long rows = response.Layers.Sum(l => (long)l.RoutedRows);
                long trafficTokens = response.Layers.Sum(l => (long)l.Tokens);
                double endSeconds = (double)(clock.ElapsedTicks - warmupTicks) / Stopwatch.Frequency;
                recorder.Ok(target.Id, phase, micros, endSeconds, tokens, payload, predicted, rows, trafficTokens);
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                // HTTP errors, timeouts, connection errors, undecodable answers: counted by kind and status, never lost.
                // A 429 (an expert shard's queue full) is back-pressure: counted apart as busy, not as failed.
                var kind = RequestError.Of(e);
                status = kind.Status;
                outcome = kind.Name;
                errorText = e.Message;
                if (kind.Kind == RequestErrorKind.Busy)
                {
                    recorder.Busy(target.Id, phase);
                    retryAfter = (e as GatewayException)?.RetryAfter;
                }
                else
                {
                    recorder.Failed(target.Id, phase, kind);
                }
            }
            finally
            {
                if (started)
                {
                    recorder.Ended();
                }

                if (holding)
                {
                    cap!.Release();
                }
            }

            records?.Write(new RequestRecord(n, phase, target.Id, tokens, intendedTicks, startTicks, clock.ElapsedTicks, waited, status, outcome, errorText));
            return retryAfter;
        }

        private static ulong Mix(ulong seed, ulong n)
        {
            ulong z = seed + (n + 1) * 0x9E3779B97F4A7C15UL;
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
            return z ^ (z >> 31);
        }
    }
}
