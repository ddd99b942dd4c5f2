using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Text.Json.Nodes;
using MoECluster.Gateway;
using MoECluster.Model.Presets;
using MoECluster.Testing;

using MoECluster.Wire;

namespace MoECluster.EndToEnd.Tests;

/// <summary>
/// A cluster of three silo processes with API keys (a front-end with the gateway, two expert silos on HTTP ports of
/// their own), serving a tiny LatentMoE model and its standard twin; after a few forwards, every silo's <c>/metrics</c>
/// parses strictly (<see cref="PrometheusText"/>), holds the serving metrics, and its counters, summed over the silos,
/// equal what <c>/stats</c> reports.
/// </summary>
public sealed class MetricsClusterFixture : IAsyncLifetime
{
    public const string ApiKey = "metrics-key-5c1e7a9b3d2f4680";

    private readonly List<BackgroundProcess> _silos = [];

    public TempDirectory Dir { get; } = new("moecluster-metrics-");

    /// <summary>The front-end's URL, then each expert silo's.</summary>
    public IReadOnlyList<string> SiloUrls { get; private set; } = [];

    public IReadOnlyList<BackgroundProcess> Silos => _silos;

    public HttpClient Http { get; private set; } = null!;

    public GatewayClient Client { get; private set; } = null!;

    /// <summary>The /stats document after the forwards, and every silo's /metrics text fetched right after it.</summary>
    public JsonNode Stats { get; private set; } = null!;

    public IReadOnlyList<string> Expositions { get; private set; } = [];

    public async Task InitializeAsync()
    {
        string lat = Dir.File("lat"), std = Dir.File("std");
        SyntheticCheckpoint.Write(lat, ModelPresets.Get("tiny").Build(experts: 16), 31);
        SyntheticCheckpoint.Write(std, ModelPresets.Get("tiny-standard").Build(experts: 16), 32);
        int[] ports = FreePorts.Take(6);
        string P(int p) => p.ToString(CultureInfo.InvariantCulture);
        SiloUrls = [$"http://127.0.0.1:{P(ports[3])}", $"http://127.0.0.1:{P(ports[4])}", $"http://127.0.0.1:{P(ports[5])}"];
        var environment = new Dictionary<string, string>
        {
            ["Orleans__ClusterId"] = "moecluster-metrics-test",
            ["MoECluster__Gateway__ApiKeys__0"] = ApiKey,
        };
        string[] models = ["--model", $"lat={lat}", "--model", $"std={std}", "--shards", "4"];
        _silos.Add(BackgroundProcess.Moecluster(environment,
            ["silo", "--role", "frontend", "--name", "frontend", "--silo-port", P(ports[0]), "--gateway-port", "0", "--urls", SiloUrls[0], .. models]));
        Http = new HttpClient { BaseAddress = new Uri(SiloUrls[0]), Timeout = TimeSpan.FromMinutes(2) };
        Http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", ApiKey);
        Client = new GatewayClient(Http);
        await ProcessWait.UntilAsync("front-end silo", async () => (await Http.GetAsync("/alive")).IsSuccessStatusCode, TimeSpan.FromSeconds(90), _silos);
        for (int i = 1; i <= 2; i++)
        {
            _silos.Add(BackgroundProcess.Moecluster(environment, [
                "silo", "--role", "expert", "--name", $"expert-{i}", "--silo-port", P(ports[i]), "--gateway-port", "0",
                "--primary", $"127.0.0.1:{P(ports[0])}", "--urls", SiloUrls[i], .. models]));
        }

        await ProcessWait.UntilAsync("two expert silos", async () => (await Client.HealthAsync()).Body?["expert_silos"]?.GetValue<int>() == 2, TimeSpan.FromSeconds(90), _silos);

        // N forwards: layers and stacks of both models, different token counts and wires.
        var served = await Client.ModelsAsync();
        var rng = new Random(5);
        foreach (var (model, layer, tokens, wire) in new (string, int?, int, string)[]
        {
            ("lat", 0, 5, "bf16"), ("lat", 0, 3, "fp32"), ("lat", null, 4, "bf16"), ("std", 0, 6, "bf16"), ("std", null, 2, "fp16"), ("lat", 1, 7, "bf16"),
        })
        {
            var config = served.Single(m => m.Id == model);
            int? moeLayer = layer is int l ? config.MoeLayers[l] : null;
            float[] x = [.. Enumerable.Range(0, tokens * config.HiddenSize).Select(_ => (float)(rng.NextDouble() - 0.5))];
            await Client.ForwardAsync(model, moeLayer, x, tokens, config.HiddenSize, wire);
        }

        Stats = await Client.StatsAsync();
        Expositions = await Task.WhenAll(SiloUrls.Select(ScrapeAsync));
    }

