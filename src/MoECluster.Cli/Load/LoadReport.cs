using System.Text.Json.Nodes;
using HdrHistogram;
using MoECluster.Model.Configuration;

namespace MoECluster.Cli.Load;

/// <summary>The results of a load run: the JSON document and the summary table.</summary>
internal static class LoadReport
{
    /// <summary>A percentile in milliseconds, never above the largest recorded value; 0 when nothing was recorded.</summary>
    public static double PercentileMs(LongHistogram h, double percentile)
    {
        if (h.TotalCount == 0)
        {
            return 0;
        }

        long max = h.GetMaxValue();
        return Math.Min(h.GetValueAtPercentile(percentile), max) / 1000.0;
    }

    public static JsonObject Latency(LongHistogram h) => new()
    {
        ["p50"] = PercentileMs(h, 50),
        ["p90"] = PercentileMs(h, 90),
        ["p99"] = PercentileMs(h, 99),
        ["p999"] = PercentileMs(h, 99.9),
        ["max"] = h.TotalCount == 0 ? 0 : h.GetMaxValue() / 1000.0,
        ["min"] = h.TotalCount == 0 ? 0 : h.GetValueAtPercentile(0) / 1000.0,
    };

    /// <summary>sent = ok + failed + busy; overloaded (503) is part of failed, busy (429: a shard's queue full) is not.</summary>
    private static JsonObject Requests(TallySnapshot t) => new() { ["sent"] = t.Sent, ["ok"] = t.Ok, ["failed"] = t.Failed, ["overloaded"] = t.Overloaded, ["busy"] = t.Busy };

    private static double? PerToken(long bytes, long tokens) => tokens == 0 ? null : (double)bytes / tokens;

    /// <summary>Payload (dispatch + combine) and predicted bytes per token per MoE layer of all models of one mode.</summary>
    private static (double? Measured, double? Predicted) ByMode(LoadSnapshot s, string mode)
    {
        var models = s.Models.Values.Where(m => m.Mode == mode).ToList();
        long tokens = models.Sum(m => m.TrafficTokens);
        return (PerToken(models.Sum(m => m.PayloadBytes), tokens), PerToken(models.Sum(m => m.PredictedBytes), tokens));
    }

    public static JsonObject Build(LoadSettings settings, IReadOnlyList<LoadTarget> targets, LoadSnapshot s)
    {
        var standard = ByMode(s, MoeModes.Standard);
        var latent = ByMode(s, MoeModes.Latent);
        var perModel = new JsonObject();
        foreach (var target in targets)
        {
            var m = s.Models[target.Id];
            perModel[target.Id] = new JsonObject
            {
                ["mode"] = m.Mode,
                ["layer"] = target.Layer,
                ["requests"] = Requests(m.Measured),
                ["tokens_per_second"] = m.Measured.Tokens / settings.DurationSeconds,
                ["latency_ms"] = Latency(m.Measured.Latency),
                ["bytes_per_token"] = new JsonObject
                {
                    ["measured"] = PerToken(m.PayloadBytes, m.TrafficTokens),
                    ["predicted"] = PerToken(m.PredictedBytes, m.TrafficTokens),
                },
                ["rows_per_token"] = m.TrafficTokens == 0 ? null : (double)m.RoutedRows / m.TrafficTokens,

                // Every token this run got an answer for (measured window and warm-up): what the cluster's /stats counted.
                ["tokens_ok"] = m.Measured.Tokens,
                ["warmup_tokens_ok"] = m.Warmup.Tokens,
            };
        }

        return new JsonObject
        {
            ["command"] = settings.CommandLine,
            ["mode"] = settings.Mode,
            ["duration_s"] = settings.DurationSeconds,
            ["tokens_per_second"] = s.Overall.Tokens / settings.DurationSeconds,
            ["requests"] = Requests(s.Overall),
            ["latency_ms"] = Latency(s.Overall.Latency),
            ["bytes_per_token"] = new JsonObject
            {
                [MoeModes.Standard] = standard.Measured,
                [MoeModes.Latent] = latent.Measured,
                ["predicted"] = new JsonObject { [MoeModes.Standard] = standard.Predicted, [MoeModes.Latent] = latent.Predicted },
            },
            ["per_model"] = perModel,
            ["timeline"] = new JsonArray([.. s.Timeline.Select(b => (JsonNode)new JsonObject
            {
                ["second"] = b.Second,
                ["requests_ok"] = b.RequestsOk,
                ["tokens"] = b.Tokens,
            })]),
            ["warmup"] = new JsonObject
            {
                ["duration_s"] = settings.WarmupSeconds,
                ["requests"] = Requests(s.Warmup),
                ["tokens_ok"] = s.Warmup.Tokens,
                ["errors"] = s.Warmup.Errors.ToJson(),
            },
            ["errors"] = s.Overall.Errors.ToJson(),
            ["arrivals"] = Arrivals(settings),
            ["starts"] = Starts(settings, s.Overall.Starts, s.PeakInFlight),
        };
    }

