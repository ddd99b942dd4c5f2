using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;
using MoECluster.Gateway;
using MoECluster.Model.Layers;
using MoECluster.Model.Numerics;
using MoECluster.Model.Presets;
using MoECluster.Testing;
using Xunit.Abstractions;

namespace MoECluster.EndToEnd.Tests;

/// <summary>
/// Restart and hang recovery: a front-end killed with -9 and started again (by <c>moecluster run</c>'s supervision, or
/// by hand as systemd/Kubernetes would in a Redis cluster), an expert silo stopped with SIGSTOP under load, and the
/// front-end's <c>/health</c> while fewer expert silos serve than configured. Answers are checked against the
/// in-process forward on the silos' own backend.
/// </summary>
[Collection(TimingSensitive.Name)]
public sealed partial class RecoveryTests(ITestOutputHelper output)
{
    private static string P(int port) => port.ToString(CultureInfo.InvariantCulture);

    [Fact]
    public async Task Moecluster_run_restarts_a_front_end_killed_with_sigkill_and_forwards_succeed_again_within_15_s()
    {
        using var dir = new TempDirectory("moecluster-fe-restart-");
        int[] ports = FreePorts.Take(2);
        string url = $"http://127.0.0.1:{P(ports[0])}";
        using var run = BackgroundProcess.Moecluster(["run", "--preset", "tiny", "--wire", "fp32", "--backend", "managed", "--tokens", "8",
            "--models-dir", dir.File("models"), "--urls", url, "--gateway-port", P(ports[1]), "--silo-port", P(FreeSiloPorts(3))]);
        try
        {
            Assert.True(await run.WaitForOutputAsync("serving at", TimeSpan.FromMinutes(3)), run.Output);
            var managed = MoECluster.Cluster.Hosting.ComputeBackends.Create("managed", out _);
            using var reference = MoeModel.Open(Path.Combine(dir.File("models"), "tiny-8x1"), managed);
            using var http = new HttpClient { BaseAddress = new Uri(url), Timeout = TimeSpan.FromSeconds(10) };
            var client = new GatewayClient(http);
            Assert.Null(await ForwardCheckedAsync(client, reference, seed: 1));

            int frontend = Pids(run.Output)[0];
            var clock = Stopwatch.StartNew();
            Kill(frontend, "KILL");
            double? servedAt = null;
            string? last = null;
            for (int attempt = 2; clock.Elapsed < TimeSpan.FromSeconds(40); attempt++)
            {
                last = await ForwardCheckedAsync(client, reference, attempt);
                if (last is null)
                {
                    servedAt = clock.Elapsed.TotalSeconds;
                    break;
                }

                await Task.Delay(200);
            }

            output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"first correct forward {servedAt?.ToString("F2", CultureInfo.InvariantCulture) ?? "never"} s after kill -9 of the front-end (last error: {last})"));
            output.WriteLine(Launcher(run.Output));
            Assert.True(servedAt is not null, $"no forward succeeded within 40 s of the kill (last: {last}):\n{Launcher(run.Output)}");
            Assert.True(servedAt <= 15, $"forwards succeeded again only {servedAt:F2} s after the kill");
            Assert.Matches(@"frontend \(pid \d+\) exited with code 137 after [\d.]+ s; restarting it in 0\.5 s \(restart 1, at most 5 within 120 s\)", run.Output);
            Assert.Contains("restarted frontend: pid ", run.Output, StringComparison.Ordinal);

            // A few more, all correct, and /health counts both expert silos again.
            for (int i = 0; i < 5; i++)
            {
                Assert.Null(await ForwardCheckedAsync(client, reference, 100 + i));
            }

