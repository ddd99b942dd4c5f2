using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Aspire.Hosting;
using Aspire.Hosting.ApplicationModel;
using Aspire.Hosting.Testing;
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

    private static string[] Args(string modelsDir)
    {
        int[] ports = FreePorts.Take(3);
        return ["--preset", "tiny", "--models-dir", modelsDir, "--port", P(ports[0]), "--gateway-port", P(ports[1]), "--silo-port", P(FreeSiloPorts(3)),
            "--dashboard-port", P(FreeSiloPorts(2))];
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
            await ForwardEqualsTheInProcessOneAsync($"http://127.0.0.1:{args[Array.IndexOf(args, "--port") + 1]}", modelsDir);
        }
        finally
        {
            await app.StopAsync(CancellationToken.None);
        }

        var left = ProcessScan.WaitAllGone(ProcessScan.Mentioning(modelsDir), TimeSpan.FromSeconds(20));
        Assert.True(left.Count == 0, "left behind after the app stopped: " + ProcessScan.Describe(left));
    }

    [Fact]
    public async Task When_the_AppHost_is_killed_with_sigkill_the_orchestrator_stops_every_process_it_started()
    {
        using var dir = new MoECluster.Testing.TempDirectory("moecluster-aspire-");
        string modelsDir = dir.File("models");
        string[] args = Args(modelsDir);
        string url = $"http://127.0.0.1:{args[Array.IndexOf(args, "--port") + 1]}";
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
    private static IEnumerable<int> Orchestrators() =>
        ProcessScan.Mentioning("aspire.hosting.orchestration").Concat(ProcessScan.Mentioning("Aspire.Dashboard")).Distinct();

    private static async Task WaitForExpertSilosAsync(string url, int expected, TimeSpan timeout)
    {
        using var http = new HttpClient { BaseAddress = new Uri(url), Timeout = TimeSpan.FromSeconds(5) };
        var client = new GatewayClient(http);
        var clock = Stopwatch.StartNew();
        string last = "no answer";
        while (clock.Elapsed < timeout)
        {
            try
            {
                var (_, body) = await client.HealthAsync();
                if (body?["expert_silos"]?.GetValue<int>() == expected)
                {
                    return;
                }

                last = body?.ToJsonString() ?? "no body";
            }
            catch (Exception e) when (e is HttpRequestException or TaskCanceledException)
            {
                last = e.Message;
            }

            await Task.Delay(250);
        }

        Assert.Fail($"/health did not count {expected} expert silos within {timeout.TotalSeconds} s (last: {last})");
    }

    /// <summary>
    /// The first of <paramref name="count"/> consecutive ports free now, below Linux's ephemeral range (32768 and up),
    /// so that no outgoing connection takes one of them before the silos bind them.
    /// </summary>
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

        throw new InvalidOperationException("no free range of ports in 20000..32000");
    }

    private static bool IsFree(int port)
    {
        try
        {
            var listener = new TcpListener(IPAddress.Loopback, port);
            listener.Start();
            listener.Stop();
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }
}
