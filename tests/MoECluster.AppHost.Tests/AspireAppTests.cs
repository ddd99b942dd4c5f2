using System.Diagnostics;
using System.Globalization;
using Aspire.Hosting;
using Aspire.Hosting.ApplicationModel;
using Aspire.Hosting.Testing;
using Microsoft.Extensions.DependencyInjection;
using MoECluster.Gateway;
using MoECluster.Model.Layers;
using MoECluster.Testing;

namespace MoECluster.AppHost.Tests;

/// <summary>
/// The AppHost on the real Aspire: the orchestrator (DCP) starts every resource, the silos become healthy, the warm-up
/// finishes, a forward through the gateway equals the in-process forward; and <c>kill -9</c> of the AppHost leaves no
/// process behind.
/// </summary>
[Collection(TimingSensitive.Name)]
public sealed class AspireAppTests(Xunit.Abstractions.ITestOutputHelper log)
{
    private static string P(int port) => port.ToString(CultureInfo.InvariantCulture);

    internal static string[] Args(string modelsDir)
    {
        int[] ports = FreePorts.Take(3);
        return ["--preset", "tiny", "--models-dir", modelsDir, "--port", P(ports[0]), "--gateway-port", P(ports[1]), "--silo-port", P(FreePorts.Consecutive(3)),
            "--dashboard-port", P(FreePorts.Consecutive(2))];
    }

    /// <summary>The gateway's URL for <see cref="Args"/>.</summary>
    internal static string GatewayUrl(string[] args) => $"http://127.0.0.1:{args[Array.IndexOf(args, "--port") + 1]}";

    /// <summary>Every process of the app (they all name its models folder) gone within 20 s of its stop.</summary>
    private static void AssertNothingLeftOf(string modelsDir)
    {
        var left = ProcessScan.WaitAllGone(ProcessScan.Mentioning(modelsDir), TimeSpan.FromSeconds(20));
        Assert.True(left.Count == 0, "left behind after the app stopped: " + ProcessScan.Describe(left));
    }

    private static async Task ForwardEqualsTheInProcessOneAsync(string url, string modelsDir)
    {
        using var http = new HttpClient { BaseAddress = new Uri(url), Timeout = TimeSpan.FromMinutes(1) };
        var client = new GatewayClient(http);
        var (healthy, health) = await client.HealthAsync();
        Assert.True(healthy, health?.ToJsonString());
        Assert.Equal(2, health!["expert_silos"]!.GetValue<int>());
        const int Tokens = 5;
        var random = new Random(Random.Shared.Next());
        float[] x = [.. Enumerable.Range(0, Tokens * 64).Select(_ => (float)((random.NextDouble() * 2) - 1))];
        var response = await client.ForwardAsync("latent", layer: null, x, Tokens, 64, "fp32");
        using var local = MoeModel.Open(Path.Combine(modelsDir, "tiny-8x1"));
        double error = Metrics.RelativeError(response.HiddenStates.Decode(), local.ForwardStack(x, Tokens));
        Assert.True(error <= 1e-4, $"cluster vs in-process: {error:E2}");
    }

    [Fact]
    public async Task On_Aspire_every_silo_becomes_healthy_the_warmup_finishes_and_a_forward_through_the_gateway_equals_the_in_process_one()
    {
        using var dir = new MoECluster.Testing.TempDirectory("moecluster-aspire-");
        string modelsDir = dir.File("models");
        string[] args = Args(modelsDir);
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(4));
        var builder = await DistributedApplicationTestingBuilder.CreateAsync(typeof(MoEClusterApp), args, timeout.Token);
        await using var app = await builder.BuildAsync(timeout.Token);
        await app.StartAsync(timeout.Token);
        try
        {
            foreach (string silo in new[] { "frontend", "expert-1", "expert-2" })
            {
                await app.ResourceNotifications.WaitForResourceHealthyAsync(silo, timeout.Token);
            }

            var warm = await app.ResourceNotifications.WaitForResourceAsync("warmup", e => e.Snapshot.State?.Text == KnownResourceStates.Finished || e.Snapshot.State?.Text == KnownResourceStates.FailedToStart || e.Snapshot.State?.Text == KnownResourceStates.Exited, timeout.Token);
            Assert.True(warm.Snapshot.ExitCode == 0, $"warm-up: {warm.Snapshot.State?.Text}, exit code {warm.Snapshot.ExitCode}");
            Assert.True(app.ResourceNotifications.TryGetCurrentState("load-30s", out var load) && load.Snapshot.State?.Text == KnownResourceStates.NotStarted,
                $"the load run starts only from the dashboard: {load?.Snapshot.State?.Text}");
            await ForwardEqualsTheInProcessOneAsync(GatewayUrl(args), modelsDir);

            // The front-end's dashboard command starts the load run; pressed again while it runs, it says so.
            var commands = app.Services.GetRequiredService<ResourceCommandService>();
            var run = await commands.ExecuteCommandAsync("frontend", "run-load", timeout.Token);
            Assert.True(run.Success, run.Message);
            await app.ResourceNotifications.WaitForResourceAsync("load-30s", KnownResourceStates.Running, timeout.Token);
            var again = await commands.ExecuteCommandAsync("frontend", "run-load", timeout.Token);
            Assert.False(again.Success);
            Assert.Contains("running already", again.Message, StringComparison.Ordinal);
        }
        finally
        {
            await app.StopAsync(CancellationToken.None);
        }

