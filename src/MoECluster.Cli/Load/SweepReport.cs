using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using HdrHistogram;

namespace MoECluster.Cli.Load;

/// <summary>
/// One step of a sweep: its load level (workers, closed loop; requests per second, open loop) and what it measured
/// over its --duration (latencies of the answered requests, in ms).
/// </summary>
internal sealed record SweepStep(
    double Level, double TokensPerSecond, double RequestsPerSecond, double P50Ms, double P90Ms, double P99Ms, double MaxMs,
    long Sent, long Ok, long Failed, long Overloaded, long Busy = 0)
{
    /// <summary>The step's errors by kind and status (as a single run's <c>errors</c>); null when not known.</summary>
    public ErrorCounts? Errors { get; init; }

    /// <summary>The step's late starts and its most requests in flight; null when not known.</summary>
    public (StartCounts Counts, int PeakInFlight)? Starts { get; init; }

    /// <summary>The step of a run's snapshot; rates over <paramref name="durationSeconds"/>.</summary>
    public static SweepStep From(double level, LoadSnapshot s, double durationSeconds) => new(
        level, s.Overall.Tokens / durationSeconds, s.Overall.Ok / durationSeconds,
        LoadReport.PercentileMs(s.Overall.Latency, 50), LoadReport.PercentileMs(s.Overall.Latency, 90), LoadReport.PercentileMs(s.Overall.Latency, 99),
        s.Overall.Latency.TotalCount == 0 ? 0 : s.Overall.Latency.GetMaxValue() / 1000.0,
        s.Overall.Sent, s.Overall.Ok, s.Overall.Failed, s.Overall.Overloaded, s.Overall.Busy)
    {
        Errors = s.Overall.Errors,
        Starts = (s.Overall.Starts, s.PeakInFlight),
    };

    /// <summary>
    /// Whether this step meets a p99 SLO: some request was answered, none failed or was refused as busy (a timeout, a
    /// refusal for overload or a 429 is a miss whatever the latencies: that load was not served), and the p99 of the
    /// answered ones is at most <paramref name="sloP99Ms"/>.
    /// </summary>
    public bool Meets(double sloP99Ms) => Ok > 0 && Failed == 0 && Busy == 0 && P99Ms <= sloP99Ms;
}

/// <summary>The results of <c>moecluster load --sweep</c>: the goodput choice, the JSON document, the console table and the HTML report.</summary>
internal static class SweepReport
{
    /// <summary>
    /// Goodput: the highest-load step that meets the p99 SLO (<see cref="SweepStep.Meets"/>), whatever the steps
    /// around it did; null when no step meets it. Its tokens/s is the goodput.
    /// </summary>
    public static SweepStep? Goodput(IReadOnlyList<SweepStep> steps, double sloP99Ms) =>
        steps.Where(s => s.Meets(sloP99Ms)).OrderBy(s => s.Level).LastOrDefault();

    /// <summary>"concurrency" (closed loop) or "rate" (open loop): the name of a step's level.</summary>
    public static string LevelName(string mode) => mode == LoadSettings.Open ? "rate" : "concurrency";

    public static string LevelText(double level) => LoadRunner.F(level, "0.##");

    public static JsonObject Step(SweepStep s, string mode) => new()
    {
        [LevelName(mode)] = s.Level,
        ["tokens_per_second"] = s.TokensPerSecond,
        ["requests_per_second"] = s.RequestsPerSecond,
        ["latency_ms"] = new JsonObject { ["p50"] = s.P50Ms, ["p90"] = s.P90Ms, ["p99"] = s.P99Ms, ["max"] = s.MaxMs },
        ["requests"] = new JsonObject { ["sent"] = s.Sent, ["ok"] = s.Ok, ["failed"] = s.Failed, ["overloaded"] = s.Overloaded, ["busy"] = s.Busy },
        ["errors"] = s.Errors?.ToJson(),
        ["starts"] = s.Starts is var (counts, peak)
            ? new JsonObject { ["late"] = counts.Late, ["late_by_cap"] = counts.LateByCap, ["waited_for_cap"] = counts.WaitedForCap, ["max_late_ms"] = counts.MaxLateMicroseconds / 1000.0, ["peak_in_flight"] = peak }
            : null,
    };

