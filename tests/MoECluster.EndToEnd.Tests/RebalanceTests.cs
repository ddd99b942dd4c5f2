using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Net.Http.Json;
using System.Text.Json.Nodes;
using MoECluster.Cluster.Contracts;
using MoECluster.Gateway;
using MoECluster.Model.Dispatch;
using MoECluster.Model.Layers;
using MoECluster.Model.Numerics;
using MoECluster.Testing;
using Xunit.Abstractions;

namespace MoECluster.EndToEnd.Tests;

/// <summary>
/// Hot-expert replicas applied live (POST /v1/admin/rebalance) on a real cluster — front-end and two expert silos as
/// processes over TCP, routing skewed like a trained model's — while clients keep sending requests whose answers are
/// checked against the in-process forward.
/// </summary>
[Collection(TimingSensitive.Name)]
public sealed class RebalanceTests(ITestOutputHelper output)
{
    private static string P(int port) => port.ToString(CultureInfo.InvariantCulture);

    [Fact]
    public async Task A_replan_under_load_serves_hot_experts_from_replicas_and_no_request_fails_or_changes_its_answer()
    {
        using var dir = new TempDirectory("moecluster-rebalance-");
        int[] ports = FreePorts.Take(2);
        string url = $"http://127.0.0.1:{P(ports[0])}";
        using var run = BackgroundProcess.Moecluster(["run", "--preset", "tiny", "--experts", "16", "--gate-skew", "zipf:1.5", "--wire", "fp32", "--backend", "managed",
            "--tokens", "8", "--models-dir", dir.File("models"), "--urls", url, "--gateway-port", P(ports[1]), "--silo-port", P(FreePorts.Consecutive(3))]);
        try
        {
            Assert.True(await run.WaitForOutputAsync("serving at", TimeSpan.FromMinutes(3)), run.Output);
            using var reference = MoeModel.Open(Path.Combine(dir.File("models"), "tiny-16x1-zipf1.5"), MoECluster.Cluster.Hosting.ComputeBackends.Create("managed", out _));
            int layer = reference.FirstMoeLayer;
            using var http = new HttpClient { BaseAddress = new Uri(url), Timeout = TimeSpan.FromSeconds(30) };
            var client = new GatewayClient(http);

            // Four clients, 1 to 8 tokens a request, fp32 wire, every answer within 1e-6 of the in-process forward.
            var clock = Stopwatch.StartNew();
            var outcomes = new ConcurrentBag<Outcome>();
            using var stop = new CancellationTokenSource();
            var load = Enumerable.Range(0, 4).Select(w => Task.Run(async () =>
            {
                var rng = DeterministicRandom.For((ulong)w, "rebalance");
                int d = reference.Config.HiddenSize;
                while (!stop.IsCancellationRequested)
                {
                    int tokens = 1 + (int)(rng.NextUInt64() % 8);
                    var x = new float[tokens * d];
                    for (int i = 0; i < x.Length; i++)
                    {
                        x[i] = (float)rng.NextGaussian();
                    }

                    double start = clock.Elapsed.TotalSeconds;
                    try
                    {
                        var y = (await client.ForwardAsync("latent", layer, x, tokens, d, "fp32")).HiddenStates.Decode();
                        double err = RelativeError.Of(y, reference.ForwardLayer(layer, x, tokens));
                        outcomes.Add(new Outcome(start, clock.Elapsed.TotalSeconds, err <= 1e-6, err <= 1e-6 ? null : $"relative error {err:E2}"));
                    }
                    catch (Exception e) when (e is HttpRequestException or TaskCanceledException or GatewayException)
                    {
                        outcomes.Add(new Outcome(start, clock.Elapsed.TotalSeconds, false, e.Message));
                    }
                }
            })).ToArray();

            // The window fills with skewed routing, then the re-plan, under load.
            await Task.Delay(TimeSpan.FromSeconds(4));
            double replanAt = clock.Elapsed.TotalSeconds;
            using var response = await http.PostAsJsonAsync("/v1/admin/rebalance?model=latent", new { redundant_experts = 2 });
            string body = await response.Content.ReadAsStringAsync();
            double switchedAt = clock.Elapsed.TotalSeconds;
            output.WriteLine($"rebalance ({replanAt:F1} s → {switchedAt:F1} s): {body}");
            Assert.True(response.IsSuccessStatusCode, body);
            var report = JsonNode.Parse(body)!;
            Assert.True(report["changed"]!.GetValue<bool>(), body);
            Assert.Equal(1, report["epoch"]!.GetValue<long>());
            Assert.Equal(2, report["expert_silos"]!.GetValue<int>());
            var change = report["layers"]!.AsArray().Single(l => l!["layer"]!.GetValue<int>() == layer)!;
            Assert.True(change["imbalance_after"]!.GetValue<double>() < change["imbalance_before"]!.GetValue<double>(), body);
            Assert.InRange(change["extra_replicas"]!.GetValue<int>(), 1, 2);
            Assert.True(report["silos_applied"]!.GetValue<int>() >= 3, body);

            await Task.Delay(TimeSpan.FromSeconds(4));
            await stop.CancelAsync();
            await Task.WhenAll(load);

            // Nothing failed, every answer right, before, during and after the switch.
            var all = outcomes.ToList();
            var wrong = all.Where(o => !o.Ok).ToList();
            output.WriteLine($"{all.Count} requests, {all.Count(o => o.StartS > switchedAt)} after the switch; {wrong.Count} failed or wrong: {string.Join("; ", wrong.Take(5).Select(o => o.Error))}");
            Assert.Empty(wrong);
            Assert.True(all.Count(o => o.StartS > switchedAt) >= 10, "too few requests after the switch to show anything");

            // The placement is the plan, and both replicas of a replicated expert computed rows after the switch.
            var placement = JsonNode.Parse(await http.GetStringAsync("/v1/admin/placement?model=latent"))!;
            Assert.Equal(1, placement["epoch"]!.GetValue<long>());
            var shards = placement["layers"]!.AsArray().Single(l => l!["layer"]!.GetValue<int>() == layer)!["shards"]!.AsArray();
            var table = new LayerPlacement(layer, [.. shards.Select(s => s!.GetValue<string>())]).ToTable("latent", reference.Config.NRoutedExperts, 1);
            Assert.True(table.HasReplicas);
            var stats = await client.StatsAsync();
            var passes = stats["shard_batches"]!.AsArray().GroupBy(b => b!["shard"]!.GetValue<string>()).ToDictionary(g => g.Key, g => g.Sum(b => b!["rows"]!.GetValue<long>()));
            foreach (int e in Enumerable.Range(0, table.Experts).Where(e => table.ShardsOf(e).Length > 1))
            {
                foreach (int s in table.ShardsOf(e))
                {
                    Assert.True(passes.GetValueOrDefault(table.Shards[s].Key) > 0, $"replica shard {table.Shards[s].Key} of expert {e} computed no rows: {string.Join(", ", passes.Keys)}");
                }
            }

            Assert.Contains(stats["placement"]!.AsArray(), p => p!["model"]!.GetValue<string>() == "latent" && p["epoch"]!.GetValue<long>() == 1);

            // Shards that left the plan drain and are retired: no silo holds one a while after the switch.
            var current = table.Shards.Select(s => s.Key).ToHashSet();
            var retired = new ExpertRoutingTable("latent", layer, table.Experts, 4).Shards.Select(s => s.Key).Where(k => !current.Contains(k)).ToList();
            Assert.NotEmpty(retired);
            await ProcessWait.UntilAsync("drained shards retired", async () => !(await CheckedLoad.ShardsOfAsync(client, null)).Overlaps(retired), TimeSpan.FromSeconds(30), run);
        }
        finally
        {
            Assert.True(run.Stop(TimeSpan.FromSeconds(60)), "moecluster run did not stop on SIGTERM");
        }
    }
}