    public async Task<string> ScrapeAsync(string url)
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, url + "/metrics");
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", ApiKey);
        using var response = await Http.SendAsync(request);
        string body = await response.Content.ReadAsStringAsync();
        Assert.True(response.IsSuccessStatusCode, $"GET {url}/metrics: {(int)response.StatusCode} {body}");
        Assert.StartsWith("text/plain", response.Content.Headers.ContentType?.MediaType, StringComparison.Ordinal);
        return body;
    }

    public Task DisposeAsync()
    {
        Http?.Dispose();
        foreach (var silo in _silos.AsEnumerable().Reverse())
        {
            silo.Stop(TimeSpan.FromSeconds(10));
            silo.Dispose();
        }

        Dir.Dispose();
        return Task.CompletedTask;
    }
}

public sealed class MetricsEndpointTests(MetricsClusterFixture cluster) : IClassFixture<MetricsClusterFixture>
{
    /// <summary>Families the front-end's /metrics must hold after traffic, with their Prometheus type.</summary>
    private static readonly (string Name, string Type)[] FrontEndFamilies =
    [
        ("moecluster_gateway_requests_in_flight", "gauge"),
        ("moecluster_gateway_requests_queued", "gauge"),
        ("moecluster_gateway_tokens_in_flight", "gauge"),
        ("moecluster_gateway_tokens_queued", "gauge"),
        ("moecluster_gateway_requests_total", "counter"),
        ("moecluster_gateway_tokens_total", "counter"),
        ("moecluster_gateway_request_duration_seconds", "histogram"),
        ("moecluster_forward_duration_seconds", "histogram"),
        ("moecluster_tokens_total", "counter"),
        ("moecluster_routed_payload_bytes_total", "counter"),
        ("moecluster_routed_message_bytes_total", "counter"),
        ("moecluster_routed_predicted_bytes_total", "counter"),
        ("moecluster_shard_call_duration_seconds", "histogram"),
        ("moecluster_expert_tokens_total", "counter"),
        ("moecluster_frontend_batch_requests", "histogram"),
        ("moecluster_frontend_batch_tokens", "histogram"),
        ("orleans_messaging_sent_messages_size_bytes", "histogram"),
    ];

    /// <summary>Families every expert silo's /metrics must hold (each holds shards, so each ran grouped passes).</summary>
    private static readonly (string Name, string Type)[] ExpertFamilies =
    [
        ("moecluster_shard_batch_requests", "histogram"),
        ("moecluster_shard_batch_rows", "histogram"),
        ("moecluster_shard_pass_duration_seconds", "histogram"),
        ("moecluster_orleans_socket_bytes_total", "counter"),
        ("orleans_messaging_sent_messages_size_bytes", "histogram"),
    ];

    private PrometheusText[] Parsed => [.. cluster.Expositions.Select(PrometheusText.Parse)];

    private double Sum(string sample, Func<IReadOnlyDictionary<string, string>, bool>? where = null) => Parsed.Sum(p => p.Sum(sample, where));

    private static long L(JsonNode? node) => node!.GetValue<long>();

