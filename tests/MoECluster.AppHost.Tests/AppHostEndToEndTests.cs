using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using MoECluster.AppHost.Orchestration;
using MoECluster.Gateway;
using MoECluster.Model.Layers;
using MoECluster.Testing;

namespace MoECluster.AppHost.Tests;

/// <summary>
/// The launcher as a user runs it (<c>dotnet MoECluster.AppHost.dll --preset tiny …</c>): real processes, real ports.
/// Every child is tracked three ways (the pids it prints, the launcher's children in /proc, and processes whose command
/// line or environment carries this test's unique models directory or marker), and killed at the end whatever happened.
/// </summary>
[Collection(TimingSensitive.Name)]
public sealed partial class AppHostEndToEndTests(Xunit.Abstractions.ITestOutputHelper log)
{
    private static string AppHostDll => Path.Combine(AppContext.BaseDirectory, "MoECluster.AppHost.dll");

    private static string P(int port) => port.ToString(CultureInfo.InvariantCulture);

    private sealed class Launch : IDisposable
    {
        public Launch(TempDirectory dir, params string[] extra)
        {
            int[] ports = FreePorts.Take(2);
            Url = $"http://127.0.0.1:{P(ports[0])}";
            ModelsDir = dir.File("models");
            Marker = $"apphost-test-{Guid.NewGuid():N}";

            // `env --default-signal=INT`: a terminal's Ctrl+C reaches a foreground process whose SIGINT is not ignored;
            // a test host started in the background may ignore it, and ignored signals are inherited.
            Process = BackgroundProcess.Start("env", [
                "--default-signal=INT", $"MOECLUSTER_TEST_MARKER={Marker}", "dotnet", AppHostDll,
                "--preset", "tiny", "--port", P(ports[0]), "--gateway-port", P(ports[1]),
                "--silo-port", P(FreeSiloPorts(3)), "--models-dir", ModelsDir, .. extra]);
        }

        public BackgroundProcess Process { get; }

        public string Url { get; }

        public string ModelsDir { get; }

        public string Marker { get; }

        /// <summary>Everything the launcher started that can be found now.</summary>
        public HashSet<int> Children()
        {
            var pids = new HashSet<int>(ProcessScan.ChildrenOf(Process.Id));
            pids.UnionWith(ProcessScan.Printed(Process.Output));
            pids.UnionWith(ProcessScan.Mentioning(Marker));
            pids.UnionWith(ProcessScan.Mentioning(ModelsDir));
            pids.Remove(Process.Id);
            return pids;
        }

        public async Task WaitReadyAsync()
        {
            bool ready = await Process.WaitForOutputAsync("ready in", TimeSpan.FromMinutes(3));
            Assert.True(ready, $"the launcher did not get ready:\n{Process.Output}");
        }

        /// <summary>No process left behind, even when the test failed.</summary>
        public void Dispose()
        {
            var left = Children();
            Process.Dispose();
            ProcessScan.KillAll(left.Concat(ProcessScan.Mentioning(Marker)).Concat(ProcessScan.Mentioning(ModelsDir)));
        }
    }

