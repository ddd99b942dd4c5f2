using System.Text;
using System.Text.Json.Nodes;
using HdrHistogram;
using MoECluster.Model.Configuration;

namespace MoECluster.Cli.Load;

/// <summary>
/// The self-contained HTML report of a load run: the headline numbers of the JSON and four inline SVG charts
/// (latency CDF, throughput over time, bytes per token measured vs predicted, expert load per layer). No script, no
/// external resource: it works offline.
/// </summary>
internal static class HtmlReport
{
    public const string MsFormat = "0.000";

    /// <summary>The (latency ms, percentile) steps of a histogram's recorded values, ending at its max.</summary>
    public static IReadOnlyList<(double X, double Y)> Cdf(LongHistogram h)
    {
        var points = new List<(double X, double Y)>();
        long total = h.TotalCount;
        if (total == 0)
        {
            return points;
        }

        double max = h.GetMaxValue() / 1000.0;
        foreach (var v in h.RecordedValues())
        {
            double ms = Math.Min(v.ValueIteratedTo / 1000.0, max);
            points.Add((ms, 100.0 * v.TotalCountToThisValue / total));
        }

        return points;
    }

    /// <summary>Rows of the expert-load heatmap from <c>/stats</c>: one per model and layer, each expert's share of the layer's expert tokens.</summary>
    public static IReadOnlyList<HeatmapRow> ExpertRows(JsonNode? stats)
    {
        var rows = new List<HeatmapRow>();
        if (stats?["models"] is not JsonArray models)
        {
            return rows;
        }

        foreach (var model in models)
        {
            string id = model?["model"]?.GetValue<string>() ?? "?";
            if (model?["layers"] is not JsonArray layers)
            {
                continue;
            }

            foreach (var layer in layers)
            {
                if (layer?["expert_tokens"] is not JsonArray experts)
                {
                    continue;
                }

                long[] counts = [.. experts.Select(e => e?.GetValue<long>() ?? 0)];
                long sum = counts.Sum();
                rows.Add(new HeatmapRow($"{id} layer {layer["layer"]?.ToJsonString() ?? "?"}",
                    [.. counts.Select(c => sum == 0 ? 0 : (double)c / sum)], counts));
            }
        }

        return rows;
    }

