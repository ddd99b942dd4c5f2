using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;
using Microsoft.Playwright;
using MoECluster.Model.Numerics;

namespace MoECluster.EndToEnd.Tests;

/// <summary>
/// The live routing page at <c>/</c>, opened in headless Chromium (Debian's package, driven by Playwright) against
/// the three-process cluster: it updates without a reload while traffic flows, and once traffic stops every figure
/// it shows equals the one in <c>/stats</c>.
/// </summary>
[Collection(ProcessClusterGroup.Name)]
public sealed class LiveRoutingPageTests(ProcessClusterFixture cluster)
{
    public const string ChromiumPath = "/usr/bin/chromium";

    [Fact]
    public async Task Page_shows_traffic_live_and_every_figure_matches_stats_once_traffic_stops()
    {
        Assert.True(File.Exists(ChromiumPath), $"{ChromiumPath} is missing: install Debian's chromium (apt-get install chromium); .ci/run does");
        using var playwright = await Playwright.CreateAsync();
        await using var browser = await playwright.Chromium.LaunchAsync(new BrowserTypeLaunchOptions
        {
            ExecutablePath = ChromiumPath,
            Headless = true,
            Args = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        });
        var page = await browser.NewPageAsync();
        var origins = new List<string>();
        page.Request += (_, request) => origins.Add(new Uri(request.Url).GetLeftPart(UriPartial.Authority));
        var consoleErrors = new List<string>();
        page.Console += (_, message) =>
        {
            if (message.Type == "error")
            {
                consoleErrors.Add(message.Text);
            }
        };

        await page.GotoAsync(cluster.Url + "/");
        await page.WaitForSelectorAsync("#connection[data-state=live]", new PageWaitForSelectorOptions { Timeout = 10_000 });
        long answeredBefore = await LongAsync(page, "#requests-answered");

        // Traffic while the page is open: the page must show it within 10 s, without a reload.
        var models = await cluster.Client.ModelsAsync();
        int sent = 0;
        double maxTokensPerSecond = 0;
        var clock = Stopwatch.StartNew();
        var rng = DeterministicRandom.For(5, "live-page");
        while (clock.Elapsed < TimeSpan.FromSeconds(4))
        {
            foreach (var m in models)
            {
                int tokens = 1 + (sent % 3 * 7);
                var x = new float[tokens * m.HiddenSize];
                for (int i = 0; i < x.Length; i++)
                {
                    x[i] = (float)rng.NextGaussian();
                }

                await cluster.Client.ForwardAsync(m.Id, m.MoeLayers[0], x, tokens, m.HiddenSize, "bf16");
                sent++;
            }

            maxTokensPerSecond = Math.Max(maxTokensPerSecond, await DoubleAsync(page, "#tokens-per-second"));
            await Task.Delay(50);
        }

        await WaitUntilAsync(async () => await LongAsync(page, "#requests-answered") >= answeredBefore + sent, TimeSpan.FromSeconds(10),
            () => $"the page did not show the {sent} new answered requests within 10 s");
        maxTokensPerSecond = Math.Max(maxTokensPerSecond, await DoubleAsync(page, "#tokens-per-second"));
        Assert.True(maxTokensPerSecond > 0, "the page never showed a non-zero tokens/s while traffic flowed");
        Assert.True(await page.EvaluateAsync<int>("() => Number(document.body.dataset.events)") >= 3, "the page rendered fewer than 3 stats events in 4 s");

        // Traffic has stopped: cumulative figures are stable, so the page must equal /stats exactly.
        string mismatch = string.Empty;
        await WaitUntilAsync(async () =>
        {
            var stats = await cluster.Client.StatsAsync();
            mismatch = await CompareAsync(page, stats);
            return mismatch.Length == 0;
        }, TimeSpan.FromSeconds(10), () => "page and /stats disagree: " + mismatch);

        Assert.All(origins, o => Assert.Equal(new Uri(cluster.Url).GetLeftPart(UriPartial.Authority), o));
        Assert.Empty(consoleErrors);
    }