    [Fact]
    public void Every_silos_metrics_parse_strictly_and_hold_the_serving_families()
    {
        var parsed = Parsed;
        Assert.Equal(3, parsed.Length);
        foreach (var (name, type) in FrontEndFamilies)
        {
            var family = parsed[0].Family(name);
            Assert.Equal(type, family.Type);
            // Ours carry their description; Orleans' instruments have none.
            Assert.True(!name.StartsWith("moecluster_", StringComparison.Ordinal) || !string.IsNullOrWhiteSpace(family.Help), $"{name} has no HELP");
            Assert.NotEmpty(family.Samples);
        }

        foreach (var expert in parsed.Skip(1))
        {
            foreach (var (name, type) in ExpertFamilies)
            {
                Assert.Equal(type, expert.Family(name).Type);
                Assert.NotEmpty(expert.Family(name).Samples);
            }
        }

        // Forward duration by model and mode; payload bytes by mode, layer, silo pair and the direction's wire type; shard calls by the shard's silo.
        var forward = parsed[0].Samples("moecluster_forward_duration_seconds_count").ToList();
        Assert.Contains(forward, s => s.Labels["model"] == "lat" && s.Labels["mode"] == "latent" && s.Labels["target"] == "stack");
        Assert.Contains(forward, s => s.Labels["model"] == "std" && s.Labels["mode"] == "standard");
        var payload = parsed[0].Samples("moecluster_routed_payload_bytes_total").ToList();
        Assert.All(payload, s => Assert.Superset(new HashSet<string> { "model", "mode", "layer", "direction", "from", "to", "wire" }, s.Labels.Keys.ToHashSet()));
        Assert.All(payload, s => Assert.Contains(s.Labels["wire"], WireCodecs.Names));
        Assert.Contains(parsed[0].Samples("moecluster_shard_call_duration_seconds_count"), s => s.Labels.ContainsKey("silo") && s.Labels["mode"] == "standard");

        // Nothing is in flight or queued once the forwards have been answered.
        foreach (string gauge in new[] { "moecluster_gateway_requests_in_flight", "moecluster_gateway_requests_queued", "moecluster_gateway_tokens_in_flight", "moecluster_gateway_tokens_queued" })
        {
            Assert.Equal(0, parsed[0].Sum(gauge));
        }
    }