            await ProcessWait.UntilAsync("both expert silos back", async () => (await client.HealthAsync()).Body?["expert_silos"]?.GetValue<int>() == 2, TimeSpan.FromSeconds(30), run);
        }
        finally
        {
            Assert.True(run.Stop(TimeSpan.FromSeconds(60)), "moecluster run did not stop on SIGTERM");
        }
    }

    [Fact]
    public async Task In_a_Redis_cluster_a_front_end_killed_with_sigkill_and_started_again_serves_within_15_s_with_the_same_expert_silos()
    {
        Assert.True(File.Exists("/usr/bin/redis-server"), "redis-server is missing: apt-get install redis-server (.ci/run does)");
        using var dir = new TempDirectory("moecluster-redis-restart-");
        string model = dir.File("lat");
        SyntheticCheckpoint.Write(model, ModelPresets.Get("tiny").Build(experts: 16), 17);
        var managed = MoECluster.Cluster.Hosting.ComputeBackends.Create("managed", out _);
        using var reference = MoeModel.Open(model, managed);
        int[] ports = FreePorts.Take(6);
        string url = $"http://127.0.0.1:{P(ports[5])}";
        var environment = new Dictionary<string, string>
        {
            // As deploy/ configures the silos: membership in Redis, so it outlives any silo.
            ["Orleans__Clustering__ProviderType"] = "Redis",
            ["Orleans__Clustering__ServiceKey"] = "redis",
            ["ConnectionStrings__redis"] = $"127.0.0.1:{P(ports[4])}",
            ["Orleans__ClusterId"] = $"restart-{Guid.NewGuid():N}",
        };
        string[] common = ["--model", $"lat={model}", "--shards", "4", "--wire", "fp32", "--backend", "managed"];
        string[] frontendArgs = ["silo", "--role", "frontend", "--name", "frontend", "--silo-port", P(ports[0]), "--gateway-port", P(ports[3]), "--urls", url, .. common];
        var processes = new List<BackgroundProcess>
        {
            BackgroundProcess.Start("redis-server", ["--port", P(ports[4]), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]),
            BackgroundProcess.Moecluster(environment, frontendArgs),
        };
        for (int i = 1; i <= 2; i++)
        {
            processes.Add(BackgroundProcess.Moecluster(environment, ["silo", "--role", "expert", "--name", $"expert-{i}", "--silo-port", P(ports[i]), "--gateway-port", "0", .. common]));
        }

        try
        {
            using var http = new HttpClient { BaseAddress = new Uri(url), Timeout = TimeSpan.FromSeconds(10) };
            var client = new GatewayClient(http);
            await ProcessWait.UntilAsync("two expert silos", async () => (await client.HealthAsync()).Body?["expert_silos"]?.GetValue<int>() == 2, TimeSpan.FromSeconds(120), processes);
            Assert.Null(await ForwardCheckedAsync(client, reference, seed: 1, model: "lat"));

            var clock = Stopwatch.StartNew();
            Kill(processes[1].Id, "KILL");
            Assert.True(processes[1].WaitForExit(TimeSpan.FromSeconds(10)));

            // Started again with the same command and environment, as systemd's Restart=always (RestartSec=1s) would.
            await Task.Delay(TimeSpan.FromSeconds(1));
            processes[1].Dispose();
            processes[1] = BackgroundProcess.Moecluster(environment, frontendArgs);
            double? servedAt = null;
            string? last = null;
            for (int attempt = 2; clock.Elapsed < TimeSpan.FromSeconds(40); attempt++)
            {
                last = await ForwardCheckedAsync(client, reference, attempt, model: "lat");
                if (last is null)
                {
                    servedAt = clock.Elapsed.TotalSeconds;
                    break;
                }

                await Task.Delay(200);
            }

            output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"first correct forward {servedAt?.ToString("F2", CultureInfo.InvariantCulture) ?? "never"} s after kill -9 of the front-end (started again 1 s after it; last error: {last})"));
            Assert.True(servedAt is not null, $"no forward succeeded within 40 s of the kill (last: {last}):\n{processes[1].Output}");
            Assert.True(servedAt <= 15, $"forwards succeeded again only {servedAt:F2} s after the kill");

            // The expert silos were never restarted: the same processes serve, and the cluster counts both.
            Assert.False(processes[2].HasExited || processes[3].HasExited, "an expert silo exited:\n" + processes[2].Output + processes[3].Output);
            await ProcessWait.UntilAsync("both expert silos in the new front-end's view", async () => (await client.HealthAsync()).Body?["expert_silos"]?.GetValue<int>() == 2, TimeSpan.FromSeconds(30), processes);
            for (int i = 0; i < 5; i++)
            {
                Assert.Null(await ForwardCheckedAsync(client, reference, 100 + i, model: "lat"));
            }
        }
        finally
        {
            await Task.WhenAll(processes.Skip(1).Select(p => Task.Run(() => p.Stop(TimeSpan.FromSeconds(10)))));
            processes[0].Stop(TimeSpan.FromSeconds(5));
            processes.ForEach(p => p.Dispose());
        }
    }

    [Fact]
    public async Task Health_says_degraded_with_HTTP_200_while_fewer_expert_silos_serve_than_expected()
    {
        using var dir = new TempDirectory("moecluster-degraded-");
        string model = dir.File("lat");
        SyntheticCheckpoint.Write(model, ModelPresets.Get("tiny").Build(experts: 8), 5);
        int[] ports = FreePorts.Take(5);
        string url = $"http://127.0.0.1:{P(ports[4])}";
        var expected = new Dictionary<string, string> { ["MoECluster__ExpectedExpertSilos"] = "2" };
        string[] common = ["--model", $"lat={model}", "--shards", "2", "--backend", "managed"];
        var silos = new List<BackgroundProcess>
        {
            BackgroundProcess.Moecluster(expected, ["silo", "--role", "frontend", "--name", "frontend", "--silo-port", P(ports[0]), "--gateway-port", P(ports[3]), "--urls", url, .. common]),
        };
        BackgroundProcess Expert(int i) => BackgroundProcess.Moecluster(["silo", "--role", "expert", "--name", $"expert-{i}", "--silo-port", P(ports[i]), "--gateway-port", "0",
            "--primary", $"127.0.0.1:{P(ports[0])}", .. common]);
        try
        {
            using var http = new HttpClient { BaseAddress = new Uri(url), Timeout = TimeSpan.FromSeconds(10) };
            var client = new GatewayClient(http);
            await ProcessWait.UntilAsync("front-end", async () => (await http.GetAsync("/alive")).IsSuccessStatusCode, TimeSpan.FromSeconds(90), silos);
            var (healthy, body) = await client.HealthAsync();
            Assert.False(healthy, body?.ToJsonString());
            Assert.Equal("waiting for expert silos", body!["status"]!.GetValue<string>());

            silos.Add(Expert(1));
            await ProcessWait.UntilAsync("one expert silo", async () => (await client.HealthAsync()).Body?["expert_silos"]?.GetValue<int>() == 1, TimeSpan.FromSeconds(90), silos);
            (healthy, body) = await client.HealthAsync();
            output.WriteLine(body!.ToJsonString());
            Assert.True(healthy, "degraded must still answer 200: " + body.ToJsonString());
            Assert.Equal("degraded: 1 of 2 expert silos are active", body["status"]!.GetValue<string>());
            Assert.Equal(2, body["expected_expert_silos"]!.GetValue<int>());
            Assert.Equal("Degraded", body["checks"]!["expert-silos"]!["status"]!.GetValue<string>());

            silos.Add(Expert(2));
            await ProcessWait.UntilAsync("two expert silos", async () => (await client.HealthAsync()).Body?["expert_silos"]?.GetValue<int>() == 2, TimeSpan.FromSeconds(90), silos);
            (healthy, body) = await client.HealthAsync();
            Assert.True(healthy);
            Assert.Equal("ok", body!["status"]!.GetValue<string>());

            // And degraded again as soon as one is gone.
            Kill(silos[2].Id, "KILL");
            await ProcessWait.UntilAsync("degraded after a kill", async () => (await client.HealthAsync()).Body?["status"]?.GetValue<string>() == "degraded: 1 of 2 expert silos are active",
                TimeSpan.FromSeconds(30), silos[0], silos[1]);
        }
        finally
        {
            await Task.WhenAll(silos.Select(s => Task.Run(() => s.Stop(TimeSpan.FromSeconds(10)))));
            silos.ForEach(s => s.Dispose());
        }
    }

    /// <summary>
    /// SIGSTOP of one of two expert silos for 30 s under load (as the outside test did): every request answered
    /// correctly, none slower than 5 s (routers hedge overdue shard calls to the shard's alternate on the other silo),
    /// and after SIGCONT the silo — told it was declared dead, it exits and <c>moecluster run</c> restarts it — holds
    /// shards again within 30 s.
    /// </summary>
    [Fact]
    public async Task An_expert_silo_stopped_for_30_s_under_load_fails_no_request_none_slower_than_5_s_and_serves_again_after_SIGCONT()
    {
        using var dir = new TempDirectory("moecluster-hang-");
        int[] ports = FreePorts.Take(2);
        string url = $"http://127.0.0.1:{P(ports[0])}";
        using var run = BackgroundProcess.Moecluster(["run", "--preset", "tiny", "--experts", "24", "--shards", "6", "--wire", "fp32", "--backend", "managed", "--tokens", "8",
            "--models-dir", dir.File("models"), "--urls", url, "--gateway-port", P(ports[1]), "--silo-port", P(FreeSiloPorts(3)), "--verbose"]);
        try
        {
            Assert.True(await run.WaitForOutputAsync("serving at", TimeSpan.FromMinutes(3)), run.Output);
            var managed = MoECluster.Cluster.Hosting.ComputeBackends.Create("managed", out _);
            using var reference = MoeModel.Open(Path.Combine(dir.File("models"), "tiny-24x1"), managed);
            using var http = new HttpClient { BaseAddress = new Uri(url), Timeout = TimeSpan.FromSeconds(60) };
            var client = new GatewayClient(http);
            int layer = (await client.ModelsAsync()).Single(m => m.Id == "latent").MoeLayers[0];
            int d = reference.Config.HiddenSize;
            await client.ForwardAsync("latent", layer, [.. Enumerable.Range(0, 64 * d).Select(i => MathF.Sin(i * 0.1f))], 64, d, "fp32");
            Assert.NotEmpty(await CheckedLoad.ShardsOfAsync(client, "expert-2"));
            int victim = Pids(run.Output)[2];

            var outcomes = new ConcurrentBag<Outcome>();
            var clock = Stopwatch.StartNew();
            using var stop = new CancellationTokenSource();
            var workers = CheckedLoad.Start(client, reference, "latent", layer, "hang-load", clock, outcomes, stop.Token);
            await Task.Delay(TimeSpan.FromSeconds(4));
            double stoppedAt = clock.Elapsed.TotalSeconds;
            Kill(victim, "STOP");
            // When membership declares the stopped silo dead: the front-end's /health counts the active silos it sees.
            double? declaredDeadAt = null;
            while (clock.Elapsed.TotalSeconds < stoppedAt + 30)
            {
                if (declaredDeadAt is null && await ActiveSilosAsync(client) == 2)
                {
                    declaredDeadAt = clock.Elapsed.TotalSeconds;
                }

                await Task.Delay(200);
            }

            double continuedAt = clock.Elapsed.TotalSeconds;
            Kill(victim, "CONT");
            double? servesAgainAt = null;
            while (clock.Elapsed.TotalSeconds < continuedAt + 40)
            {
                if ((await CheckedLoad.ShardsOfAsync(client, "expert-2")).Count > 0)
                {
                    servesAgainAt = clock.Elapsed.TotalSeconds;
                    break;
                }

                await Task.Delay(200);
            }

            // A few seconds more of load with expert-2 serving again.
            await Task.Delay(TimeSpan.FromSeconds(3));
            await stop.CancelAsync();
            await Task.WhenAll(workers);

            var all = outcomes.ToList();
            double worst = all.Max(o => o.EndS - o.StartS);
            var duringHang = all.Where(o => o.EndS > stoppedAt && o.StartS < continuedAt).ToList();
            output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"requests: {all.Count} sent, {all.Count(o => o.Ok)} answered correctly, {all.Count(o => !o.Ok)} failed; {duringHang.Count} during the 30 s stop " +
                $"(worst {duringHang.DefaultIfEmpty(new Outcome(0, 0, true, null)).Max(o => o.EndS - o.StartS) * 1000:F0} ms); worst latency overall {worst * 1000:F0} ms; " +
                $"expert-2 declared dead {(declaredDeadAt - stoppedAt)?.ToString("F2", CultureInfo.InvariantCulture) ?? "never (within 30 s)"} s after SIGSTOP; " +
                $"expert-2 holds shards again {(servesAgainAt - continuedAt)?.ToString("F2", CultureInfo.InvariantCulture) ?? "never"} s after SIGCONT"));
            output.WriteLine("slowest: " + string.Join("; ", all.OrderByDescending(o => o.EndS - o.StartS).Take(8).Select(o => string.Create(CultureInfo.InvariantCulture, $"{(o.EndS - o.StartS) * 1000:F0} ms from {o.StartS - stoppedAt:F2} s after SIGSTOP"))));
            output.WriteLine(Launcher(run.Output));
            File.WriteAllText(Path.Combine(Path.GetTempPath(), "moecluster-hang-test.log"), run.Output);

            Assert.True(all.All(o => o.Ok), "failed requests: " + string.Join("; ", all.Where(o => !o.Ok).Take(5).Select(o => $"at {o.StartS:F2} s: {o.Error}")));
            Assert.True(duringHang.Count > 100, $"only {duringHang.Count} requests during the stop");
            Assert.True(worst <= 5, $"a request took {worst:F2} s");
            Assert.True(servesAgainAt is not null && servesAgainAt - continuedAt <= 30, "expert-2 did not hold shards again within 30 s of SIGCONT");
        }
        finally
        {
            Assert.True(run.Stop(TimeSpan.FromSeconds(60)), "moecluster run did not stop on SIGTERM");
        }
    }

    /// <summary>One 8-token forward of the first MoE layer, checked against the in-process forward: null when correct, else what went wrong.</summary>
    private static async Task<string?> ForwardCheckedAsync(GatewayClient client, MoeModel reference, int seed, string model = "latent")
    {
        int d = reference.Config.HiddenSize, layer = reference.Config.MoeLayers[0];
        var rng = DeterministicRandom.For((ulong)seed, "restart");
        float[] x = [.. Enumerable.Range(0, 8 * d).Select(_ => (float)rng.NextGaussian())];
        try
        {
            var y = (await client.ForwardAsync(model, layer, x, 8, d, "fp32")).HiddenStates.Decode();
            double err = RelativeError.Of(y, reference.ForwardLayer(layer, x, 8));
            return err <= 1e-5 ? null : $"relative error {err:E2}";
        }
        catch (Exception e) when (e is HttpRequestException or TaskCanceledException or GatewayException)
        {
            return e.Message;
        }
    }


    private static async Task<int?> ActiveSilosAsync(GatewayClient client)
    {
        try
        {
            return (await client.HealthAsync()).Body?["active_silos"]?.GetValue<int>();
        }
        catch (Exception e) when (e is HttpRequestException or TaskCanceledException)
        {
            return null;
        }
    }

    private static void Kill(int pid, string signal)
    {
        using var kill = Process.Start("kill", [$"-{signal}", P(pid)]);
        kill.WaitForExit();
    }

    /// <summary>The silo pids of <c>moecluster run</c>'s "cluster up" line: front-end, expert-1, expert-2, ...</summary>
    private static int[] Pids(string runOutput)
    {
        var match = PidsLine().Match(runOutput);
        Assert.True(match.Success, $"no 'pids' line in:\n{runOutput}");
        return [.. match.Groups[1].Value.Split(", ").Select(p => int.Parse(p, CultureInfo.InvariantCulture))];
    }

    /// <summary>The launcher's own lines (not the silos' prefixed ones).</summary>
    private static string Launcher(string runOutput) => string.Join('\n', runOutput.Split('\n').Where(l => !l.StartsWith('[')));

    /// <summary>The first of <paramref name="count"/> consecutive free ports below Linux's ephemeral range.</summary>
    private static int FreeSiloPorts(int count)
    {
        for (int attempt = 0; attempt < 100; attempt++)
        {
            int first = Random.Shared.Next(20000, 32000);
            if (Enumerable.Range(first, count).All(IsFree))
            {
                return first;
            }
        }

        throw new InvalidOperationException("no free range of silo ports in 20000..32000");
    }

    private static bool IsFree(int port)
    {
        try
        {
            var listener = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, port);
            listener.Start();
            listener.Stop();
            return true;
        }
        catch (System.Net.Sockets.SocketException)
        {
            return false;
        }
    }

    [GeneratedRegex(@"\(pids ([\d, ]+)\)")]
    private static partial Regex PidsLine();
}
