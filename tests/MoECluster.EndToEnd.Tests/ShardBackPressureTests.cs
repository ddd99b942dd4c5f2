using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;
using MoECluster.Gateway;
using MoECluster.Model.Presets;
using MoECluster.Testing;
using Xunit.Abstractions;

namespace MoECluster.EndToEnd.Tests;

/// <summary>
/// A front-end and one expert silo as processes, serving the tiny LatentMoE ("lat", 16 experts in 2 shards per layer),
/// whose shards queue at most one request each (<c>MoECluster__ShardBatching__MaxQueuedRequests=1</c> on both silos).
/// </summary>
public sealed class TinyQueueClusterFixture : IAsyncLifetime
{
    private readonly List<BackgroundProcess> _silos = [];

    public TempDirectory Dir { get; } = new("moecluster-backpressure-");

    public string Url { get; private set; } = string.Empty;

    public HttpClient Http { get; private set; } = null!;

    public GatewayClient Client { get; private set; } = null!;

    public BackgroundProcess Expert => _silos[1];

    public IReadOnlyList<BackgroundProcess> Silos => _silos;

    public async Task InitializeAsync()
    {
        string lat = Dir.File("lat");
        SyntheticCheckpoint.Write(lat, ModelPresets.Get("tiny").Build(experts: 16), 21);
        int[] ports = FreePorts.Take(4);
        Url = $"http://127.0.0.1:{ports[3]}";
        string P(int p) => p.ToString(CultureInfo.InvariantCulture);
        // Front-end batching off: on, the one front-end would merge the flood into one message per shard and layer, and the
        // shards' queues would never fill (they fill when several front-ends, or unmerged requests, meet there).
        var environment = new Dictionary<string, string>
        {
            ["MoECluster__ShardBatching__MaxQueuedRequests"] = "1",
            ["MoECluster__FrontEndBatching__Enabled"] = "false",
        };
        string[] models = ["--model", $"lat={lat}", "--shards", "2"];
        _silos.Add(BackgroundProcess.Moecluster(environment, [
            "silo", "--role", "frontend", "--name", "frontend", "--silo-port", P(ports[0]), "--gateway-port", P(ports[1]), "--urls", Url, .. models]));
        Http = new HttpClient { BaseAddress = new Uri(Url), Timeout = TimeSpan.FromMinutes(2) };
        Client = new GatewayClient(Http);
        await ProcessWait.UntilAsync("front-end silo", async () => (await Http.GetAsync("/alive")).IsSuccessStatusCode, TimeSpan.FromSeconds(90), _silos);
        _silos.Add(BackgroundProcess.Moecluster(environment, [
            "silo", "--role", "expert", "--name", "expert-1", "--silo-port", P(ports[2]), "--gateway-port", "0",
            "--primary", $"127.0.0.1:{P(ports[0])}", .. models]));
        await ProcessWait.UntilAsync("one expert silo", async () => (await Client.HealthAsync()).Body?["expert_silos"]?.GetValue<int>() == 1, TimeSpan.FromSeconds(90), _silos);
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

/// <summary>
/// Back-pressure from the shards to the client, with real processes: a flood against a one-request shard queue gets
/// 429s with Retry-After (counted as busy in /stats, not as failed), never a 5xx; the expert silo stays within its
/// memory bound; and service is normal right after. See docs/RELIABILITY.md, "A flooded expert shard".
/// </summary>
[Collection(TimingSensitive.Name)]
public sealed class ShardBackPressureTests(TinyQueueClusterFixture cluster, ITestOutputHelper output) : IClassFixture<TinyQueueClusterFixture>
{
    private const int Width = 64;
    // 48 × 128 tokens fit the gateway's own bounds (MaxTokensInFlight 8192 by default): the shards' queues are what fills.
    private const int Flood = 48;
    private const int Tokens = 128;
    private const long ExpertMemoryBoundKiB = 1L << 20;

    [Fact]
    public async Task A_flood_against_a_tiny_shard_queue_gets_429s_with_Retry_After_no_5xx_bounded_memory_and_then_normal_service()
    {
        float[] row = [.. Enumerable.Range(0, Width).Select(i => (i % 7) * 0.125f)];
        float[] rows = [.. Enumerable.Range(0, Tokens * Width).Select(i => ((i * 37) % 11 - 5) * 0.1f)];

        // Loads the shards' weights first; not part of the flood.
        await cluster.Client.ForwardAsync("lat", null, row, 1, Width, "fp32");
        JsonNode before = (await cluster.Client.StatsAsync())["gateway"]!["requests"]!;
        File.WriteAllText($"/proc/{cluster.Expert.Id.ToString(CultureInfo.InvariantCulture)}/clear_refs", "5");

        var clock = Stopwatch.StartNew();
        var outcomes = new List<(int Status, TimeSpan? RetryAfter, string Message)>();
        for (int round = 0; round < 5 && !outcomes.Any(o => o.Status == 429); round++)
        {
            outcomes.AddRange(await Task.WhenAll(Enumerable.Range(0, Flood).Select(_ => Task.Run(async () =>
            {
                try
                {
                    await cluster.Client.ForwardAsync("lat", null, rows, Tokens, Width, "fp32");
                    return (200, (TimeSpan?)null, string.Empty);
                }
                catch (GatewayException e)
                {
                    return (e.StatusCode, e.RetryAfter, e.Message);
                }
            }))));
        }

        long peak = cluster.Expert.StatusKiB("VmHWM");
        output.WriteLine($"{outcomes.Count} requests of {Tokens} tokens in {clock.Elapsed.TotalSeconds:F1} s: "
            + string.Join(", ", outcomes.GroupBy(o => o.Status).Select(g => $"{g.Count()} × {g.Key}")) + $"; expert silo peak VmHWM {peak / 1024} MiB");

        Assert.All(outcomes, o => Assert.True(o.Status is 200 or 429, $"unexpected answer: {o.Status} {o.Message}"));
        var busy = outcomes.Where(o => o.Status == 429).ToList();
        Assert.NotEmpty(busy);
        Assert.All(busy, o =>
        {
            Assert.True(o.RetryAfter >= TimeSpan.FromSeconds(1), $"a 429 without a Retry-After of at least 1 s: {o.RetryAfter}");
            Assert.Contains("MoECluster:ShardBatching:MaxQueuedRequests", o.Message, StringComparison.Ordinal);
        });
        Assert.True(peak <= ExpertMemoryBoundKiB, $"expert silo peak RSS {peak / 1024} MiB is over its {ExpertMemoryBoundKiB >> 10} MiB bound");

        // Counted apart in /stats: busy, not failed (or rejected, or overloaded).
        JsonNode after = await WaitForStatsAsync(r => r["busy"]!.GetValue<long>() - before["busy"]!.GetValue<long>() >= busy.Count);
        Assert.Equal(busy.Count, after["busy"]!.GetValue<long>() - before["busy"]!.GetValue<long>());
        Assert.Equal(before["failed"]!.GetValue<long>(), after["failed"]!.GetValue<long>());
        Assert.Equal(before["rejected"]!.GetValue<long>(), after["rejected"]!.GetValue<long>());

        // Normal service right after: one at a time, every request answered.
        for (int i = 0; i < 5; i++)
        {
            var reply = await cluster.Client.ForwardAsync("lat", null, rows, Tokens, Width, "fp32");
            Assert.Equal(Tokens, reply.HiddenStates.Rows);
        }

        Assert.All(cluster.Silos, s => Assert.False(s.HasExited, s.Output));
    }

    private async Task<JsonNode> WaitForStatsAsync(Func<JsonNode, bool> done)
    {
        var clock = Stopwatch.StartNew();
        while (true)
        {
            JsonNode requests = (await cluster.Client.StatsAsync())["gateway"]!["requests"]!;
            if (done(requests) || clock.Elapsed > TimeSpan.FromSeconds(15))
            {
                return requests;
            }

            await Task.Delay(200);
        }
    }
}