    [Fact]
    public async Task Event_stream_sends_the_stats_document_as_server_sent_events()
    {
        foreach (var m in await cluster.Client.ModelsAsync())
        {
            await cluster.Client.ForwardAsync(m.Id, m.MoeLayers[0], [.. Enumerable.Range(0, m.HiddenSize).Select(i => MathF.Sin(i + 1))], 1, m.HiddenSize, "fp32");
        }

        using var http = new HttpClient { BaseAddress = new Uri(cluster.Url) };
        using var response = await http.GetAsync("/v1/stats/stream?interval_ms=250", HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal("text/event-stream", response.Content.Headers.ContentType?.MediaType);
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
        var events = new List<JsonNode>();
        var clock = Stopwatch.StartNew();
        string? name = null;
        while (events.Count < 3)
        {
            string line = await reader.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(10)) ?? throw new EndOfStreamException("the stream ended");
            if (line.StartsWith("event: ", StringComparison.Ordinal))
            {
                name = line[7..];
            }
            else if (line.StartsWith("data: ", StringComparison.Ordinal))
            {
                Assert.Equal("stats", name);
                events.Add(JsonNode.Parse(line[6..])!);
            }
        }

        // Three events at 250 ms apart (the feed shares one collection per 500 ms between every open page).
        Assert.InRange(clock.Elapsed.TotalSeconds, 0.4, 5);
        Assert.All(events, e =>
        {
            Assert.Equal(3, e["silos"]!.AsArray().Count);
            Assert.NotNull(e["gateway"]!["latency_ms"]!["p99"]);
            Assert.Equal(2, e["models"]!.AsArray().Count);
        });
    }

    private static async Task<string> CompareAsync(IPage page, JsonNode stats)
    {
        var problems = new List<string>();
        async Task Same(string selector, double expected, string attribute = "data-value")
        {
            string? text = await page.Locator(selector).First.GetAttributeAsync(attribute);
            double actual = double.Parse(text ?? "NaN", CultureInfo.InvariantCulture);
            if (!(Math.Abs(actual - expected) <= 1e-9 * Math.Max(1, Math.Abs(expected))))
            {
                problems.Add($"{selector} {attribute}={text}, /stats {expected.ToString(CultureInfo.InvariantCulture)}");
            }
        }

        async Task SameText(string selector, string expected)
        {
            string actual = (await page.Locator(selector).First.TextContentAsync() ?? string.Empty).Trim();
            if (actual != expected)
            {
                problems.Add($"{selector} shows '{actual}', /stats gives '{expected}'");
            }
        }

        var g = stats["gateway"]!;
        await Same("#requests-answered", g["requests"]!["answered"]!.GetValue<long>());
        await Same("#requests-failed", g["requests"]!["failed"]!.GetValue<long>());
        await Same("#requests-rejected", g["requests"]!["rejected"]!.GetValue<long>());
        await Same("#tokens-total", g["tokens"]!.GetValue<long>());
        foreach (string p in new[] { "p50", "p90", "p99", "p999", "max" })
        {
            double v = g["latency_ms"]![p]!.GetValue<double>();
            await Same($"#latency-{p}", v);
            await SameText($"#latency-{p}", Shown(v, 2));
        }

        double ratio = stats["standard_over_latent_bytes_per_token"]!.GetValue<double>();
        await Same("#bytes-ratio", ratio);
        await SameText("#bytes-ratio", Shown(ratio, 2));
        foreach (var m in stats["models"]!.AsArray())
        {
            string row = $"#bytes-table tr[data-model='{m!["model"]}']";
            await Same($"{row} td[data-field=tokens]", m["tokens"]!.GetValue<long>());
            await Same($"{row} td[data-field=measured]", m["measured_payload_bytes_per_token"]!.GetValue<double>());
            await Same($"{row} td[data-field=predicted]", m["predicted_payload_bytes_per_token"]!.GetValue<double>());
            await Same($"{row} td[data-field=message]", m["measured_message_bytes_per_token"]!.GetValue<double>());
            await Same($"{row} td[data-field=routed-width]", m["routed_width"]!.GetValue<int>());
            await SameText($"{row} td[data-field=measured]", Shown(m["measured_payload_bytes_per_token"]!.GetValue<double>(), 1));
            foreach (var layer in m["layers"]!.AsArray())
            {
                var counts = layer!["expert_tokens"]!.AsArray().Select(c => c!.GetValue<long>()).ToArray();
                string heat = $".heatmap[data-model='{m["model"]}'] .heatrow[data-layer='{layer["layer"]}'] .cell";
                var shown = await page.Locator(heat).EvaluateAllAsync<long[]>("cells => cells.map(c => Number(c.dataset.tokens))");
                if (!shown.SequenceEqual(counts))
                {
                    problems.Add($"{heat}: page [{string.Join(",", shown)}], /stats [{string.Join(",", counts)}]");
                }
            }
        }

        foreach (var silo in stats["silos"]!.AsArray())
        {
            string card = $".silo[data-silo='{silo!["name"]}']";
            var shards = await page.Locator($"{card} .shard").EvaluateAllAsync<string[]>("chips => chips.map(c => c.dataset.shard)");
            var expected = silo["shards"]!.AsArray().Select(s => s!.GetValue<string>()).ToArray();
            if (!shards.SequenceEqual(expected))
            {
                problems.Add($"{card}: page [{string.Join(",", shards)}], /stats [{string.Join(",", expected)}]");
            }

            if (await page.Locator(card).GetAttributeAsync("data-role") != silo["role"]!.GetValue<string>())
            {
                problems.Add($"{card}: role differs");
            }
        }

        // The expert-silo balance table: one row per (layer, silo), the layer's compute imbalance on each.
        var balance = stats["balance"]!.AsArray();
        if (balance.Count == 0)
        {
            problems.Add("/stats has no balance after traffic");
        }

        foreach (var layer in balance)
        {
            string rows = $"#balance-table tr[data-layer='{layer!["model"]}/{layer["layer"]}']";
            if (await page.Locator(rows).CountAsync() != layer["silos"]!.AsArray().Count)
            {
                problems.Add($"{rows}: {await page.Locator(rows).CountAsync()} rows, /stats {layer["silos"]!.AsArray().Count} silos");
            }

            await Same(rows, layer["compute_imbalance"]!.GetValue<double>(), "data-compute-imbalance");
        }

        // The front-end batching table: a row per (model, layer, wire pair, silo), each direction's type in its own column.
        var frontEnd = stats["front_end_batches"]!.AsArray();
        if (frontEnd.Count == 0)
        {
            problems.Add("/stats has no front-end batches after traffic");
        }

        foreach (var b in frontEnd)
        {
            string wire = b!["wire"]!.GetValue<string>();
            string row = $"#frontend-batching-table tr[data-target='{b["model"]}/{b["target"]}/{wire}'][data-silo='{b["silo"]}']";
            string[] directions = wire.Split('/');
            if (await page.Locator(row).CountAsync() != 1
                || await page.Locator(row).GetAttributeAsync("data-dispatch") != directions[0]
                || await page.Locator(row).GetAttributeAsync("data-combine") != directions[^1])
            {
                problems.Add($"{row}: {await page.Locator(row).CountAsync()} rows, or its dispatch/combine is not {wire}");
            }
            else
            {
                await Same(row, b["mean_requests"]!.GetValue<double>(), "data-mean-requests");
            }
        }

        // The placement plans table: every model's epoch, a row per re-plan (or one "no re-plan yet" row).
        foreach (var placement in stats["placement"]!.AsArray())
        {
            string rows = $"#plan-table tr[data-model='{placement!["model"]}'][data-epoch='{placement["epoch"]}']";
            int expected = Math.Max(1, placement["history"]!.AsArray().Count);
            if (await page.Locator(rows).CountAsync() != expected)
            {
                problems.Add($"{rows}: {await page.Locator(rows).CountAsync()} rows, /stats {expected}");
            }
        }

        if (stats["placement"]!.AsArray().Count == 0)
        {
            problems.Add("/stats has no placement");
        }

        int cards = await page.Locator(".silo").CountAsync();
        if (cards != stats["silos"]!.AsArray().Count)
        {
            problems.Add($"{cards} silo cards, /stats has {stats["silos"]!.AsArray().Count} silos");
        }

        return string.Join("; ", problems);
    }