        AssertNothingLeftOf(modelsDir);
    }

    [Fact]
    public async Task When_the_AppHost_is_killed_with_sigkill_the_orchestrator_stops_every_process_it_started()
    {
        using var dir = new MoECluster.Testing.TempDirectory("moecluster-aspire-");
        string modelsDir = dir.File("models");
        string[] args = Args(modelsDir);
        string url = GatewayUrl(args);
        // The orchestrator's processes are not the AppHost's children (DCP detaches); those that appear with it are its.
        var before = Orchestrators().ToHashSet();
        using var apphost = BackgroundProcess.Start("dotnet", [Path.Combine(AppContext.BaseDirectory, "MoECluster.AppHost.dll"), .. args]);
        try
        {
            Assert.True(await apphost.WaitForOutputAsync("gateway ready", TimeSpan.FromMinutes(3)), "the AppHost did not get its gateway ready:\n" + apphost.Output);
            Assert.Contains("Login to the dashboard at http://127.0.0.1:", apphost.Output, StringComparison.Ordinal);
            await WaitForExpertSilosAsync(url, 2, TimeSpan.FromMinutes(2));
            var silos = ProcessScan.Mentioning(modelsDir);
            var orchestrator = Orchestrators().Where(p => !before.Contains(p)).ToList();
            Assert.True(silos.Count >= 3, "silo processes: " + ProcessScan.Describe(silos));
            Assert.NotEmpty(orchestrator);

            var clock = Stopwatch.StartNew();
            using (var kill = Process.Start("kill", ["-KILL", P(apphost.Id)]))
            {
                kill.WaitForExit();
            }

            Assert.True(apphost.WaitForExit(TimeSpan.FromSeconds(10)));
            var left = ProcessScan.WaitAllGone([.. silos, .. orchestrator, .. ProcessScan.Mentioning(modelsDir)], TimeSpan.FromSeconds(45));
            log.WriteLine(string.Create(CultureInfo.InvariantCulture, $"everything gone {clock.Elapsed.TotalSeconds:F1} s after kill -9 of the AppHost"));
            Assert.True(left.Count == 0, $"still running {clock.Elapsed.TotalSeconds:F1} s after kill -9: " + ProcessScan.Describe(left));
        }
        finally
        {
            ProcessScan.KillAll(ProcessScan.Mentioning(modelsDir).Concat(Orchestrators().Where(p => !before.Contains(p))));
        }
    }

    /// <summary>Live processes of Aspire's orchestrator (DCP) and dashboard.</summary>
    internal static IEnumerable<int> Orchestrators() =>
        ProcessScan.Mentioning("aspire.hosting.orchestration").Concat(ProcessScan.Mentioning("Aspire.Dashboard")).Distinct();

    /// <summary>
    /// The moecluster the AppHost runs (its `dotnet run --project src/MoECluster.Cli` output; the AppHost references it as a
    /// resource, not as an assembly, so it is not beside the tests).
    /// </summary>
    private static string CliDll()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            string candidate = Path.Combine(dir.FullName, "src", "MoECluster.Cli", "bin", "Release", "net10.0", "moecluster.dll");
            if (File.Exists(candidate))
            {
                return candidate;
            }
        }

        throw new FileNotFoundException("src/MoECluster.Cli/bin/Release/net10.0/moecluster.dll above " + AppContext.BaseDirectory);
    }

    /// <summary>The silo process itself (not Aspire's `dotnet run` around it) named <paramref name="name"/> under <paramref name="modelsDir"/>.</summary>
    private static int SiloPid(string modelsDir, string name) =>
        ProcessScan.Mentioning(modelsDir).Single(p =>
        {
            string[] args = File.ReadAllText($"/proc/{P(p)}/cmdline").Split('\0', StringSplitOptions.RemoveEmptyEntries);
            int verb = Array.IndexOf(args, "silo");
            return verb > 0 && args[verb - 1].EndsWith("/moecluster", StringComparison.Ordinal) && args.AsSpan(verb).IndexOf(name) > 0;
        });

    private static async Task<IAsyncDisposable> StartAsync(string[] args, TimeSpan timeout)
    {
        using var cancel = new CancellationTokenSource(timeout);
        var builder = await DistributedApplicationTestingBuilder.CreateAsync(typeof(MoEClusterApp), args, cancel.Token);
        var app = await builder.BuildAsync(cancel.Token);
        await app.StartAsync(cancel.Token);
        await app.ResourceNotifications.WaitForResourceAsync("warmup", KnownResourceStates.Finished, cancel.Token);
        return app;
    }

    [Fact]
    public async Task The_AppHost_restarts_a_killed_expert_silo_a_hung_one_and_after_the_front_end_every_silo_and_forwards_succeed_again()
    {
        using var dir = new MoECluster.Testing.TempDirectory("moecluster-aspire-");
        string modelsDir = dir.File("models");
        string[] args = Args(modelsDir);
        string url = GatewayUrl(args);
        var app = (DistributedApplication)await StartAsync(args, TimeSpan.FromMinutes(4));
        await using (app)
        {
            using var watching = new CancellationTokenSource();
            var starts = new System.Collections.Concurrent.ConcurrentDictionary<string, int>(StringComparer.Ordinal);
            var watch = CountStartsAsync(app, starts, watching.Token);
            foreach (var (silo, signal, within) in new[] { ("expert-1", "KILL", 30), ("expert-2", "STOP", 45), ("frontend", "KILL", 45) })
            {
                int pid = SiloPid(modelsDir, silo);
                starts.Clear();
                var clock = Stopwatch.StartNew();
                using (var kill = Process.Start("kill", [$"-{signal}", P(pid)]))
                {
                    kill.WaitForExit();
                }

                await WaitForExpertSilosAsync(url, 2, TimeSpan.FromSeconds(within), notBefore: () => !BackgroundProcess.IsAlive(pid));
                await ForwardEqualsTheInProcessOneAsync(url, modelsDir);
                log.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{silo} after SIG{signal}: whole again and serving after {clock.Elapsed.TotalSeconds:F1} s"));
                Assert.NotEqual(pid, SiloPid(modelsDir, silo));

                // Each silo that had to go started once: the front-end's expert silos go with it (localhost clustering), and
                // none is restarted a second time by a stale "running" snapshot of its killed process.
                await Task.Delay(TimeSpan.FromSeconds(3));
                string[] restarted = silo == "frontend" ? ["expert-1", "expert-2", "frontend"] : [silo];
                Assert.Equal(restarted.Select(s => $"{s}: 1"), starts.OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => $"{kv.Key}: {kv.Value}"));
            }

            await watching.CancelAsync();
            await watch;

            // A stop from the dashboard is the user's: the silo stays stopped until started again.
            using (var running = new CancellationTokenSource(TimeSpan.FromSeconds(60)))
            {
                await app.ResourceNotifications.WaitForResourceAsync("expert-2", KnownResourceStates.Running, running.Token);
            }

            var commands = app.Services.GetRequiredService<ResourceCommandService>();
            var stopped = await commands.ExecuteCommandAsync("expert-2", KnownResourceCommands.StopCommand);
            Assert.True(stopped.Success, stopped.Message);
            await Task.Delay(TimeSpan.FromSeconds(8));
            Assert.True(app.ResourceNotifications.TryGetCurrentState("expert-2", out var state) && state.Snapshot.State?.Text != KnownResourceStates.Running, state?.Snapshot.State?.Text);
            await WaitForExpertSilosAsync(url, 1, TimeSpan.FromSeconds(30));
            var started = await commands.ExecuteCommandAsync("expert-2", KnownResourceCommands.StartCommand);
            Assert.True(started.Success, started.Message);
            await WaitForExpertSilosAsync(url, 2, TimeSpan.FromSeconds(60));
            await app.StopAsync(CancellationToken.None);
        }

        AssertNothingLeftOf(modelsDir);
    }

    /// <summary>
    /// The CI-sized chaos run on the AppHost's cluster: 90 seconds of checked load while <c>moecluster chaos</c> kills,
    /// hangs and stops its silo processes, the front-end included, one at a time (a fault is whole again after 6-20 s on
    /// the 2-core build machine under Aspire, so 90 s hold at least three). No request may fail, every answer must
    /// equal the in-process forward, and the cluster must be whole again after every fault (docs/CHAOS.md).
    /// </summary>
    [Fact]
    public async Task A_90_second_chaos_run_on_the_AppHosts_cluster_fails_no_request_and_every_answer_is_the_in_process_one()
    {
        using var dir = new MoECluster.Testing.TempDirectory("moecluster-chaos-");
        string modelsDir = dir.File("models");
        string[] args = [.. Args(modelsDir), "--backend", "managed"];
        string url = GatewayUrl(args);
        var app = (DistributedApplication)await StartAsync(args, TimeSpan.FromMinutes(4));
        await using (app)
        {
            string json = dir.File("chaos.json");
            string seed = Random.Shared.Next(1, int.MaxValue).ToString(CultureInfo.InvariantCulture);
            using var chaos = BackgroundProcess.Start("dotnet", [CliDll(),
                "chaos", "--url", url,
                "--model", $"latent={Path.Combine(modelsDir, "tiny-8x1")}", "--model", $"standard={Path.Combine(modelsDir, "tiny-standard-8x1")}",
                "--duration", "90", "--warmup", "3", "--concurrency", "2", "--fault-interval", "3", "--hang", "3,8", "--recovery-timeout", "40",
                "--seed", seed, "--json", json]);
            bool finished = chaos.WaitForExit(TimeSpan.FromMinutes(4));
            log.WriteLine(chaos.Output);
            Assert.True(finished, "the chaos run did not finish in 4 minutes:\n" + chaos.Output);
            Assert.True(chaos.ExitCode == 0, $"chaos run (seed {seed}) exit {chaos.ExitCode}:\n{chaos.Output}");
            var report = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(json))!;
            var requests = report["requests"]!;
            Assert.Equal(0, requests["failed"]!.GetValue<long>());
            Assert.Equal(0, requests["wrong_answers"]!.GetValue<long>());
            Assert.True(requests["ok"]!.GetValue<long>() > 100, chaos.Output);
            var faults = report["faults"]!.AsArray();
            Assert.True(faults.Count >= 3, $"only {faults.Count} faults in 90 s:\n{chaos.Output}");
            Assert.Equal(["hang", "kill", "term"], faults.Select(f => f!["kind"]!.GetValue<string>()).Distinct().Order());
            Assert.Contains(faults, f => f!["role"]!.GetValue<string>() == "frontend" && f["kind"]!.GetValue<string>() == "kill");
            Assert.All(faults, f => Assert.NotNull(f!["whole_again_after_s"]));
            await app.StopAsync(CancellationToken.None);
        }
    }

    /// <summary>Counts, per silo resource, the times it entered the Starting state (a start or restart by Aspire).</summary>
    private static async Task CountStartsAsync(DistributedApplication app, System.Collections.Concurrent.ConcurrentDictionary<string, int> starts, CancellationToken stop)
    {
        var last = new Dictionary<string, string?>(StringComparer.Ordinal);
        try
        {
            await foreach (var e in app.ResourceNotifications.WatchAsync(stop))
            {
                string? state = e.Snapshot.State?.Text;
                string name = e.Resource.Name;
                if (state == KnownResourceStates.Starting && last.GetValueOrDefault(name) != KnownResourceStates.Starting && (name == "frontend" || name.StartsWith("expert-", StringComparison.Ordinal)))
                {
                    starts.AddOrUpdate(name, 1, (_, n) => n + 1);
                }

                last[name] = state;
            }
        }
        catch (OperationCanceledException) when (stop.IsCancellationRequested)
        {
        }
    }

    internal static async Task WaitForExpertSilosAsync(string url, int expected, TimeSpan timeout, Func<bool>? notBefore = null)
    {
        using var http = new HttpClient { BaseAddress = new Uri(url) };
        await new GatewayClient(http).WaitForExpertSilosAsync(expected, timeout, notBefore);
    }
}
