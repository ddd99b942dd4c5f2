using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;
using HdrHistogram;
using MoECluster.Cli.Commands;
using MoECluster.Cluster.Hosting;
using MoECluster.Gateway;
using MoECluster.Model.Layers;
using MoECluster.Model.Numerics;

namespace MoECluster.Cli.Chaos;

/// <summary>
/// A chaos run against a live cluster: closed-loop load whose every answer is checked against the in-process forward
/// (references computed before the run on the same compute backend as the silos), while silo processes — the
/// front-end included — are killed (SIGKILL), hung (SIGSTOP, then SIGCONT) or stopped (SIGTERM) one at a time, each
/// fault followed by a wait until the cluster is whole again (its supervisor restarted what died, <c>/health</c> is
/// "ok", a checked forward succeeds). A request that meets a fault is retried — a forward is idempotent — on transport
/// errors and 429/502/503/504 until its deadline; anything else, a deadline passed, or an answer off the reference
/// fails it. Passed: no failed request, no wrong answer, every fault recovered.
/// </summary>
internal sealed class ChaosRunner(ChaosSettings settings, TextWriter output, TextWriter error)
{
    private readonly ConcurrentDictionary<string, long> _attemptErrors = new(StringComparer.Ordinal);
    private readonly ConcurrentQueue<string> _failures = new();
    private readonly LongHistogram _latency = new(TimeStamp.Hours(1), 3);
    private readonly object _latencyLock = new();
    private long _sent;
    private long _ok;
    private long _failed;
    private long _wrong;
    private long _retried;
    private long _checked;
    private double _worstError;

    private sealed record Target(string Model, int? Layer, int Tokens, int Width, float[][] Inputs, float[][] References);

    private sealed record Fault(double AtSeconds, string Kind, SiloProcess Silo, double HangSeconds)
    {
        public double? RecoveredAfterSeconds { get; set; }

        public int? ReplacementPid { get; set; }

        public string? Note { get; set; }
    }