    [Fact]
    public void Counters_summed_over_the_silos_equal_stats()
    {
        var stats = cluster.Stats;
        var names = stats["silos"]!.AsArray().ToDictionary(s => s!["address"]!.GetValue<string>(), s => s!["name"]!.GetValue<string>());
        string Name(string address) => names.TryGetValue(address, out string? n) ? n : "unknown silo " + address;

        // Tokens and expert tokens per model and layer.
        int layers = 0;
        foreach (var model in stats["models"]!.AsArray())
        {
            string id = model!["model"]!.GetValue<string>();
            foreach (var layer in model["layers"]!.AsArray())
            {
                string index = layer!["layer"]!.GetValue<int>().ToString(CultureInfo.InvariantCulture);
                bool Here(IReadOnlyDictionary<string, string> l) => l["model"] == id && l["layer"] == index;
                Assert.True(L(layer["tokens"]) > 0);
                Assert.Equal(L(layer["tokens"]), Sum("moecluster_tokens_total", Here));
                Assert.Equal(L(layer["predicted_payload_bytes"]), Sum("moecluster_routed_predicted_bytes_total", Here));
                var experts = layer["expert_tokens"]!.AsArray();
                for (int e = 0; e < experts.Count; e++)
                {
                    string expert = e.ToString(CultureInfo.InvariantCulture);
                    Assert.Equal(L(experts[e]), Sum("moecluster_expert_tokens_total", l => Here(l) && l["expert"] == expert));
                }

                layers++;
            }
        }

        Assert.Equal(4, layers);

        // Routed payload and message bytes per (model, mode, layer, direction, silo pair, wire type of the direction), and in total.
        var pairs = stats["silo_pairs"]!.AsArray();
        Assert.NotEmpty(pairs);
        foreach (var pair in pairs)
        {
            bool Same(IReadOnlyDictionary<string, string> l) =>
                l["model"] == pair!["model"]!.GetValue<string>() && l["mode"] == pair["mode"]!.GetValue<string>()
                && l["layer"] == pair["layer"]!.GetValue<int>().ToString(CultureInfo.InvariantCulture) && l["direction"] == pair["direction"]!.GetValue<string>()
                && Name(l["from"]) == pair["from_silo"]!.GetValue<string>() && Name(l["to"]) == pair["to_silo"]!.GetValue<string>()
                && l["wire"] == pair["wire"]!.GetValue<string>();
            Assert.Equal(L(pair!["payload_bytes"]), Sum("moecluster_routed_payload_bytes_total", Same));
            Assert.Equal(L(pair["message_bytes"]), Sum("moecluster_routed_message_bytes_total", Same));
        }

        var totals = stats["totals"]!;
        Assert.Equal(L(totals["payload_bytes"]), Sum("moecluster_routed_payload_bytes_total"));
        Assert.Equal(L(totals["message_bytes"]), Sum("moecluster_routed_message_bytes_total"));

        // One shard call = one dispatch and one combine message.
        Assert.Equal(L(totals["messages"]), 2 * Sum("moecluster_shard_call_duration_seconds_count"));

        // Batch sizes: passes, requests and rows of the expert shards; forwards, requests and tokens of the front-end.
        var shardBatches = stats["shard_batches"]!.AsArray();
        Assert.Equal(shardBatches.Sum(b => L(b!["batches"])), Sum("moecluster_shard_batch_requests_count"));
        Assert.Equal(shardBatches.Sum(b => L(b!["requests"])), Sum("moecluster_shard_batch_requests_sum"));
        Assert.Equal(shardBatches.Sum(b => L(b!["rows"])), Sum("moecluster_shard_batch_rows_sum"));
        Assert.Equal(shardBatches.Sum(b => L(b!["batches"])), Sum("moecluster_shard_pass_duration_seconds_count"));
        var frontEnd = stats["front_end_batches"]!.AsArray();
        Assert.Equal(6, frontEnd.Sum(b => L(b!["requests"])));
        Assert.Equal(frontEnd.Sum(b => L(b!["batches"])), Sum("moecluster_frontend_batch_requests_count"));
        Assert.Equal(frontEnd.Sum(b => L(b!["requests"])), Sum("moecluster_frontend_batch_requests_sum"));
        Assert.Equal(frontEnd.Sum(b => L(b!["tokens"])), Sum("moecluster_frontend_batch_tokens_sum"));
        Assert.Equal(frontEnd.Sum(b => L(b!["batches"])), Sum("moecluster_forward_duration_seconds_count"));

        // The gateway's requests and tokens.
        var gateway = stats["gateway"]!;
        Assert.Equal(6, L(gateway["requests"]!["answered"]));
        foreach (string outcome in new[] { "answered", "failed", "rejected", "overloaded", "busy", "disconnected" })
        {
            Assert.Equal(L(gateway["requests"]![outcome]), Sum("moecluster_gateway_requests_total", l => l["outcome"] == outcome));
        }

        Assert.Equal(L(gateway["tokens"]), Sum("moecluster_gateway_tokens_total"));
        Assert.Equal(L(gateway["latency_ms"]!["count"]), Sum("moecluster_gateway_request_duration_seconds_count"));
    }

    [Fact]
    public async Task Metrics_need_the_api_key_on_every_silo_and_the_expert_probes_stay_open()
    {
        using var anonymous = new HttpClient { Timeout = TimeSpan.FromSeconds(30) };
        foreach (string url in cluster.SiloUrls)
        {
            using var refused = await anonymous.GetAsync(url + "/metrics");
            Assert.Equal(HttpStatusCode.Unauthorized, refused.StatusCode);
            Assert.Contains(refused.Headers.WwwAuthenticate, h => h.Scheme == "Bearer");
            Assert.DoesNotContain("moecluster_", await refused.Content.ReadAsStringAsync(), StringComparison.Ordinal);
            using var wrong = new HttpRequestMessage(HttpMethod.Get, url + "/metrics");
            wrong.Headers.Authorization = new AuthenticationHeaderValue("Bearer", "not-the-key-00000000000000");
            Assert.Equal(HttpStatusCode.Unauthorized, (await anonymous.SendAsync(wrong)).StatusCode);
        }

        foreach (string url in cluster.SiloUrls.Skip(1))
        {
            Assert.Equal(HttpStatusCode.OK, (await anonymous.GetAsync(url + "/health")).StatusCode);
            Assert.Equal(HttpStatusCode.OK, (await anonymous.GetAsync(url + "/alive")).StatusCode);
        }

        Assert.Contains("moecluster_tokens_total", await cluster.ScrapeAsync(cluster.SiloUrls[0]), StringComparison.Ordinal);
    }

