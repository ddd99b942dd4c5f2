using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using System.Xml.Linq;
using MoECluster.Cli.Commands;
using MoECluster.Cli.Load;

namespace MoECluster.Cli.Tests;

/// <summary><c>moecluster load --sweep</c> without a cluster: the level parser, the goodput choice, the JSON, the chart and the table.</summary>
public sealed class LoadSweepTests
{
    private static LoadSettings Settings(string mode, double? slo, IReadOnlyList<double> sweep) => new(
        "http://127.0.0.1:8080", mode, 10, 4, 10, 2, [8], null, new MoECluster.Cli.Commands.WireChoice(null, null), null, null, slo, 1, 30, "moecluster load --sweep", null, sweep);

    private static SweepStep Step(double level, double p99, long failed = 0, long ok = 100, double tokensPerSecond = -1) =>
        new(level, tokensPerSecond < 0 ? level * 100 : tokensPerSecond, level * 10, p99 / 2, p99 * 0.9, p99, p99 * 1.5, ok + failed, ok, failed, 0);

    [Fact]
    public void Closed_loop_sweep_parses_rising_worker_counts()
    {
        Assert.Equal([1.0, 2, 4, 8, 16], LoadSettings.ParseSweep("1,2,4,8,16", LoadSettings.Closed));
        Assert.Equal([3.0], LoadSettings.ParseSweep(" 3 ", LoadSettings.Closed));
        Assert.Null(LoadSettings.ParseSweep(null, LoadSettings.Closed));
    }

    [Fact]
    public void Open_loop_sweep_parses_rising_rates_with_decimals()
    {
        Assert.Equal([0.5, 10, 250.25], LoadSettings.ParseSweep("0.5, 10, 250.25", LoadSettings.Open));
    }

