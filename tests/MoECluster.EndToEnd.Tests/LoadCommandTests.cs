using System.Globalization;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using System.Xml.Linq;
using MoECluster.Testing;

namespace MoECluster.EndToEnd.Tests;

/// <summary><c>moecluster load</c> as a real process against the three-process cluster ("lat" and "std").</summary>
[Collection(ProcessClusterGroup.Name)]
public sealed class LoadCommandTests(ProcessClusterFixture cluster)
{
    private static ChildProcess.Result Load(params string[] args) =>
        ChildProcess.Run("dotnet", [ChildProcess.CliDll, "load", .. args], TimeSpan.FromMinutes(2));

    private async Task<Dictionary<string, long>> StatsTokensAsync()
    {
        var stats = await cluster.Client.StatsAsync();
        return stats["models"]!.AsArray().ToDictionary(
            m => m!["model"]!.GetValue<string>(),
            m => m!["layers"]!.AsArray().Sum(l => l!["tokens"]!.GetValue<long>()));
    }

    private static void AssertOrderedPositiveLatencies(JsonNode latency, string what)
    {
        double[] v = [.. new[] { "p50", "p90", "p99", "p999", "max" }.Select(k => latency[k]!.GetValue<double>())];
        Assert.True(v[0] > 0, $"{what}: p50 {v[0]}");
        for (int i = 1; i < v.Length; i++)
        {
            Assert.True(v[i - 1] <= v[i], $"{what}: latencies not ordered: {string.Join(", ", v)}");
        }
    }

    [Fact]
    public async Task Closed_loop_run_counts_every_request_and_its_tokens_match_the_cluster_stats()
    {
        using var dir = new TempDirectory();
        string json = dir.File("load.json");
        var before = await StatsTokensAsync();
        var run = Load("--url", cluster.Url, "--mode", "closed", "--concurrency", "4", "--duration", "4", "--warmup", "1",
            "--tokens", "1,8,64", "--json", json, "--seed", "7");
        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Contains("p99", run.Stderr, StringComparison.Ordinal);
        var after = await StatsTokensAsync();

        var r = JsonNode.Parse(File.ReadAllText(json))!;
        Assert.Equal("closed", r["mode"]!.GetValue<string>());
        Assert.Equal(4.0, r["duration_s"]!.GetValue<double>());
        var requests = r["requests"]!;
        long sent = requests["sent"]!.GetValue<long>(), ok = requests["ok"]!.GetValue<long>(), failed = requests["failed"]!.GetValue<long>();
        Assert.Equal(sent, ok + failed);
        Assert.Equal(0, failed);
        Assert.True(ok > 0);
        Assert.True(r["tokens_per_second"]!.GetValue<double>() > 0);
        AssertOrderedPositiveLatencies(r["latency_ms"]!, "overall");

        var perModel = r["per_model"]!.AsObject();
        Assert.Equal(["lat", "std"], perModel.Select(kv => kv.Key).Order(StringComparer.Ordinal));
        foreach (var (id, m) in perModel)
        {
            AssertOrderedPositiveLatencies(m!["latency_ms"]!, id);
            long tokens = m["tokens_ok"]!.GetValue<long>() + m["warmup_tokens_ok"]!.GetValue<long>();
            Assert.True(tokens > 0, id);
            Assert.Equal(before.GetValueOrDefault(id) + tokens, after[id]);

            // The payload is exactly the rows the routing plans sent.
            Assert.Equal(m["bytes_per_token"]!["predicted"]!.GetValue<double>(), m["bytes_per_token"]!["measured"]!.GetValue<double>(), 6);
        }

        // standard / latent = d/l (4) x the ratio of routed rows per token.
        var bpt = r["bytes_per_token"]!;
        double ratio = bpt["standard"]!.GetValue<double>() / bpt["latent"]!.GetValue<double>();
        double rows = perModel["std"]!["rows_per_token"]!.GetValue<double>() / perModel["lat"]!["rows_per_token"]!.GetValue<double>();
        Assert.True(ratio > 1, $"standard / latent = {ratio}");
        Assert.Equal(4 * rows, ratio, 6);
        Assert.Equal(bpt["predicted"]!["standard"]!.GetValue<double>() / bpt["predicted"]!["latent"]!.GetValue<double>(), ratio, 6);
    }