    public async Task<int> RunAsync(CancellationToken cancel)
    {
        using var http = new HttpClient { BaseAddress = new Uri(settings.Url), Timeout = Timeout.InfiniteTimeSpan }.WithApiKey(settings.ApiKey);
        var client = new GatewayClient(http);
        var served = await WaitForModelsAsync(client, cancel);
        var targets = References(served);
        var silos = SiloProcesses.Find(settings.LauncherPid);
        if (!silos.Any(s => s.Role == "frontend") || !silos.Any(s => s.Role == "expert"))
        {
            throw new UsageException($"found {silos.Count} silo process(es) ({string.Join(", ", silos.Select(s => $"{s.Name} {s.Pid}"))}); a chaos run needs the front-end and at least one expert silo"
                + (settings.LauncherPid is int p ? $" under launcher pid {p}" : string.Empty));
        }

        error.WriteLine($"chaos: {silos.Count} silos ({string.Join(", ", silos.Select(s => $"{s.Name} pid {s.Pid}"))}), {targets.Count} request shapes checked against the in-process forward, "
            + $"{settings.Concurrency} workers, faults {string.Join("/", settings.Faults)} every ~{F(settings.FaultIntervalSeconds, "0.#")} s for {F(settings.DurationSeconds, "0.#")} s");
        if (!await WaitRecoveredAsync(client, targets[0], silos.Count, cancel))
        {
            throw new InvalidOperationException("the cluster is not whole before the run (health not ok, or a checked forward fails)");
        }

        var clock = Stopwatch.StartNew();
        using var stopLoad = new CancellationTokenSource();
        double loadEnd = settings.WarmupSeconds + settings.DurationSeconds;
        var workers = Enumerable.Range(0, settings.Concurrency)
            .Select(w => Task.Run(() => WorkerAsync(client, targets, w, clock, loadEnd, cancel), CancellationToken.None)).ToArray();
        var faults = await FaultsAsync(client, targets[0], silos, clock, loadEnd, cancel);
        await Task.WhenAll(workers);
        double measured = clock.Elapsed.TotalSeconds;

        var report = Report(silos, faults, measured);
        if (settings.JsonPath is string json)
        {
            Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(json))!);
            await File.WriteAllTextAsync(json, report.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }), cancel);
        }

        string markdown = Markdown(report);
        if (settings.MarkdownPath is string md)
        {
            Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(md))!);
            await File.WriteAllTextAsync(md, markdown, cancel);
        }

        output.Write(markdown);
        return report["passed"]!.GetValue<bool>() ? CliApp.ExitOk : CliApp.ExitFailure;
    }

    private async Task<IReadOnlyList<ServedModel>> WaitForModelsAsync(GatewayClient client, CancellationToken cancel)
    {
        var clock = Stopwatch.StartNew();
        while (true)
        {
            try
            {
                using var attempt = CancellationTokenSource.CreateLinkedTokenSource(cancel);
                attempt.CancelAfter(TimeSpan.FromSeconds(10));
                return await client.ModelsAsync(attempt.Token);
            }
            catch (Exception e) when (e is HttpRequestException or GatewayException { StatusCode: >= 500 } or OperationCanceledException && !cancel.IsCancellationRequested)
            {
                if (clock.Elapsed.TotalSeconds > settings.RecoveryTimeoutSeconds)
                {
                    throw new InvalidOperationException($"the gateway at {settings.Url} did not list its models within {F(settings.RecoveryTimeoutSeconds, "0")} s: {e.Message}", e);
                }

                await Task.Delay(500, cancel);
            }
        }
    }

    /// <summary>Inputs and their in-process answers: per served model, its first MoE layer and its stack, each token count.</summary>
    private List<Target> References(IReadOnlyList<ServedModel> served)
    {
        var targets = new List<Target>();
        var rng = new Random(unchecked((int)settings.Seed));
        foreach (var (id, dir) in settings.Models)
        {
            var model = served.FirstOrDefault(m => m.Id == id)
                ?? throw new UsageException($"the cluster serves no model '{id}'; it serves {string.Join(", ", served.Select(m => m.Id))}");
            var backend = ComputeBackends.Create(settings.Backend, out string note);
            try
            {
                using var moe = MoeModel.Open(dir, backend);
                if (moe.Config.HiddenSize != model.HiddenSize || moe.Config.NRoutedExperts != model.Experts)
                {
                    throw new UsageException($"--model {id}={dir}: d={moe.Config.HiddenSize}, {moe.Config.NRoutedExperts} experts; the cluster's {id} has d={model.HiddenSize}, {model.Experts} experts");
                }

                var clock = Stopwatch.StartNew();
                foreach (int? layer in new int?[] { model.MoeLayers[0], null })
                {
                    foreach (int tokens in settings.Tokens)
                    {
                        var inputs = new float[settings.InputsPerShape][];
                        var references = new float[settings.InputsPerShape][];
                        for (int i = 0; i < inputs.Length; i++)
                        {
                            inputs[i] = [.. Enumerable.Range(0, tokens * model.HiddenSize).Select(_ => (float)((rng.NextDouble() * 2) - 1))];
                            references[i] = layer is int l ? moe.ForwardLayer(l, inputs[i], tokens) : moe.ForwardStack(inputs[i], tokens);
                        }

                        targets.Add(new Target(id, layer, tokens, model.HiddenSize, inputs, references));
                    }
                }

                error.WriteLine($"chaos: references for {id} ({model.Mode}) on the {note} in {F(clock.Elapsed.TotalSeconds, "0.0")} s");
            }
            finally
            {
                (backend as IDisposable)?.Dispose();
            }
        }

        return targets;
    }

    private async Task WorkerAsync(GatewayClient client, IReadOnlyList<Target> targets, int worker, Stopwatch clock, double loadEnd, CancellationToken cancel)
    {
        var rng = new Random(unchecked((int)settings.Seed) + (worker * 7919) + 1);
        while (!cancel.IsCancellationRequested && clock.Elapsed.TotalSeconds < loadEnd)
        {
            var target = targets[rng.Next(targets.Count)];
            int input = rng.Next(target.Inputs.Length);
            bool measured = clock.Elapsed.TotalSeconds >= settings.WarmupSeconds;
            var (ok, wrong, attempts, reason, error) = await ForwardCheckedAsync(client, target, input, settings.RequestDeadlineSeconds, cancel);
            if (!measured)
            {
                continue;
            }

            Interlocked.Increment(ref _sent);
            if (attempts > 1)
            {
                Interlocked.Increment(ref _retried);
            }

            if (ok)
            {
                Interlocked.Increment(ref _ok);
                lock (_latencyLock)
                {
                    _latency.RecordValue(Math.Max(1, (long)(reason * 1000)));
                }
            }
            else
            {
                Interlocked.Increment(ref wrong ? ref _wrong : ref _failed);
                if (_failures.Count < 20)
                {
                    _failures.Enqueue(string.Create(CultureInfo.InvariantCulture, $"t={clock.Elapsed.TotalSeconds:F1} s {target.Model} {(target.Layer is int l ? $"layer {l}" : "stack")} T={target.Tokens} input {input}: {error}"));
                }
            }
        }
    }

    /// <summary>
    /// One forward, retried on what a fault causes until <paramref name="deadlineSeconds"/>, its answer checked.
    /// Returns (ok, wrong answer, attempts, seconds from first attempt to answer, what went wrong).
    /// </summary>
    private async Task<(bool Ok, bool Wrong, int Attempts, double Seconds, string Error)> ForwardCheckedAsync(
        GatewayClient client, Target target, int input, double deadlineSeconds, CancellationToken cancel)
    {
        var clock = Stopwatch.StartNew();
        int attempts = 0;
        string last = string.Empty;
        while (!cancel.IsCancellationRequested)
        {
            attempts++;
            double left = deadlineSeconds - clock.Elapsed.TotalSeconds;
            if (left <= 0)
            {
                return (false, false, attempts - 1, clock.Elapsed.TotalSeconds, $"no answer within the {F(deadlineSeconds, "0")} s deadline after {attempts - 1} attempts; last: {last}");
            }

            TimeSpan? retryAfter = null;
            try
            {
                using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancel);
                timeout.CancelAfter(TimeSpan.FromSeconds(left));
                var response = await client.ForwardAsync(target.Model, target.Layer, target.Inputs[input], target.Tokens, target.Width, settings.Wire.Dispatch.Name, settings.Wire.Combine.Name, timeout.Token);
                double seconds = clock.Elapsed.TotalSeconds;
                float[] y = response.HiddenStates.Decode();
                double relative = y.Length == target.References[input].Length
                    ? RelativeError.Of(y, target.References[input])
                    : double.PositiveInfinity;
                Interlocked.Increment(ref _checked);
                InterlockedMax(ref _worstError, relative);
                double tolerance = ChaosSettings.Tolerance(settings.Wire);
                return relative <= tolerance
                    ? (true, false, attempts, seconds, string.Empty)
                    : (false, true, attempts, seconds, string.Create(CultureInfo.InvariantCulture, $"answer differs from the in-process forward: relative error {relative:E2} > {tolerance:E0}"));
            }
            catch (GatewayException e) when (e.StatusCode is 429 or 502 or 503 or 504)
            {
                last = $"HTTP {e.StatusCode}: {e.Message}";
                Count($"HTTP {e.StatusCode}");
                retryAfter = e.StatusCode == 429 ? TimeSpan.FromSeconds(1) : null;
            }
            catch (GatewayException e)
            {
                Count($"HTTP {e.StatusCode}");
                return (false, false, attempts, clock.Elapsed.TotalSeconds, $"HTTP {e.StatusCode}: {e.Message}");
            }
            catch (Exception e) when (e is HttpRequestException or IOException or OperationCanceledException && !cancel.IsCancellationRequested)
            {
                // Connection refused or reset (a front-end killed, restarting), or this attempt ran out of time.
                last = e.Message;
                Count(e is OperationCanceledException ? "attempt timed out" : "connection error");
            }
            catch (Exception e) when (e is MoECluster.Wire.WireFormatException)
            {
                Count("undecodable answer");
                return (false, false, attempts, clock.Elapsed.TotalSeconds, $"undecodable answer: {e.Message}");
            }

            await Task.Delay(retryAfter ?? TimeSpan.FromMilliseconds(Math.Min(2000, 100 * (1 << Math.Min(attempts, 5)))), cancel);
        }

        return (false, false, attempts, clock.Elapsed.TotalSeconds, "cancelled");
    }

    private void Count(string reason) => _attemptErrors.AddOrUpdate(reason, 1, (_, n) => n + 1);

    private async Task<List<Fault>> FaultsAsync(GatewayClient client, Target canary, IReadOnlyList<SiloProcess> initial, Stopwatch clock, double loadEnd, CancellationToken cancel)
    {
        var faults = new List<Fault>();
        var rng = new Random(unchecked((int)settings.Seed) ^ 0x2545F491);
        double next = settings.WarmupSeconds + Exponential(rng, settings.FaultIntervalSeconds / 2);
        int kind = rng.Next(settings.Faults.Count);
        while (!cancel.IsCancellationRequested)
        {
            // The last fault must leave time to recover before the load stops.
            double latest = loadEnd - Math.Min(settings.RecoveryTimeoutSeconds, Math.Max(10, settings.DurationSeconds / 4));
            if (next > latest)
            {
                break;
            }

            if (next > clock.Elapsed.TotalSeconds)
            {
                await Task.Delay(TimeSpan.FromSeconds(next - clock.Elapsed.TotalSeconds), cancel);
            }

            var silos = SiloProcesses.Find(settings.LauncherPid);
            if (silos.Count == 0)
            {
                break;
            }

            // The kinds in turn, the victim at random (front-end or expert); but the run's first kill is the front-end's
            // (with localhost clustering it holds the membership: the hardest fault to come back from).
            string what = settings.Faults[kind++ % settings.Faults.Count];
            bool frontendKillDue = what == "kill" && !faults.Any(f => f.Kind == "kill");
            var candidates = frontendKillDue ? silos.Where(s => s.Role == "frontend").ToList() : [.. silos];
            var victim = candidates.Count > 0 ? candidates[rng.Next(candidates.Count)] : silos[rng.Next(silos.Count)];
            double hang = what == "hang" ? settings.HangMinSeconds + (rng.NextDouble() * (settings.HangMaxSeconds - settings.HangMinSeconds)) : 0;
            var fault = new Fault(clock.Elapsed.TotalSeconds, what, victim, hang);
            faults.Add(fault);
            error.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"chaos: t={fault.AtSeconds:F1} s {what} {victim.Name} (pid {victim.Pid}){(what == "hang" ? $" for {hang:F1} s" : string.Empty)}; so far {Interlocked.Read(ref _ok)} ok, {Interlocked.Read(ref _failed)} failed, {Interlocked.Read(ref _wrong)} wrong"));
            switch (what)
            {
                case "kill":
                    SiloProcesses.Signal(victim.Pid, "KILL");
                    break;
                case "term":
                    SiloProcesses.Signal(victim.Pid, "TERM");
                    break;
                default:
                    SiloProcesses.Signal(victim.Pid, "STOP");
                    try
                    {
                        await Task.Delay(TimeSpan.FromSeconds(hang), cancel);
                    }
                    finally
                    {
                        SiloProcesses.Signal(victim.Pid, "CONT");
                    }

                    break;
            }

            // A stopped silo goes first (a graceful stop takes a moment: until then the cluster still looks whole).
            if (what is "term" or "kill")
            {
                var exitClock = Stopwatch.StartNew();
                while (SiloProcesses.IsAlive(victim.Pid) && exitClock.Elapsed.TotalSeconds < settings.RecoveryTimeoutSeconds)
                {
                    await Task.Delay(50, cancel);
                }
            }

            // Whole again: as many silo processes as at the start, /health ok (not degraded), a checked forward answered.
            if (await WaitRecoveredAsync(client, canary, initial.Count, cancel))
            {
                fault.RecoveredAfterSeconds = clock.Elapsed.TotalSeconds - fault.AtSeconds;
                var now = SiloProcesses.Find(settings.LauncherPid);
                fault.ReplacementPid = now.FirstOrDefault(s => s.Name == victim.Name)?.Pid;
                fault.Note = fault.ReplacementPid == victim.Pid ? "same process" : "replaced";
                error.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"chaos: whole again {fault.RecoveredAfterSeconds:F1} s after the {what} of {victim.Name} ({fault.Note}{(fault.ReplacementPid is int p && p != victim.Pid ? $", pid {p}" : string.Empty)})"));
            }
            else
            {
                fault.Note = $"not whole again within {F(settings.RecoveryTimeoutSeconds, "0")} s";
                error.WriteLine($"chaos: {fault.Note} after the {what} of {victim.Name}");
                break;
            }

            next = clock.Elapsed.TotalSeconds + Math.Max(2, Exponential(rng, settings.FaultIntervalSeconds));
        }

        return faults;
    }

    private async Task<bool> WaitRecoveredAsync(GatewayClient client, Target canary, int silos, CancellationToken cancel)
    {
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed.TotalSeconds < settings.RecoveryTimeoutSeconds && !cancel.IsCancellationRequested)
        {
            try
            {
                if (SiloProcesses.Find(settings.LauncherPid).Count >= silos)
                {
                    using var attempt = CancellationTokenSource.CreateLinkedTokenSource(cancel);
                    attempt.CancelAfter(TimeSpan.FromSeconds(10));
                    var (healthy, body) = await client.HealthAsync(attempt.Token);
                    if (healthy && body?["status"]?.GetValue<string>() == "ok")
                    {
                        var (ok, _, _, _, _) = await ForwardCheckedAsync(client, canary, 0, 10, cancel);
                        if (ok)
                        {
                            return true;
                        }
                    }
                }
            }
            catch (Exception e) when (e is HttpRequestException or OperationCanceledException or System.Text.Json.JsonException or InvalidOperationException && !cancel.IsCancellationRequested)
            {
            }

            await Task.Delay(250, cancel);
        }

        return false;
    }

    private JsonObject Report(IReadOnlyList<SiloProcess> silos, List<Fault> faults, double seconds)
    {
        long Percentile(double p)
        {
            lock (_latencyLock)
            {
                return _latency.TotalCount == 0 ? 0 : _latency.GetValueAtPercentile(p);
            }
        }

        long max;
        lock (_latencyLock)
        {
            max = _latency.TotalCount == 0 ? 0 : _latency.GetMaxValue();
        }

        bool recovered = faults.All(f => f.RecoveredAfterSeconds is not null);
        bool passed = _failed == 0 && _wrong == 0 && recovered && _ok > 0 && faults.Count > 0;
        return new JsonObject
        {
            ["command"] = settings.CommandLine,
            ["url"] = settings.Url,
            ["started"] = DateTimeOffset.UtcNow.AddSeconds(-seconds).ToString("O", CultureInfo.InvariantCulture),
            ["duration_s"] = settings.DurationSeconds,
            ["warmup_s"] = settings.WarmupSeconds,
            ["concurrency"] = settings.Concurrency,
            ["wire"] = settings.Wire.Text,
            ["wire_dispatch"] = settings.Wire.Dispatch.Name,
            ["wire_combine"] = settings.Wire.Combine.Name,
            ["tolerance"] = ChaosSettings.Tolerance(settings.Wire),
            ["silos"] = new JsonArray([.. silos.Select(s => (JsonNode)new JsonObject { ["name"] = s.Name, ["role"] = s.Role, ["pid"] = s.Pid })]),
            ["faults"] = new JsonArray([.. faults.Select(f => (JsonNode)new JsonObject
            {
                ["at_s"] = Math.Round(f.AtSeconds, 2),
                ["kind"] = f.Kind,
                ["silo"] = f.Silo.Name,
                ["role"] = f.Silo.Role,
                ["pid"] = f.Silo.Pid,
                ["hang_s"] = f.Kind == "hang" ? Math.Round(f.HangSeconds, 2) : null,
                ["whole_again_after_s"] = f.RecoveredAfterSeconds is double r ? Math.Round(r, 2) : null,
                ["replacement_pid"] = f.ReplacementPid,
                ["note"] = f.Note,
            })]),
            ["requests"] = new JsonObject
            {
                ["sent"] = _sent,
                ["ok"] = _ok,
                ["failed"] = _failed,
                ["wrong_answers"] = _wrong,
                ["retried"] = _retried,
                ["answers_checked"] = _checked,
                ["worst_relative_error"] = _worstError,
            },
            ["failed_attempts_by_reason"] = new JsonObject([.. _attemptErrors.OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)kv.Value))]),
            ["latency_ms"] = new JsonObject { ["p50"] = Percentile(50), ["p90"] = Percentile(90), ["p99"] = Percentile(99), ["max"] = max },
            ["failures"] = new JsonArray([.. _failures.Select(f => (JsonNode)f)]),
            ["passed"] = passed,
        };
    }

    private static string Markdown(JsonObject report)
    {
        var r = report["requests"]!;
        var l = report["latency_ms"]!;
        var text = new System.Text.StringBuilder();
        text.AppendLine(CultureInfo.InvariantCulture, $"chaos run: {(report["passed"]!.GetValue<bool>() ? "PASSED" : "FAILED")} ({report["command"]})");
        text.AppendLine(CultureInfo.InvariantCulture, $"requests: {r["sent"]} sent, {r["ok"]} ok, {r["failed"]} failed, {r["wrong_answers"]} wrong answers, {r["retried"]} retried after a fault; {r["answers_checked"]} answers checked against the in-process forward (worst relative error {r["worst_relative_error"]!.GetValue<double>().ToString("E2", CultureInfo.InvariantCulture)}, tolerance {report["tolerance"]!.GetValue<double>().ToString("E0", CultureInfo.InvariantCulture)})");
        text.AppendLine(CultureInfo.InvariantCulture, $"latency (ms, first attempt to checked answer): p50 {l["p50"]}, p90 {l["p90"]}, p99 {l["p99"]}, max {l["max"]}");
        text.AppendLine(CultureInfo.InvariantCulture, $"failed attempts (then retried): {string.Join(", ", report["failed_attempts_by_reason"]!.AsObject().Select(kv => $"{kv.Key} {kv.Value}"))}");
        text.AppendLine();
        text.AppendLine("| t (s) | fault | silo | role | whole again after (s) | |");
        text.AppendLine("|---|---|---|---|---|---|");
        foreach (var f in report["faults"]!.AsArray())
        {
            string kind = f!["kind"]!.GetValue<string>();
            string hang = f["hang_s"] is { } h ? $" {h.GetValue<double>().ToString("F1", CultureInfo.InvariantCulture)} s" : string.Empty;
            string whole = f["whole_again_after_s"] is { } w ? w.GetValue<double>().ToString("F1", CultureInfo.InvariantCulture) : "—";
            text.AppendLine(CultureInfo.InvariantCulture, $"| {f["at_s"]!.GetValue<double>().ToString("F1", CultureInfo.InvariantCulture)} | {kind}{hang} | {f["silo"]} | {f["role"]} | {whole} | {f["note"]} |");
        }

        foreach (var failure in report["failures"]!.AsArray())
        {
            text.AppendLine(CultureInfo.InvariantCulture, $"failure: {failure}");
        }

        return text.ToString();
    }

    private static void InterlockedMax(ref double target, double value)
    {
        double current = Volatile.Read(ref target);
        while (value > current || double.IsNaN(value))
        {
            double seen = Interlocked.CompareExchange(ref target, value, current);
            if (seen == current)
            {
                return;
            }

            current = seen;
        }
    }

    private static double Exponential(Random rng, double mean) => -Math.Log(1 - rng.NextDouble()) * mean;

    private static string F(double v, string format) => v.ToString(format, CultureInfo.InvariantCulture);
}