    /// <summary>
    /// What the page's <c>toLocaleString('en-US')</c> shows: ICU rounds the shortest decimal that round-trips the
    /// double (not its exact binary value: 460.95 shows as 461.0), half away from zero, thousands grouped.
    /// </summary>
    private static string Shown(double value, int digits)
    {
        decimal exact = decimal.Parse(value.ToString("R", CultureInfo.InvariantCulture), NumberStyles.Float, CultureInfo.InvariantCulture);
        return Math.Round(exact, digits, MidpointRounding.AwayFromZero).ToString("N" + digits.ToString(CultureInfo.InvariantCulture), CultureInfo.InvariantCulture);
    }

    private static async Task<long> LongAsync(IPage page, string selector) =>
        long.Parse(await page.Locator(selector).GetAttributeAsync("data-value") ?? "0", CultureInfo.InvariantCulture);

    private static async Task<double> DoubleAsync(IPage page, string selector) =>
        double.Parse(await page.Locator(selector).GetAttributeAsync("data-value") ?? "0", CultureInfo.InvariantCulture);

    private static async Task WaitUntilAsync(Func<Task<bool>> condition, TimeSpan timeout, Func<string> message)
    {
        var clock = Stopwatch.StartNew();
        while (!await condition())
        {
            Assert.True(clock.Elapsed < timeout, message());
            await Task.Delay(200);
        }
    }
}