    [Fact]
    public async Task Starts_the_cluster_serves_forwards_and_stops_every_process_on_SIGINT()
    {
        using var dir = new TempDirectory("moecluster-apphost-");
        using var launch = new Launch(dir);
        await launch.WaitReadyAsync();
        string output = launch.Process.Output;
        var running = SummaryPids(output);
        Assert.Equal(["frontend", "expert-1", "expert-2"], running.Keys);
        Assert.All(running.Values, pid => Assert.True(BackgroundProcess.IsAlive(pid), output));
        Assert.Contains("  models     completed", output, StringComparison.Ordinal);
        Assert.Contains($"live routing page  {launch.Url}/", output, StringComparison.Ordinal);
        Assert.Contains($"Orleans dashboard  {launch.Url}/dashboard", output, StringComparison.Ordinal);
        Assert.Contains($"stats              {launch.Url}/stats", output, StringComparison.Ordinal);
        Assert.Contains($"dotnet run --project src/MoECluster.Cli -c Release -- load --url {launch.Url} --duration 30", output, StringComparison.Ordinal);
        Assert.Matches(@"\[expert-1\] ", output);

        using var http = new HttpClient { BaseAddress = new Uri(launch.Url), Timeout = TimeSpan.FromMinutes(1) };
        var client = new GatewayClient(http);
        var (healthy, health) = await client.HealthAsync();
        Assert.True(healthy, health?.ToJsonString());
        Assert.Equal(2, health!["expert_silos"]!.GetValue<int>());
        Assert.Equal(3, health["silos"]!.GetValue<int>());

        // Each expert silo answers /health itself on the port the launcher gave it.
        foreach (string expert in new[] { "expert-1", "expert-2" })
        {
            string url = Regex.Match(output, $@"  {expert} +running +pid \d+ +.*?(http://127\.0\.0\.1:\d+)").Groups[1].Value;
            var body = JsonNode.Parse(await http.GetStringAsync(new Uri(url + "/health")))!;
            Assert.Equal("ok", body["status"]!.GetValue<string>());
            Assert.Equal(expert, body["silo"]!.GetValue<string>());
            Assert.Equal("expert", body["role"]!.GetValue<string>());
        }

        // A forward through the cluster equals the in-process forward of the generated model.
        const int Tokens = 5;
        var random = new Random(7);
        float[] x = [.. Enumerable.Range(0, Tokens * 64).Select(_ => (float)(random.NextDouble() * 2 - 1))];
        var response = await client.ForwardAsync("latent", layer: null, x, Tokens, 64, "fp32");
        using var local = MoeModel.Open(Path.Combine(launch.ModelsDir, "tiny-8x1"));
        double error = Metrics.RelativeError(response.HiddenStates.Decode(), local.ForwardStack(x, Tokens));
        Assert.True(error <= 1e-4, $"cluster vs in-process: {error:E2}");

        var children = launch.Children();
        Assert.True(children.Count >= 3, ProcessScan.Describe(children));
        ManagedProcess.Signal(launch.Process.Id, "INT");
        Assert.True(launch.Process.WaitForExit(TimeSpan.FromSeconds(60)), "the launcher did not exit after SIGINT:\n" + launch.Process.Output);
        output = launch.Process.Output;
        Assert.True(launch.Process.ExitCode == 0, output);
        Assert.Contains("SIGINT received", output, StringComparison.Ordinal);
        int experts = output.IndexOf("stopping expert-1, expert-2", StringComparison.Ordinal);
        int frontend = output.IndexOf("stopping frontend", StringComparison.Ordinal);
        Assert.True(experts >= 0 && frontend > experts, output);
        Assert.Contains("stopped every process", output, StringComparison.Ordinal);
        Assert.DoesNotContain("did not stop within", output, StringComparison.Ordinal);

        var left = ProcessScan.WaitAllGone(children.Concat(ProcessScan.Mentioning(launch.Marker)), TimeSpan.FromSeconds(5));
        Assert.True(left.Count == 0, "left behind: " + ProcessScan.Describe(left));
    }

    [Fact]
    public async Task When_the_launcher_is_killed_every_child_stops_by_itself_redis_included()
    {
        Assert.True(ExecutableLocator.Find("redis-server") is not null,
            "redis-server is not installed: `apt-get install -y redis-server` (.ci/run installs it); this test checks the watchdog that stops it");
        using var dir = new TempDirectory("moecluster-apphost-");
        using var launch = new Launch(dir, "--redis");
        await launch.WaitReadyAsync();
        string output = launch.Process.Output;
        var running = SummaryPids(output);
        Assert.Equal(["redis", "frontend", "expert-1", "expert-2"], running.Keys);
        int watchdog = int.Parse(Regex.Match(output, @"  redis +running +pid \d+ \(watchdog (\d+)\)").Groups[1].Value, CultureInfo.InvariantCulture);

        using (var http = new HttpClient { BaseAddress = new Uri(launch.Url) })
        {
            var (healthy, health) = await new GatewayClient(http).HealthAsync();
            Assert.True(healthy && health!["expert_silos"]!.GetValue<int>() == 2, health?.ToJsonString());
        }

        var children = launch.Children();
        Assert.Superset(running.Values.Append(watchdog).ToHashSet(), children);
        Assert.All(children.Where(p => running.ContainsValue(p) || p == watchdog), p => Assert.True(BackgroundProcess.IsAlive(p)));

        using (var kill = Process.Start("kill", ["-KILL", P(launch.Process.Id)]))
        {
            kill.WaitForExit();
        }

        var clock = Stopwatch.StartNew();
        Assert.True(launch.Process.WaitForExit(TimeSpan.FromSeconds(10)));
        var left = ProcessScan.WaitAllGone(children.Concat(ProcessScan.Mentioning(launch.Marker)), TimeSpan.FromSeconds(15));
        Assert.True(left.Count == 0, $"still running {clock.Elapsed.TotalSeconds:F1} s after kill -9: " + ProcessScan.Describe(left));
        Assert.Empty(ProcessScan.Mentioning(launch.Marker));
    }