    [Fact]
    public void Html_report_has_four_well_formed_svg_charts_the_json_p99_no_external_links_and_a_timeline_summing_to_the_ok_requests()
    {
        using var dir = new TempDirectory();
        string json = dir.File("load.json");
        string html = dir.File("report/load.html");
        var run = Load("--url", cluster.Url, "--mode", "closed", "--concurrency", "2", "--duration", "2", "--warmup", "0.5",
            "--tokens", "1,8", "--json", json, "--html", html, "--seed", "5");
        Assert.True(run.ExitCode == 0, run.ToString());
        var r = JsonNode.Parse(File.ReadAllText(json))!;
        string text = File.ReadAllText(html);

        var svgs = Regex.Matches(text, "<svg\\b.*?</svg>", RegexOptions.Singleline);
        Assert.Equal(4, svgs.Count);
        foreach (Match svg in svgs)
        {
            var doc = XDocument.Parse(svg.Value);
            Assert.Equal("svg", doc.Root!.Name.LocalName);
            Assert.Contains(doc.Root.Descendants(), e => e.Name.LocalName is "polyline" or "rect" or "circle");
        }

        // The CDF and throughput charts draw lines; the expert heatmap has a cell per expert of each layer.
        Assert.Contains("<polyline", svgs[0].Value, StringComparison.Ordinal);
        Assert.Contains("<polyline", svgs[1].Value, StringComparison.Ordinal);
        Assert.Contains("expert 0:", svgs[3].Value, StringComparison.Ordinal);

        var bpt = r["bytes_per_token"]!;
        string ratio = (bpt["standard"]!.GetValue<double>() / bpt["latent"]!.GetValue<double>()).ToString("0.00", CultureInfo.InvariantCulture);
        Assert.Contains($"standard / latent = {ratio}", svgs[2].Value, StringComparison.Ordinal);

        string p99 = r["latency_ms"]!["p99"]!.GetValue<double>().ToString("0.000", CultureInfo.InvariantCulture);
        Assert.Contains($"<td>{p99}</td>", text, StringComparison.Ordinal);

        // Only the SVG namespace and the gateway's URL in the printed command line: nothing to fetch.
        string rest = text.Replace("xmlns=\"http://www.w3.org/2000/svg\"", string.Empty, StringComparison.Ordinal)
            .Replace(cluster.Url, string.Empty, StringComparison.Ordinal);
        Assert.DoesNotContain("http://", rest, StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain("https://", rest, StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain("<script", text, StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain("<link", text, StringComparison.OrdinalIgnoreCase);

        var timeline = r["timeline"]!.AsArray();
        Assert.NotEmpty(timeline);
        Assert.Equal(Enumerable.Range(0, timeline.Count), timeline.Select(b => b!["second"]!.GetValue<int>()));
        Assert.Equal(r["requests"]!["ok"]!.GetValue<long>(), timeline.Sum(b => b!["requests_ok"]!.GetValue<long>()));
        Assert.Equal(r["per_model"]!.AsObject().Sum(kv => kv.Value!["tokens_ok"]!.GetValue<long>()), timeline.Sum(b => b!["tokens"]!.GetValue<long>()));
    }

    [Fact]
    public void Open_loop_run_sends_about_rate_times_duration_requests()
    {
        using var dir = new TempDirectory();
        string json = dir.File("open.json");
        var run = Load("--url", cluster.Url, "--mode", "open", "--rate", "40", "--duration", "3", "--warmup", "0.5", "--json", json, "--seed", "3");
        Assert.True(run.ExitCode == 0, run.ToString());
        var r = JsonNode.Parse(File.ReadAllText(json))!;
        Assert.Equal("open", r["mode"]!.GetValue<string>());
        long sent = r["requests"]!["sent"]!.GetValue<long>();
        Assert.InRange(sent, 84, 156);
        Assert.Equal(sent, r["requests"]!["ok"]!.GetValue<long>() + r["requests"]!["failed"]!.GetValue<long>());
        AssertOrderedPositiveLatencies(r["latency_ms"]!, "overall");

        // Latency counts from each request's intended start, which is never later than its real start: no answer
        // through the gateway, a router and expert shards can come back in under 0.1 ms.
        Assert.True(r["latency_ms"]!["min"]!.GetValue<double>() >= 0.1, $"min latency {r["latency_ms"]!["min"]} ms: a request started before its intended time");
    }

    [Fact]
    public void Missed_p99_slo_exits_with_code_3()
    {
        var run = Load("--url", cluster.Url, "--duration", "1", "--warmup", "0", "--concurrency", "2", "--models", "lat", "--slo-p99", "0.001");
        Assert.True(run.ExitCode == 3, run.ToString());
        Assert.Contains("SLO missed", run.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public void Sweep_of_two_worker_counts_runs_a_step_each_and_reports_the_goodput_within_a_loose_slo()
    {
        using var dir = new TempDirectory();
        string json = dir.File("sweep.json");
        string html = dir.File("sweep.html");
        var run = Load("--url", cluster.Url, "--sweep", "1,2", "--duration", "2", "--warmup", "0.5", "--models", "lat",
            "--slo-p99", "60000", "--json", json, "--html", html, "--seed", "9");
        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Contains("sweep step 1/2: concurrency 1:", run.Stderr, StringComparison.Ordinal);
        Assert.Contains("sweep step 2/2: concurrency 2:", run.Stderr, StringComparison.Ordinal);

        var r = JsonNode.Parse(File.ReadAllText(json))!;
        var sweep = r["sweep"]!.AsArray();
        Assert.Equal([1.0, 2.0], sweep.Select(s => s!["concurrency"]!.GetValue<double>()));
        foreach (var step in sweep)
        {
            var req = step!["requests"]!;
            Assert.True(req["ok"]!.GetValue<long>() > 0, step.ToJsonString());
            Assert.Equal(req["sent"]!.GetValue<long>(), req["ok"]!.GetValue<long>() + req["failed"]!.GetValue<long>());
            Assert.True(step["tokens_per_second"]!.GetValue<double>() > 0, step.ToJsonString());
            Assert.True(step["latency_ms"]!["p50"]!.GetValue<double>() <= step["latency_ms"]!["p99"]!.GetValue<double>(), step.ToJsonString());
        }

        // Nothing fails under this SLO on an idle cluster: the goodput is the last step's throughput.
        Assert.Equal(2.0, r["goodput"]!["concurrency"]!.GetValue<double>());
        Assert.Equal(sweep[1]!["tokens_per_second"]!.GetValue<double>(), r["goodput"]!["tokens_per_second"]!.GetValue<double>());
        Assert.Contains("goodput at p99 <= 60000 ms:", run.Stdout, StringComparison.Ordinal);
        var svg = Assert.Single(Regex.Matches(File.ReadAllText(html), "<svg\\b.*?</svg>", RegexOptions.Singleline));
        Assert.Equal(4, XDocument.Parse(svg.Value).Root!.Descendants().Count(e => e.Name.LocalName == "circle"));
    }

    [Fact]
    public void Sweep_where_no_step_meets_the_slo_exits_with_code_3()
    {
        var run = Load("--url", cluster.Url, "--sweep", "1,2", "--duration", "0.5", "--warmup", "0", "--models", "lat", "--slo-p99", "0.001");
        Assert.True(run.ExitCode == 3, run.ToString());
        Assert.Contains("SLO missed: no step", run.Stderr, StringComparison.Ordinal);
        Assert.Contains("goodput at p99 <= 0.001 ms: none", run.Stdout, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("http://127.0.0.1:1")]
    [InlineData("not a url")]
    public void Bad_gateway_url_exits_2_with_one_line(string url)
    {
        var run = Load("--url", url, "--duration", "1", "--warmup", "0");
        Assert.True(run.ExitCode == 2, run.ToString());
        string line = Assert.Single(run.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.StartsWith("moecluster load: error:", line, StringComparison.Ordinal);
    }

    [Fact]
    public void Unknown_model_exits_2_naming_the_served_ones()
    {
        var run = Load("--url", cluster.Url, "--models", "lat,nope", "--duration", "1", "--warmup", "0");
        Assert.Equal(2, run.ExitCode);
        Assert.Contains("'nope' is not served", run.Stderr, StringComparison.Ordinal);
        Assert.Contains("lat, std", run.Stderr, StringComparison.Ordinal);
    }
}