    public static JsonObject Build(LoadSettings settings, IReadOnlyList<SweepStep> steps)
    {
        var report = new JsonObject
        {
            ["command"] = settings.CommandLine,
            ["mode"] = settings.Mode,
            ["duration_s"] = settings.DurationSeconds,
            ["warmup_s"] = settings.WarmupSeconds,
            ["sweep"] = new JsonArray([.. steps.Select(s => (JsonNode)Step(s, settings.Mode))]),
        };
        if (settings.SloP99Ms is double slo)
        {
            var best = Goodput(steps, slo);
            report["slo_p99_ms"] = slo;
            report["goodput"] = best is null ? null : new JsonObject
            {
                [LevelName(settings.Mode)] = best.Level,
                ["tokens_per_second"] = best.TokensPerSecond,
                ["p99_ms"] = best.P99Ms,
            };
        }

        return report;
    }

    /// <summary>The line printed when a step ends.</summary>
    public static string ProgressLine(int index, int count, string mode, SweepStep s) =>
        $"sweep step {index + 1}/{count}: {LevelName(mode)} {LevelText(s.Level)}: {LoadRunner.F(s.TokensPerSecond, "#,0.0")} tokens/s, "
        + $"{LoadRunner.F(s.RequestsPerSecond, "#,0.0")} requests/s, p50 {LoadRunner.F(s.P50Ms, "0.000")} ms, p99 {LoadRunner.F(s.P99Ms, "0.000")} ms, "
        + $"ok {s.Ok}, failed {s.Failed}, overloaded {s.Overloaded}, busy {s.Busy}";

    public static void PrintSummary(TextWriter output, LoadSettings settings, IReadOnlyList<SweepStep> steps)
    {
        output.WriteLine($"load sweep: {settings.Mode} loop, {steps.Count} steps of {LoadRunner.F(settings.DurationSeconds, "0.##")} s measured, each after {LoadRunner.F(settings.WarmupSeconds, "0.##")} s warm-up; latency in ms"
            + (settings.IsOpen ? " from each request's intended start" : string.Empty));
        output.WriteLine($"{LevelName(settings.Mode),11} {"tokens/s",10} {"requests/s",11} {"p50",9} {"p90",9} {"p99",9} {"max",9} {"sent",8} {"ok",8} {"failed",7} {"overloaded",10} {"busy",7}");
        foreach (var s in steps)
        {
            output.WriteLine($"{LevelText(s.Level),11} {LoadRunner.F(s.TokensPerSecond, "#,0.0"),10} {LoadRunner.F(s.RequestsPerSecond, "#,0.0"),11} "
                + $"{LoadRunner.F(s.P50Ms, "0.000"),9} {LoadRunner.F(s.P90Ms, "0.000"),9} {LoadRunner.F(s.P99Ms, "0.000"),9} {LoadRunner.F(s.MaxMs, "0.000"),9} "
                + $"{s.Sent,8} {s.Ok,8} {s.Failed,7} {s.Overloaded,10} {s.Busy,7}");
        }

        if (settings.SloP99Ms is double slo)
        {
            output.WriteLine(GoodputLine(settings.Mode, steps, slo));
        }
    }

    public static string GoodputLine(string mode, IReadOnlyList<SweepStep> steps, double slo) => Goodput(steps, slo) is { } best
        ? $"goodput at p99 <= {LoadRunner.F(slo, "0.###")} ms: {LoadRunner.F(best.TokensPerSecond, "#,0.0")} tokens/s ({LevelName(mode)} {LevelText(best.Level)}, p99 {LoadRunner.F(best.P99Ms, "0.000")} ms)"
        : $"goodput at p99 <= {LoadRunner.F(slo, "0.###")} ms: none, no step meets the SLO";