    [Fact]
    public async Task A_front_end_killed_with_sigkill_is_restarted_with_its_expert_silos_and_forwards_succeed_again_within_15_s()
    {
        using var dir = new TempDirectory("moecluster-apphost-");
        using var launch = new Launch(dir, "--backend", "managed");
        await launch.WaitReadyAsync();
        var running = SummaryPids(launch.Process.Output);
        using var http = new HttpClient { BaseAddress = new Uri(launch.Url), Timeout = TimeSpan.FromSeconds(10) };
        var client = new GatewayClient(http);
        using var local = MoeModel.Open(Path.Combine(launch.ModelsDir, "tiny-8x1"));
        var random = new Random(11);
        float[] x = [.. Enumerable.Range(0, 5 * 64).Select(_ => (float)(random.NextDouble() * 2 - 1))];
        float[] expected = local.ForwardStack(x, 5);

        var clock = Stopwatch.StartNew();
        using (var kill = Process.Start("kill", ["-KILL", P(running["frontend"])]))
        {
            kill.WaitForExit();
        }

        double? servedAt = null;
        string last = "";
        while (clock.Elapsed < TimeSpan.FromSeconds(40))
        {
            try
            {
                var response = await client.ForwardAsync("latent", layer: null, x, 5, 64, "fp32");
                double error = Metrics.RelativeError(response.HiddenStates.Decode(), expected);
                Assert.True(error <= 1e-4, $"cluster vs in-process after the restart: {error:E2}");
                servedAt = clock.Elapsed.TotalSeconds;
                break;
            }
            catch (Exception e) when (e is HttpRequestException or TaskCanceledException or GatewayException)
            {
                last = e.Message;
            }

            await Task.Delay(200);
        }

        string output = launch.Process.Output;
        log.WriteLine(string.Create(CultureInfo.InvariantCulture, $"first correct forward {servedAt?.ToString("F2", CultureInfo.InvariantCulture) ?? "never"} s after kill -9 of the front-end"));
        Assert.True(servedAt is not null, $"no forward succeeded within 40 s of the kill (last: {last}):\n{output}");
        Assert.True(servedAt <= 15, $"forwards succeeded again only {servedAt:F2} s after the kill:\n{output}");
        Assert.Matches(@"frontend \(pid \d+\) exited with code 137 after [\d.]+ s; restarting it in 0\.5 s \(restart 1, at most 5 within 120 s\)", output);
        Assert.Contains("expert-1, expert-2 must restart with frontend: restarting them", output, StringComparison.Ordinal);
        var restarted = RestartedPids().Matches(output).ToDictionary(m => m.Groups[1].Value, m => int.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture));
        Assert.Equal(["expert-1", "expert-2", "frontend"], restarted.Keys.Order());
        Assert.All(restarted, r => Assert.NotEqual(running[r.Key], r.Value));
        Assert.All(restarted.Values, pid => Assert.True(BackgroundProcess.IsAlive(pid), output));

        // Ctrl+C still stops everything, the restarted processes included.
        var children = launch.Children();
        ManagedProcess.Signal(launch.Process.Id, "INT");
        Assert.True(launch.Process.WaitForExit(TimeSpan.FromSeconds(60)), "the launcher did not exit after SIGINT:\n" + launch.Process.Output);
        Assert.Equal(0, launch.Process.ExitCode);
        var left = ProcessScan.WaitAllGone(children.Concat(restarted.Values).Concat(ProcessScan.Mentioning(launch.Marker)), TimeSpan.FromSeconds(5));
        Assert.True(left.Count == 0, "left behind: " + ProcessScan.Describe(left));
    }

    [GeneratedRegex(@"restarted ([a-z0-9-]+):\n  [a-z0-9-]+ +running +pid (\d+)")]
    private static partial Regex RestartedPids();

    /// <summary>
    /// The first of <paramref name="count"/> consecutive ports free now, below Linux's ephemeral range (32768 and up),
    /// so that no outgoing connection takes one of them before the silos bind them.
    /// </summary>
    private static int FreeSiloPorts(int count)
    {
        for (int attempt = 0; attempt < 100; attempt++)
        {
            int first = Random.Shared.Next(20000, 32000);
            if (Enumerable.Range(first, count).All(MoECluster.AppHost.Model.PortAllocator.IsFree))
            {
                return first;
            }
        }

        throw new InvalidOperationException("no free range of silo ports in 20000..32000");
    }

    /// <summary>Resource instance → pid, from the summary lines of running resources, in order.</summary>
    private static Dictionary<string, int> SummaryPids(string output) =>
        SummaryLine().Matches(output).ToDictionary(m => m.Groups[1].Value, m => int.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture));

    [GeneratedRegex(@"^  ([a-z0-9-]+) +running +pid (\d+)", RegexOptions.Multiline)]
    private static partial Regex SummaryLine();
}