    /// <summary>How the requests were started: the loop, the rate or ramp, the burstiness, the cap.</summary>
    private static JsonObject Arrivals(LoadSettings settings) => new()
    {
        ["loop"] = settings.Mode,
        ["rate_rps"] = settings.IsOpen && settings.RampUp is null ? settings.Rate : null,
        ["burstiness"] = settings.IsOpen ? settings.Burstiness : null,
        ["ramp_up"] = settings.RampUp is { } ramp
            ? new JsonObject { ["strategy"] = ramp.Strategy, ["start_rps"] = ramp.StartRps, ["end_rps"] = ramp.EndRps }
            : null,
        ["max_concurrency"] = settings.IsOpen ? settings.MaxConcurrency : settings.Concurrency,
        ["seed"] = settings.Seed,
    };

    /// <summary>
    /// When the measured requests began against when they were meant to: the late threshold, how many were later than
    /// it (of those, how many had waited for the --max-concurrency cap, the rest late because the client fell behind),
    /// how many waited for the cap at all, the largest delay, the most requests in flight at once (warm-up included).
    /// </summary>
    private static JsonObject Starts(LoadSettings settings, StartCounts starts, int peakInFlight) => new()
    {
        ["late_threshold_ms"] = settings.LateThresholdMs,
        ["late"] = starts.Late,
        ["late_by_cap"] = starts.LateByCap,
        ["late_by_client"] = starts.Late - starts.LateByCap,
        ["waited_for_cap"] = starts.WaitedForCap,
        ["max_late_ms"] = starts.MaxLateMicroseconds / 1000.0,
        ["peak_in_flight"] = peakInFlight,
    };

    public static void PrintSummary(TextWriter output, LoadSettings settings, JsonObject report, LoadSnapshot s)
    {
        static string Ms(JsonNode? n) => LoadRunner.F(n!.GetValue<double>(), "0.000");
        static string Bytes(JsonNode? n) => n is null ? "-" : LoadRunner.F(n.GetValue<double>(), "#,0.0");

        output.WriteLine($"load: {settings.Mode} loop, {LoadRunner.F(settings.DurationSeconds, "0.##")} s measured after {LoadRunner.F(settings.WarmupSeconds, "0.##")} s warm-up; latency in ms"
            + (settings.IsOpen ? " from each request's intended start" : string.Empty) + "; bytes per token per MoE layer, dispatch + combine payload");
        output.WriteLine($"{"model",-12} {"mode",-9} {"sent",8} {"ok",8} {"failed",7} {"busy",7} {"tokens/s",10} {"p50",9} {"p90",9} {"p99",9} {"p99.9",9} {"max",9} {"bytes/token",12} {"predicted",12}");
        foreach (var (id, node) in report["per_model"]!.AsObject())
        {
            var lat = node!["latency_ms"]!;
            var req = node["requests"]!;
            output.WriteLine($"{id,-12} {node["mode"]!.GetValue<string>(),-9} {req["sent"],8} {req["ok"],8} {req["failed"],7} {req["busy"],7} {LoadRunner.F(node["tokens_per_second"]!.GetValue<double>(), "#,0"),10} "
                + $"{Ms(lat["p50"]),9} {Ms(lat["p90"]),9} {Ms(lat["p99"]),9} {Ms(lat["p999"]),9} {Ms(lat["max"]),9} {Bytes(node["bytes_per_token"]!["measured"]),12} {Bytes(node["bytes_per_token"]!["predicted"]),12}");
        }

        var all = report["latency_ms"]!;
        output.WriteLine($"{"all",-12} {"",-9} {s.Overall.Sent,8} {s.Overall.Ok,8} {s.Overall.Failed,7} {s.Overall.Busy,7} {LoadRunner.F(report["tokens_per_second"]!.GetValue<double>(), "#,0"),10} "
            + $"{Ms(all["p50"]),9} {Ms(all["p90"]),9} {Ms(all["p99"]),9} {Ms(all["p999"]),9} {Ms(all["max"]),9}");
        var bpt = report["bytes_per_token"]!;
        if (bpt[MoeModes.Standard] is { } std && bpt[MoeModes.Latent] is { } lat2 && lat2.GetValue<double>() > 0)
        {
            var p = bpt["predicted"]!;
            string predicted = p[MoeModes.Standard] is { } ps && p[MoeModes.Latent] is { } pl && pl.GetValue<double>() > 0
                ? LoadRunner.F(ps.GetValue<double>() / pl.GetValue<double>(), "0.00") : "-";
            output.WriteLine($"standard / latent bytes per token: {LoadRunner.F(std.GetValue<double>() / lat2.GetValue<double>(), "0.00")} measured, {predicted} predicted");
        }

        if (s.Overall.Errors.Summary() is { } errors)
        {
            output.WriteLine(errors);
        }

        if (settings.IsOpen)
        {
            var st = s.Overall.Starts;
            output.WriteLine($"starts: {st.Late} late by more than {LoadRunner.F(settings.LateThresholdMs, "0.###")} ms ({st.LateByCap} waited for the --max-concurrency cap, "
                + $"{st.Late - st.LateByCap} the client fell behind), {st.WaitedForCap} waited for the cap, latest {LoadRunner.F(st.MaxLateMicroseconds / 1000.0, "0.###")} ms, "
                + $"at most {s.PeakInFlight} in flight");
        }
    }
}