    /// <summary>
    /// A real Prometheus (Debian's <c>prometheus</c>, which the test command installs: tests/tools/install-test-deps.sh)
    /// scrapes the three silos with the key as a bearer token; once its scrapes are past the forwards, the sums it answers
    /// equal <c>/stats</c>.
    /// </summary>
    [Fact]
    public async Task A_real_prometheus_scrapes_every_silo_and_its_sums_equal_stats()
    {
        const string Binary = "/usr/bin/prometheus";
        Assert.True(File.Exists(Binary), "Debian's prometheus is not installed: `apt-get install -y prometheus` (tests/tools/install-test-deps.sh installs it)");

        string dir = cluster.Dir.File("prometheus");
        Directory.CreateDirectory(dir);
        string keyFile = Path.Combine(dir, "key");
        await File.WriteAllTextAsync(keyFile, MetricsClusterFixture.ApiKey);
        string targets = string.Join(", ", cluster.SiloUrls.Select(u => $"'{new Uri(u).Authority}'"));
        await File.WriteAllTextAsync(Path.Combine(dir, "prometheus.yml"), $"""
            global:
              scrape_interval: 1s
              scrape_timeout: 1s
            scrape_configs:
              - job_name: moecluster
                metrics_path: /metrics
                authorization:
                  type: Bearer
                  credentials_file: {keyFile}
                static_configs:
                  - targets: [{targets}]
            """);
        int port = FreePorts.Take(1)[0];
        using var prometheus = BackgroundProcess.Start(Binary, [
            $"--config.file={Path.Combine(dir, "prometheus.yml")}", $"--storage.tsdb.path={Path.Combine(dir, "data")}",
            $"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"]);
        try
        {
            using var http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{port}"), Timeout = TimeSpan.FromSeconds(10) };
            async Task<double?> QueryAsync(string query)
            {
                try
                {
                    var answer = JsonNode.Parse(await http.GetStringAsync("/api/v1/query?query=" + Uri.EscapeDataString(query)));
                    var result = answer?["data"]?["result"]?.AsArray();
                    return result is { Count: 1 } ? double.Parse(result[0]!["value"]![1]!.GetValue<string>(), CultureInfo.InvariantCulture) : null;
                }
                catch (HttpRequestException)
                {
                    return null;
                }
            }

            await ProcessWait.UntilAsync("Prometheus scraping the three silos", async () => await QueryAsync("count(up == 1)") == 3, TimeSpan.FromSeconds(60), prometheus);
            var stats = await cluster.Client.StatsAsync();
            long tokens = stats["models"]!.AsArray().Sum(m => L(m!["tokens"]));
            long payload = L(stats["totals"]!["payload_bytes"]);
            long expertTokens = stats["models"]!.AsArray().Sum(m => m!["layers"]!.AsArray().Sum(l => l!["expert_tokens"]!.AsArray().Sum(L)));
            long passes = stats["shard_batches"]!.AsArray().Sum(b => L(b!["batches"]));
            var expected = new (string Query, long Value)[]
            {
                ("sum(moecluster_tokens_total)", tokens),
                ("sum(moecluster_routed_payload_bytes_total)", payload),
                ("sum(moecluster_expert_tokens_total)", expertTokens),
                ("sum(moecluster_shard_batch_requests_count)", passes),
                ("sum(moecluster_gateway_tokens_total)", L(stats["gateway"]!["tokens"])),
            };
            Assert.True(tokens > 0 && payload > 0 && passes > 0);
            var clock = Stopwatch.StartNew();
            var seen = new double?[expected.Length];
            while (true)
            {
                for (int i = 0; i < expected.Length; i++)
                {
                    seen[i] = await QueryAsync(expected[i].Query);
                }

                if (expected.Select((e, i) => seen[i] == e.Value).All(ok => ok))
                {
                    break;
                }

                Assert.True(clock.Elapsed < TimeSpan.FromSeconds(30),
                    "Prometheus answered " + string.Join("; ", expected.Select((e, i) => $"{e.Query} = {seen[i]?.ToString(CultureInfo.InvariantCulture) ?? "nothing"} (/stats: {e.Value})")));
                await Task.Delay(500);
            }
        }
        finally
        {
            prometheus.Stop(TimeSpan.FromSeconds(5));
        }
    }
}