    /// <summary>The throughput–latency chart: x tokens/s, y p50 and p99 (ms), one labelled point per step and series.</summary>
    public static string Chart(string mode, IReadOnlyList<SweepStep> steps)
    {
        string Label(SweepStep s) => (mode == LoadSettings.Open ? $"{LevelText(s.Level)}/s" : $"c={LevelText(s.Level)}");
        return SvgCharts.LabelledLineChart("Throughput vs latency", "tokens/s", "latency (ms)",
        [
            new LabelledSeries("p50", [.. steps.Select(s => new LabelledPoint(s.TokensPerSecond, s.P50Ms, Label(s)))]),
            new LabelledSeries("p99", [.. steps.Select(s => new LabelledPoint(s.TokensPerSecond, s.P99Ms, Label(s)))]),
        ]);
    }

    public static string Html(JsonObject report, IReadOnlyList<SweepStep> steps)
    {
        static string E(string s) => SvgCharts.Escape(s);
        static string Ms(double v) => LoadRunner.F(v, HtmlReport.MsFormat);
        string mode = report["mode"]!.GetValue<string>();
        var html = new StringBuilder();
        html.Append("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>moecluster load sweep</title>\n<style>\n")
            .Append("body{font-family:sans-serif;margin:24px;color:#222;max-width:1000px}\n")
            .Append("table{border-collapse:collapse;margin:8px 0 20px}\n")
            .Append("th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}\n")
            .Append("code{background:#f4f4f4;padding:2px 4px;word-break:break-all}\n")
            .Append("figure{margin:16px 0}\n")
            .Append("</style>\n</head>\n<body>\n<h1>moecluster load sweep</h1>\n");
        html.Append("<p>Command: <code>").Append(E(report["command"]?.GetValue<string>() ?? string.Empty)).Append("</code></p>\n");
        html.Append("<p>").Append(E($"{mode} loop, {steps.Count} steps one after another on the same cluster, each {LoadRunner.F(report["duration_s"]!.GetValue<double>(), "0.##")} s measured after {LoadRunner.F(report["warmup_s"]!.GetValue<double>(), "0.##")} s warm-up; latency in ms."))
            .Append("</p>\n");
        if (report["slo_p99_ms"] is { } slo)
        {
            html.Append("<p><b>").Append(E(GoodputLine(mode, steps, slo.GetValue<double>()))).Append("</b></p>\n");
        }

        html.Append("<table>\n<tr>");
        foreach (string h in new[] { LevelName(mode), "tokens/s", "requests/s", "p50", "p90", "p99", "max", "sent", "ok", "failed", "overloaded", "busy" })
        {
            html.Append("<th>").Append(E(h)).Append("</th>");
        }

        html.Append("</tr>\n");
        foreach (var s in steps)
        {
            string[] cells =
            [
                LevelText(s.Level), LoadRunner.F(s.TokensPerSecond, "#,0.0"), LoadRunner.F(s.RequestsPerSecond, "#,0.0"), Ms(s.P50Ms), Ms(s.P90Ms), Ms(s.P99Ms), Ms(s.MaxMs),
                s.Sent.ToString(CultureInfo.InvariantCulture), s.Ok.ToString(CultureInfo.InvariantCulture),
                s.Failed.ToString(CultureInfo.InvariantCulture), s.Overloaded.ToString(CultureInfo.InvariantCulture), s.Busy.ToString(CultureInfo.InvariantCulture),
            ];
            html.Append("<tr>").Append(string.Concat(cells.Select(c => $"<td>{E(c)}</td>"))).Append("</tr>\n");
        }

        html.Append("</table>\n<figure>\n").Append(Chart(mode, steps)).Append("\n<figcaption>")
            .Append(E($"Each point is one step, labelled by its {LevelName(mode)}; x its tokens/s, y its p50 and p99."))
            .Append("</figcaption>\n</figure>\n</body>\n</html>\n");
        return html.ToString();
    }
}