    public static string Build(JsonObject report, LoadSnapshot snapshot, JsonNode? stats, string? statsError)
    {
        static string E(string s) => SvgCharts.Escape(s);
        static string Ms(JsonNode? n) => n is null ? "-" : LoadRunner.F(n.GetValue<double>(), MsFormat);
        static string Bytes(JsonNode? n) => n is null ? "-" : LoadRunner.F(n.GetValue<double>(), "#,0.0");

        var html = new StringBuilder();
        html.Append("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>moecluster load report</title>\n<style>\n")
            .Append("body{font-family:sans-serif;margin:24px;color:#222;max-width:1000px}\n")
            .Append("table{border-collapse:collapse;margin:8px 0 20px}\n")
            .Append("th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}\n")
            .Append("th:first-child,td:first-child{text-align:left}\n")
            .Append("code{background:#f4f4f4;padding:2px 4px;word-break:break-all}\n")
            .Append("figure{margin:16px 0}\n")
            .Append("</style>\n</head>\n<body>\n<h1>moecluster load report</h1>\n");
        html.Append("<p>Command: <code>").Append(E(report["command"]?.GetValue<string>() ?? string.Empty)).Append("</code></p>\n");
        html.Append("<p>").Append(E($"{report["mode"]} loop, {LoadRunner.F(report["duration_s"]!.GetValue<double>(), "0.##")} s measured; latency in ms; bytes per token per MoE layer (dispatch + combine payload)."))
            .Append("</p>\n");
        if (report["metadata"] is JsonObject meta)
        {
            string label = meta["label"]?.GetValue<string>() is { } l ? $"{l}; " : string.Empty;
            html.Append("<p>").Append(E($"{label}{meta["timestamp_utc"]}, moecluster {meta["moecluster"]?["version"]} ({meta["moecluster"]?["commit"]?.GetValue<string>() ?? "commit unknown"})")).Append("</p>\n");
        }

        var req = report["requests"]!;
        var lat = report["latency_ms"]!;
        var bpt = report["bytes_per_token"]!;
        html.Append("<table>\n<tr><th>metric</th><th>value</th></tr>\n");
        void Row(string name, string value) => html.Append("<tr><td>").Append(E(name)).Append("</td><td>").Append(E(value)).Append("</td></tr>\n");
        Row("tokens/s", LoadRunner.F(report["tokens_per_second"]!.GetValue<double>(), "#,0.0"));
        Row("requests sent", req["sent"]!.ToJsonString());
        Row("requests ok", req["ok"]!.ToJsonString());
        Row("requests failed", req["failed"]!.ToJsonString());
        Row("requests busy (429: a shard's queue full; not failed)", req["busy"]!.ToJsonString());
        if (report["errors"] is JsonObject errors)
        {
            Row("failed: 401 unauthorized / 5xx (503 overloaded) / other 4xx", $"{errors["unauthorized"]} / {errors["server_errors"]} ({errors["overloaded"]}) / {errors["client_errors"]}");
            Row("failed: timeouts / connection errors / other", $"{errors["timeouts"]} / {errors["connection_errors"]} / {errors["other"]}");
        }

        if (report["starts"] is JsonObject starts && report["mode"]?.GetValue<string>() == LoadSettings.Open)
        {
            Row($"started late (> {starts["late_threshold_ms"]} ms): by the cap / the client fell behind", $"{starts["late_by_cap"]} / {starts["late_by_client"]}");
            Row("waited for --max-concurrency / most in flight", $"{starts["waited_for_cap"]} / {starts["peak_in_flight"]}");
        }

        Row("p50 ms", Ms(lat["p50"]));
        Row("p90 ms", Ms(lat["p90"]));
        Row("p99 ms", Ms(lat["p99"]));
        Row("p99.9 ms", Ms(lat["p999"]));
        Row("max ms", Ms(lat["max"]));
        Row("bytes/token standard (measured / predicted)", $"{Bytes(bpt[MoeModes.Standard])} / {Bytes(bpt["predicted"]![MoeModes.Standard])}");
        Row("bytes/token latent (measured / predicted)", $"{Bytes(bpt[MoeModes.Latent])} / {Bytes(bpt["predicted"]![MoeModes.Latent])}");
        html.Append("</table>\n");

        html.Append("<table>\n<tr><th>model</th><th>mode</th><th>sent</th><th>ok</th><th>failed</th><th>busy</th><th>tokens/s</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th><th>bytes/token</th><th>predicted</th></tr>\n");
        foreach (var (id, m) in report["per_model"]!.AsObject())
        {
            var ml = m!["latency_ms"]!;
            var mr = m["requests"]!;
            string[] cells =
            [
                id, m["mode"]!.GetValue<string>(), mr["sent"]!.ToJsonString(), mr["ok"]!.ToJsonString(), mr["failed"]!.ToJsonString(), mr["busy"]!.ToJsonString(),
                LoadRunner.F(m["tokens_per_second"]!.GetValue<double>(), "#,0.0"), Ms(ml["p50"]), Ms(ml["p90"]), Ms(ml["p99"]), Ms(ml["p999"]), Ms(ml["max"]),
                Bytes(m["bytes_per_token"]!["measured"]), Bytes(m["bytes_per_token"]!["predicted"]),
            ];
            html.Append("<tr>").Append(string.Concat(cells.Select(c => $"<td>{E(c)}</td>"))).Append("</tr>\n");
        }

        html.Append("</table>\n");

        // (1) Latency CDF per model and overall.
        var cdf = snapshot.Models.OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => new ChartSeries(kv.Key, Cdf(kv.Value.Measured.Latency))).ToList();
        cdf.Add(new ChartSeries("all", Cdf(snapshot.Overall.Latency)));
        Figure(html, SvgCharts.LineChart("Latency CDF", "latency (ms, log scale)", "percentile", cdf, logX: true, yMin: 0, yMax: 100));

        // (2) Throughput per one-second bucket of the measured window.
        var timeline = snapshot.Timeline;
        Figure(html, SvgCharts.LineChart("Throughput per second of the measured window", "second of the measured window (by request end)", "per second",
            [
                new ChartSeries("tokens/s", [.. timeline.Select(b => ((double)b.Second, (double)b.Tokens))]),
                new ChartSeries("ok requests/s", [.. timeline.Select(b => ((double)b.Second, (double)b.RequestsOk))]),
            ], logX: false));

        // (3) Bytes per token, measured vs predicted, standard and latent, with the ratio.
        double? Value(JsonNode? n) => n?.GetValue<double>();
        double? std = Value(bpt[MoeModes.Standard]), latent = Value(bpt[MoeModes.Latent]);
        double? pStd = Value(bpt["predicted"]![MoeModes.Standard]), pLatent = Value(bpt["predicted"]![MoeModes.Latent]);
        static string? Ratio(double? a, double? b) => a is double x && b is double y && y > 0 ? LoadRunner.F(x / y, "0.00") : null;
        string ratio = $"standard / latent: {Ratio(std, latent) ?? "-"} measured, {Ratio(pStd, pLatent) ?? "-"} predicted";
        Figure(html, SvgCharts.BarChart("Bytes per token per MoE layer", "bytes/token", ["measured", "predicted"],
            [
                new BarGroup(MoeModes.Standard, [std, pStd], $"standard / latent = {Ratio(std, latent) ?? "-"} (predicted {Ratio(pStd, pLatent) ?? "-"})"),
                new BarGroup(MoeModes.Latent, [latent, pLatent], null),
            ]), ratio);

        // (4) Expert load per layer from /stats.
        Figure(html, SvgCharts.Heatmap("Expert load per layer (share of tokens)", "expert", ExpertRows(stats)),
            statsError is null ? "Cumulative since the cluster started (GET /stats after the run)." : $"GET /stats failed: {statsError}");

        html.Append("</body>\n</html>\n");
        return html.ToString();
    }

    private static void Figure(StringBuilder html, string svg, string? caption = null)
    {
        html.Append("<figure>\n").Append(svg).Append('\n');
        if (caption is not null)
        {
            html.Append("<figcaption>").Append(SvgCharts.Escape(caption)).Append("</figcaption>\n");
        }

        html.Append("</figure>\n");
    }

    public static void Write(string path, string html)
    {
        string full = Path.GetFullPath(path);
        Directory.CreateDirectory(Path.GetDirectoryName(full)!);
        File.WriteAllText(full, html, new UTF8Encoding(false));
    }
}