    [Theory]
    [InlineData("", "closed", "names no step")]
    [InlineData(" ", "closed", "names no step")]
    [InlineData("1,,2", "closed", "'' is not a worker count")]
    [InlineData("0,1", "closed", "'0' is not a worker count")]
    [InlineData("1,1.5", "closed", "'1.5' is not a worker count")]
    [InlineData("1,-2", "closed", "'-2' is not a worker count")]
    [InlineData("1,5000", "closed", "'5000' is not a worker count")]
    [InlineData("one,two", "closed", "'one' is not a worker count")]
    [InlineData("4,2", "closed", "must rise strictly, but '2' comes after 4")]
    [InlineData("2,2", "closed", "must rise strictly, but '2' comes after 2")]
    [InlineData("0.001", "open", "'0.001' is not a rate")]
    [InlineData("10,5", "open", "must rise strictly, but '5' comes after 10")]
    [InlineData("1e3", "open", "'1e3' is not a rate")]
    public void Bad_sweep_lists_are_refused_naming_the_bad_step(string text, string mode, string message)
    {
        var e = Assert.Throws<UsageException>(() => LoadSettings.ParseSweep(text, mode));
        Assert.StartsWith("--sweep", e.Message, StringComparison.Ordinal);
        Assert.Contains(message, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_sweep_of_more_than_the_most_steps_is_refused()
    {
        string text = string.Join(',', Enumerable.Range(1, LoadSettings.MaxSweepSteps + 1));
        var e = Assert.Throws<UsageException>(() => LoadSettings.ParseSweep(text, LoadSettings.Closed));
        Assert.Contains($"at most {LoadSettings.MaxSweepSteps}", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_bad_sweep_on_the_command_line_exits_2_with_one_line_before_any_request()
    {
        using var output = new StringWriter();
        using var error = new StringWriter();
        Assert.Equal(CliApp.ExitUsage, CliApp.Run(["load", "--url", "http://127.0.0.1:1", "--sweep", "4,2"], output, error));
        string line = Assert.Single(error.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.StartsWith("moecluster load: error: --sweep '4,2'", line, StringComparison.Ordinal);
    }

    [Fact]
    public void A_step_sets_the_level_of_its_mode_and_drops_the_sweep()
    {
        var closed = Settings(LoadSettings.Closed, null, [1, 8]).AtLevel(8);
        Assert.Equal(8, closed.Concurrency);
        Assert.Null(closed.Sweep);
        var open = Settings(LoadSettings.Open, null, [5, 40]).AtLevel(40);
        Assert.Equal(40, open.Rate);
        Assert.Null(open.Sweep);
    }

    [Fact]
    public void Goodput_is_the_highest_step_within_the_slo()
    {
        SweepStep[] steps = [Step(1, 10), Step(2, 20), Step(4, 40), Step(8, 80)];
        Assert.Equal(4, SweepReport.Goodput(steps, 50)!.Level);
        Assert.Equal(8, SweepReport.Goodput(steps, 1000)!.Level);
        Assert.Equal(400, SweepReport.Goodput(steps, 50)!.TokensPerSecond);
    }

    [Fact]
    public void Goodput_counts_a_step_whose_p99_equals_the_slo()
    {
        Assert.Equal(2, SweepReport.Goodput([Step(1, 10), Step(2, 20), Step(4, 20.001)], 20)!.Level);
    }

    [Fact]
    public void Goodput_skips_a_step_with_a_failed_request_however_fast_its_answers()
    {
        Assert.Equal(1, SweepReport.Goodput([Step(1, 10), Step(2, 5, failed: 1)], 50)!.Level);
    }

    [Fact]
    public void Goodput_skips_a_step_with_no_answered_request()
    {
        Assert.Equal(1, SweepReport.Goodput([Step(1, 10), Step(2, 0, ok: 0)], 50)!.Level);
    }

    [Fact]
    public void Goodput_takes_the_highest_meeting_step_even_after_a_missing_one()
    {
        Assert.Equal(4, SweepReport.Goodput([Step(1, 10), Step(2, 90), Step(4, 30), Step(8, 100)], 50)!.Level);
    }

    [Fact]
    public void Goodput_is_none_when_no_step_meets_the_slo()
    {
        Assert.Null(SweepReport.Goodput([Step(1, 60), Step(2, 70)], 50));
        Assert.Null(SweepReport.Goodput([], 50));
    }

    [Fact]
    public void Sweep_json_has_one_entry_per_step_and_the_goodput()
    {
        SweepStep[] steps = [Step(1, 10), Step(2, 20), Step(4, 80)];
        var r = JsonNode.Parse(SweepReport.Build(Settings(LoadSettings.Closed, 50, [1, 2, 4]), steps).ToJsonString())!;
        Assert.Equal("closed", r["mode"]!.GetValue<string>());
        Assert.Equal(10.0, r["duration_s"]!.GetValue<double>());
        Assert.Equal(2.0, r["warmup_s"]!.GetValue<double>());
        var sweep = r["sweep"]!.AsArray();
        Assert.Equal([1.0, 2, 4], sweep.Select(s => s!["concurrency"]!.GetValue<double>()));
        var second = sweep[1]!;
        Assert.Equal(200.0, second["tokens_per_second"]!.GetValue<double>());
        Assert.Equal(20.0, second["requests_per_second"]!.GetValue<double>());
        Assert.Equal(10.0, second["latency_ms"]!["p50"]!.GetValue<double>());
        Assert.Equal(20.0, second["latency_ms"]!["p99"]!.GetValue<double>());
        Assert.Equal(["sent", "ok", "failed", "overloaded", "busy"], second["requests"]!.AsObject().Select(kv => kv.Key));
        Assert.Equal(50.0, r["slo_p99_ms"]!.GetValue<double>());
        Assert.Equal(2.0, r["goodput"]!["concurrency"]!.GetValue<double>());
        Assert.Equal(200.0, r["goodput"]!["tokens_per_second"]!.GetValue<double>());
    }

    [Fact]
    public void Sweep_json_of_an_open_loop_names_rates_and_a_missed_slo_has_a_null_goodput()
    {
        var r = SweepReport.Build(Settings(LoadSettings.Open, 5, [10, 20]), [Step(10, 10), Step(20, 20)]);
        Assert.Equal([10.0, 20], r["sweep"]!.AsArray().Select(s => s!["rate"]!.GetValue<double>()));
        Assert.True(r.ContainsKey("goodput"));
        Assert.Null(r["goodput"]);
    }

    [Fact]
    public void Sweep_json_without_an_slo_has_no_goodput()
    {
        var r = SweepReport.Build(Settings(LoadSettings.Closed, null, [1]), [Step(1, 10)]);
        Assert.False(r.ContainsKey("goodput"));
        Assert.False(r.ContainsKey("slo_p99_ms"));
    }

    [Fact]
    public void Throughput_latency_chart_is_valid_svg_with_one_labelled_point_per_step_and_percentile()
    {
        // Throughput that falls at the highest load: the points keep the step order, not the x order.
        SweepStep[] steps = [Step(1, 10, tokensPerSecond: 100), Step(2, 20, tokensPerSecond: 180), Step(4, 50, tokensPerSecond: 260), Step(8, 400, tokensPerSecond: 240)];
        var doc = XDocument.Parse(SweepReport.Chart(LoadSettings.Closed, steps));
        XNamespace svg = "http://www.w3.org/2000/svg";
        Assert.Equal(svg + "svg", doc.Root!.Name);
        var circles = doc.Root.Descendants(svg + "circle").ToList();
        Assert.Equal(2 * steps.Length, circles.Count);
        foreach (string series in new[] { "p50", "p99" })
        {
            Assert.Equal(
                steps.Select(s => $"{series} c={s.Level}"),
                circles.Select(c => c.Element(svg + "title")!.Value).Where(t => t.StartsWith(series + " ", StringComparison.Ordinal)).Select(t => t[..t.IndexOf(':', StringComparison.Ordinal)]));
        }

        Assert.Equal(2, doc.Root.Descendants(svg + "polyline").Count());
        var labels = doc.Root.Descendants(svg + "text").Select(t => t.Value).ToList();
        foreach (var s in steps)
        {
            Assert.Equal(2, labels.Count(l => l == $"c={s.Level}"));
        }

        // Every point inside the plot, the highest p99 at the top of the y axis or below.
        foreach (var c in circles)
        {
            double cx = double.Parse(c.Attribute("cx")!.Value, System.Globalization.CultureInfo.InvariantCulture);
            double cy = double.Parse(c.Attribute("cy")!.Value, System.Globalization.CultureInfo.InvariantCulture);
            Assert.InRange(cx, 70, 720 - 170);
            Assert.InRange(cy, 36, 360 - 52);
        }
    }

    [Fact]
    public void Open_loop_chart_labels_points_by_rate()
    {
        var doc = XDocument.Parse(SweepReport.Chart(LoadSettings.Open, [Step(10, 5), Step(20.5, 9)]));
        var labels = doc.Root!.Descendants().Where(e => e.Name.LocalName == "text").Select(t => t.Value).ToList();
        Assert.Contains("10/s", labels);
        Assert.Contains("20.5/s", labels);
    }

    [Fact]
    public void Sweep_html_has_the_chart_a_table_row_per_step_the_goodput_and_nothing_to_fetch()
    {
        SweepStep[] steps = [Step(1, 10), Step(2, 20), Step(4, 80)];
        var report = SweepReport.Build(Settings(LoadSettings.Closed, 50, [1, 2, 4]), steps);
        string html = SweepReport.Html(report, steps);
        var svgs = Regex.Matches(html, "<svg\\b.*?</svg>", RegexOptions.Singleline);
        XDocument.Parse(Assert.Single(svgs).Value);
        Assert.Equal(1 + steps.Length, Regex.Count(html, "<tr>"));
        Assert.Contains("<td>20.000</td>", html, StringComparison.Ordinal);
        Assert.Contains("goodput at p99 &lt;= 50 ms: 200.0 tokens/s (concurrency 2, p99 20.000 ms)", html, StringComparison.Ordinal);
        Assert.DoesNotContain("<script", html, StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain("http://", html.Replace("xmlns=\"http://www.w3.org/2000/svg\"", string.Empty, StringComparison.Ordinal), StringComparison.Ordinal);
    }

    [Fact]
    public void Console_table_has_a_row_per_step_and_the_goodput_line()
    {
        using var output = new StringWriter();
        SweepStep[] steps = [Step(1, 10), Step(2, 20, failed: 3)];
        SweepReport.PrintSummary(output, Settings(LoadSettings.Closed, 15, [1, 2]), steps);
        string[] lines = output.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        Assert.Equal(2 + steps.Length + 1, lines.Length);
        Assert.StartsWith("concurrency", lines[1], StringComparison.Ordinal);
        Assert.Matches(@"^2 +200\.0 +20\.0 +10\.000 +18\.000 +20\.000 +30\.000 +103 +100 +3 +0 +0$", lines[3]);
        Assert.Equal("goodput at p99 <= 15 ms: 100.0 tokens/s (concurrency 1, p99 10.000 ms)", lines[4]);
    }

    [Fact]
    public void A_step_counts_refusals_for_overload_apart_from_other_failures()
    {
        var recorder = new LoadRecorder([("m", "standard")]);
        recorder.Sent("m", LoadPhase.Measured);
        recorder.Sent("m", LoadPhase.Measured);
        recorder.Sent("m", LoadPhase.Measured);
        recorder.Sent("m", LoadPhase.Warmup);
        recorder.Ok("m", LoadPhase.Measured, 2000, 0.5, 8, 0, 0, 0, 8);
        recorder.Failed("m", LoadPhase.Measured, overloaded: true);
        recorder.Failed("m", LoadPhase.Measured);
        recorder.Failed("m", LoadPhase.Warmup, overloaded: true);
        var step = SweepStep.From(4, recorder.Snapshot(), 2);
        Assert.Equal((3L, 1L, 2L, 1L, 0L), (step.Sent, step.Ok, step.Failed, step.Overloaded, step.Busy));
        Assert.Equal(4, step.TokensPerSecond);
        Assert.Equal(0.5, step.RequestsPerSecond);
        Assert.Equal(2.0, step.P99Ms, 2);
    }

    [Fact]
    public void A_429_is_counted_as_busy_apart_from_failures()
    {
        var recorder = new LoadRecorder([("m", "latent")]);
        for (int i = 0; i < 4; i++)
        {
            recorder.Sent("m", LoadPhase.Measured);
        }

        recorder.Ok("m", LoadPhase.Measured, 2000, 0.5, 8, 0, 0, 0, 8);
        recorder.Busy("m", LoadPhase.Measured);
        recorder.Busy("m", LoadPhase.Measured);
        recorder.Failed("m", LoadPhase.Measured, overloaded: true);
        var s = recorder.Snapshot();
        Assert.Equal((4L, 1L, 1L, 1L, 2L), (s.Overall.Sent, s.Overall.Ok, s.Overall.Failed, s.Overall.Overloaded, s.Overall.Busy));
        Assert.Equal(2L, s.Models["m"].Measured.Busy);
        var step = SweepStep.From(1, s, 1);
        Assert.Equal((1L, 2L), (step.Failed, step.Busy));
    }
}
