using System.Diagnostics;
using System.Globalization;
using System.Text;
using MoECluster.AppHost.Model;
using MoECluster.AppHost.Orchestration;
using MoECluster.Testing;

namespace MoECluster.AppHost.Tests;

/// <summary>The orchestrator on small programs and in-process tasks: order, failures named with their last lines, stop, watchdog.</summary>
public sealed class OrchestrationTests
{
    /// <summary>A writer the test can read while the application runs.</summary>
    private sealed class Capture : TextWriter
    {
        private readonly StringBuilder _text = new();

        public override Encoding Encoding => Encoding.UTF8;

        public string Text
        {
            get
            {
                lock (_text)
                {
                    return _text.ToString();
                }
            }
        }

        public override void Write(char value)
        {
            lock (_text)
            {
                _text.Append(value);
            }
        }

        public override void Write(string? value)
        {
            lock (_text)
            {
                _text.Append(value);
            }
        }
    }

    private static async Task<(int ExitCode, string Output, string Error)> RunUntilReadyAsync(DistributedApplication app, Func<string, Task>? whileReady = null)
    {
        using var output = new Capture();
        using var error = new Capture();
        using var stop = new CancellationTokenSource();
        var run = app.RunAsync(output, error, color: false, stop.Token);
        var clock = Stopwatch.StartNew();
        while (!run.IsCompleted && !output.Text.Contains("ready in", StringComparison.Ordinal) && clock.Elapsed < TimeSpan.FromSeconds(60))
        {
            await Task.Delay(50);
        }

        if (!run.IsCompleted && whileReady is not null)
        {
            await whileReady(output.Text);
        }

        await stop.CancelAsync();
        int code = await run.WaitAsync(TimeSpan.FromSeconds(60));
        return (code, output.Text, error.Text);
    }

    [Fact]
    public async Task Resources_start_in_wait_order_and_one_shots_complete_before_their_dependents()
    {
        var builder = AppModelTests.NewBuilder();
        var events = new List<string>();
        Func<TaskContext, CancellationToken, Task<string?>> Record(string name, int delayMs) => async (_, cancel) =>
        {
            lock (events)
            {
                events.Add($"{name} start");
            }

            await Task.Delay(delayMs, cancel);
            lock (events)
            {
                events.Add($"{name} end");
            }

            return name;
        };

        // Added in reverse: only the waits order them.
        var last = builder.AddTask("last", Record("last", 0));
        var middle = builder.AddTask("middle", Record("middle", 100));
        var first = builder.AddTask("first", Record("first", 200));
        var sibling = builder.AddTask("sibling", Record("sibling", 0));
        last.WaitFor(middle);
        middle.WaitForCompletion(first);
        sibling.WaitFor(first);

        var (code, output, error) = await RunUntilReadyAsync(builder.Build());
        Assert.True(code == 0, output + error);
        Assert.True(events.IndexOf("first end") < events.IndexOf("middle start"), string.Join(", ", events));
        Assert.True(events.IndexOf("first end") < events.IndexOf("sibling start"), string.Join(", ", events));
        Assert.True(events.IndexOf("middle end") < events.IndexOf("last start"), string.Join(", ", events));
        Assert.Equal(8, events.Count);
        Assert.Contains("ready in", output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_child_that_exits_before_it_is_healthy_ends_the_launch_naming_it_with_its_last_lines()
    {
        var builder = AppModelTests.NewBuilder();
        var port = builder.AddExecutable("crasher", "bash").WithArgs("-c", "echo starting up; echo 'fatal: no config' >&2; exit 3")
            .WithHttpEndpoint().WithHttpHealthCheck("/health");
        var never = builder.AddTask("after", (_, _) => Task.FromResult<string?>("ran"));
        never.WaitFor(port);

        var (code, output, error) = await RunUntilReadyAsync(builder.Build());
        Assert.Equal(1, code);
        Assert.Contains("error: crasher exited with code 3", error, StringComparison.Ordinal);
        Assert.Contains("last lines of crasher:", error, StringComparison.Ordinal);
        Assert.Contains("  fatal: no config", error, StringComparison.Ordinal);
        Assert.Contains("[crasher] starting up", output, StringComparison.Ordinal);
        Assert.DoesNotContain("running after", output, StringComparison.Ordinal);
        Assert.DoesNotContain("ready in", output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_failed_one_shot_stops_the_launch_and_a_timeout_names_what_it_waited_for()
    {
        var builder = AppModelTests.NewBuilder();
        var job = builder.AddExecutable("job", "bash").WithArgs("-c", "echo 'disk full' >&2; exit 1");
        builder.AddExecutable("server", "sleep").WithArgs("300").WaitForCompletion(job);
        var (code, output, error) = await RunUntilReadyAsync(builder.Build());
        Assert.Equal(1, code);
        Assert.Contains("error: job exited with code 1", error, StringComparison.Ordinal);
        Assert.Contains("disk full", error, StringComparison.Ordinal);
        Assert.DoesNotContain("started server", output, StringComparison.Ordinal);

        builder = AppModelTests.NewBuilder(new() { ["AppHost:StartupTimeoutSeconds"] = "2" });
        builder.AddExecutable("deaf", "sleep").WithArgs("300").WithHttpEndpoint().WithHttpHealthCheck("/ready");
        var clock = Stopwatch.StartNew();
        (code, output, error) = await RunUntilReadyAsync(builder.Build());
        Assert.Equal(1, code);
        Assert.Matches(@"error: deaf did not become healthy within 2 s \(last answer: http://127\.0\.0\.1:\d+/ready: ", error);
        Assert.Contains("waiting for deaf (health http://127.0.0.1:", output, StringComparison.Ordinal);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(30), $"{clock.Elapsed}");
        int pid = int.Parse(System.Text.RegularExpressions.Regex.Match(output, @"started deaf \(pid (\d+)").Groups[1].Value, CultureInfo.InvariantCulture);
        Assert.False(BackgroundProcess.IsAlive(pid), "the launcher left 'deaf' running after the failure");
    }

    [Fact]
    public async Task Stop_goes_in_reverse_order_and_a_child_that_ignores_SIGTERM_is_killed_after_the_grace()
    {
        using var dir = new TempDirectory();
        string trapped = dir.File("trapped");
        var builder = AppModelTests.NewBuilder(new() { ["AppHost:StopGraceSeconds"] = "1" });
        var db = builder.AddExecutable("db", "bash").WithArgs("-c", "trap 'echo db stopping; exit 0' TERM; while :; do sleep 0.1; done");

        // Healthy (so the stop can begin) only once it ignores SIGTERM.
        builder.AddExecutable("stubborn", "bash").WithArgs("-c", $"trap '' TERM; touch '{trapped}'; while :; do sleep 0.1; done")
            .WithHealthCheck(_ => "trap set", (_, _) => Task.FromResult(File.Exists(trapped) ? HealthCheckResult.Healthy("trap set") : HealthCheckResult.Unhealthy("no trap yet")))
            .WaitFor(db);
        string? ready = null;
        var (code, output, error) = await RunUntilReadyAsync(builder.Build(), text =>
        {
            ready = text;
            return Task.CompletedTask;
        });
        Assert.True(code == 0, output + error);
        Assert.NotNull(ready);
        int stubborn = output.IndexOf("stopping stubborn", StringComparison.Ordinal);
        int db2 = output.IndexOf("stopping db", StringComparison.Ordinal);
        Assert.True(stubborn >= 0 && db2 > stubborn, output);
        Assert.True(output.Contains("stubborn did not stop within 1 s of SIGTERM: killed", StringComparison.Ordinal), output);
        foreach (System.Text.RegularExpressions.Match m in System.Text.RegularExpressions.Regex.Matches(ready!, @"pid (\d+)"))
        {
            Assert.False(BackgroundProcess.IsAlive(int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture)), $"pid {m.Groups[1].Value} outlived the stop:\n{output}");
        }
    }

    [Fact]
    public async Task A_child_that_exits_once_ready_is_restarted_with_backoff_and_what_must_restart_with_it_is_restarted_too()
    {
        var builder = AppModelTests.NewBuilder();
        var flaky = builder.AddExecutable("flaky", "bash").WithArgs("-c", "echo up; sleep 3; exit 7");
        builder.AddExecutable("follower", "bash").WithArgs("-c", "echo follower up; exec sleep 300").WaitFor(flaky).RestartWith(flaky);
        builder.AddExecutable("bystander", "bash").WithArgs("-c", "echo bystander up; exec sleep 300");
        string? ready = null;
        var (code, output, error) = await RunUntilReadyAsync(builder.Build(), async text =>
        {
            ready = text;

            // flaky exits 3 s after each start: restarted after 0.5 s, then after 1 s (by about 8 s from now).
            await Task.Delay(TimeSpan.FromSeconds(12));
        });

        Assert.True(code == 0, output + error);
        Assert.NotNull(ready);
        Assert.Matches(@"flaky \(pid \d+\) exited with code 7 after [\d.]+ s; restarting it in 0\.5 s \(restart 1, at most 5 within 120 s\)", error);
        Assert.Matches(@"flaky \(pid \d+\) exited with code 7 after [\d.]+ s; restarting it in 1\.0 s \(restart 2, at most 5 within 120 s\)", error);
        Assert.Contains("follower must restart with flaky: restarting them", output, StringComparison.Ordinal);
        Assert.Matches(@"follower \(pid \d+\) exited with code 137 after [\d.]+ s; restarting it in 0\.5 s \(restart 1,", error);
        Assert.Matches(@"restarted flaky:\n  flaky +running +pid \d+ \(watchdog \d+\) +restarts 1", output);
        Assert.True(Count(output, "[flaky] up") >= 3, output);
        Assert.True(Count(output, "[follower] follower up") >= 2, output);
        Assert.Equal(1, Count(output, "[bystander] bystander up"));
        Assert.DoesNotContain("bystander (pid", error, StringComparison.Ordinal);

        // The stop is not an exit to restart: every process is gone, nothing started after it.
        Assert.Contains("stopped every process", output, StringComparison.Ordinal);
        int stopped = output.IndexOf("stopping every process", StringComparison.Ordinal);
        Assert.DoesNotContain("restarted", output[stopped..], StringComparison.Ordinal);
        foreach (System.Text.RegularExpressions.Match m in System.Text.RegularExpressions.Regex.Matches(output, @"pid (\d+)"))
        {
            Assert.False(BackgroundProcess.IsAlive(int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture)), $"pid {m.Groups[1].Value} outlived the stop:\n{output}");
        }
    }

    [Fact]
    public async Task A_child_that_stops_answering_its_liveness_check_once_ready_is_killed_and_restarted()
    {
        using var dir = new TempDirectory();
        string hung = dir.File("hung");
        var builder = AppModelTests.NewBuilder();
        builder.AddExecutable("worker", "bash").WithArgs("-c", "echo worker up; exec sleep 300")
            .WithAnnotation(new LivenessAnnotation(_ => "the hung flag", (_, _) => Task.FromResult(!File.Exists(hung)), TimeSpan.FromSeconds(2)));
        var (code, output, error) = await RunUntilReadyAsync(builder.Build(), async _ =>
        {
            await Task.Delay(TimeSpan.FromSeconds(2));   // answered at least once: the check is armed
            await File.WriteAllTextAsync(hung, "");
            await Task.Delay(TimeSpan.FromSeconds(8));   // 2 s without an answer: killed, then restarted after 0.5 s
            File.Delete(hung);
            await Task.Delay(TimeSpan.FromSeconds(2));
        });

        Assert.True(code == 0, output + error);
        Assert.Matches(@"worker \(pid \d+\) has not answered the hung flag for \d+ s \(hung\): killing it", error);
        Assert.Matches(@"worker \(pid \d+\) exited with code 137 after [\d.]+ s; restarting it in 0\.5 s \(restart 1,", error);
        Assert.Equal(1, Count(error, "has not answered"));
        Assert.Equal(2, Count(output, "[worker] worker up"));
        Assert.Matches(@"restarted worker:\n  worker +running +pid \d+ \(watchdog \d+\) +restarts 1", output);
    }

    [Fact]
    public void Restart_delays_double_start_over_after_a_stable_run_and_stop_at_the_crash_loop_limit()
    {
        var policy = new MoECluster.Cluster.Hosting.RestartPolicy(TimeSpan.FromSeconds(0.5), TimeSpan.FromSeconds(3), 4, TimeSpan.FromSeconds(60), TimeSpan.FromSeconds(30));
        TimeSpan S(double s) => TimeSpan.FromSeconds(s);
        Assert.Equal(S(0.5), policy.NextDelay(S(10), S(1)));
        Assert.Equal(S(1), policy.NextDelay(S(11), S(1)));
        Assert.Equal(S(2), policy.NextDelay(S(13), S(1)));

        // A run of 30 s or more starts the backoff over; the delay is capped.
        Assert.Equal(S(0.5), policy.NextDelay(S(50), S(35)));
        Assert.Equal(4, policy.Restarts);

        // Four restarts within 60 s: a crash loop, no fifth.
        Assert.Null(policy.NextDelay(S(51), S(1)));
        Assert.Equal(4, policy.Restarts);

        // Once the oldest restarts leave the window, restarts resume, with the backoff of a process that keeps failing.
        Assert.Equal(S(1), policy.NextDelay(S(75), S(1)));
        Assert.Equal(S(2), policy.NextDelay(S(76), S(1)));
        Assert.Equal(S(3), policy.NextDelay(S(120), S(1)));
    }

    private static int Count(string text, string what)
    {
        int n = 0;
        for (int i = text.IndexOf(what, StringComparison.Ordinal); i >= 0; i = text.IndexOf(what, i + what.Length, StringComparison.Ordinal))
        {
            n++;
        }

        return n;
    }

    [Fact]
    public async Task The_watchdog_stops_its_child_when_the_launchers_end_of_the_pipe_closes()
    {
        var builder = AppModelTests.NewBuilder();
        builder.AddExecutable("orphan", "sleep").WithArgs("300");
        var instance = builder.Build().Model.Instance("orphan");
        var console = new LauncherConsole(TextWriter.Null, TextWriter.Null, color: false);
        using var process = ManagedProcess.Start(instance, console, 0, ExecutableLocator.Find("setsid"), withWatchdog: true);
        try
        {
            Assert.NotNull(process.Watchdog);
            await Task.Delay(300);
            Assert.True(BackgroundProcess.IsAlive(process.Id));

            // What the kernel does when the launcher dies, whatever the signal: the pipe's only writer goes away.
            process.Watchdog!.CloseInput();
            int code = await process.Exited.WaitAsync(TimeSpan.FromSeconds(10));
            Assert.Equal(143, code); // 128 + SIGTERM
            var clock = Stopwatch.StartNew();
            while (!process.Watchdog.HasExited && clock.Elapsed < TimeSpan.FromSeconds(10))
            {
                await Task.Delay(50);
            }

            Assert.True(process.Watchdog.HasExited, "the watchdog did not exit after its child stopped");
        }
        finally
        {
            process.Kill();
        }
    }

    [Fact]
    public async Task The_last_lines_of_a_child_that_exits_at_once_are_read_before_its_exit_is_reported()
    {
        var builder = AppModelTests.NewBuilder();
        builder.AddExecutable("quick", "sh").WithArgs("-c", "echo 'disk full' >&2; exit 1");
        var instance = builder.Build().Model.Instance("quick");
        var console = new LauncherConsole(TextWriter.Null, TextWriter.Null, color: false);
        for (int round = 0; round < 200; round++)
        {
            using var process = ManagedProcess.Start(instance, console, 0, setsid: null, withWatchdog: false);
            Assert.Equal(1, await process.Exited.WaitAsync(TimeSpan.FromSeconds(10)));
            Assert.True(process.LastLines().Contains("disk full"), $"round {round}: exit reported before the output was read");
        }
    }

    [Fact]
    public async Task The_stop_path_and_the_exit_monitor_may_dispose_a_watchdog_at_the_same_time_and_both_find_it_gone()
    {
        // Both dispose it when a guarded child stops; two concurrent disposals of one Process race on its input pipe
        // (seen in CI: ObjectDisposedException "Cannot access a closed pipe" out of a launcher's stop).
        using var child = Process.Start(new ProcessStartInfo("sleep", ["300"]) { UseShellExecute = false })!;
        try
        {
            for (int round = 0; round < 100; round++)
            {
                var watchdog = Watchdog.Start(child.Id, "race", setsid: null);
                int pid = watchdog.Id;
                using var go = new Barrier(4);
                await Task.WhenAll(Enumerable.Range(0, 4).Select(_ => Task.Run(() =>
                {
                    go.SignalAndWait();
                    watchdog.Dispose();
                })));
                // Every caller returns only once the watchdog is gone, also one that found it being disposed.
                Assert.False(BackgroundProcess.IsAlive(pid), $"round {round}: the watchdog outlived its disposal");
            }

            Assert.False(child.HasExited, "a killed watchdog must leave its child alone");
        }
        finally
        {
            child.Kill();
        }
    }

    [Fact]
    public void Preflight_names_a_missing_program_with_its_install_hint_and_a_busy_port()
    {
        using var busy = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        busy.Start();
        int port = ((System.Net.IPEndPoint)busy.LocalEndpoint).Port;
        var builder = AppModelTests.NewBuilder();
        builder.AddExecutable("cache", "no-such-program-moecluster", "install it with `apt-get install -y no-such-program`");
        builder.AddExecutable("web", "true").WithHttpEndpoint(port);
        var problems = Preflight.Check(builder.Build().Model);
        Assert.Contains("resource 'cache': no-such-program-moecluster is not installed (not found on PATH); install it with `apt-get install -y no-such-program`", problems);
        Assert.Contains($"web: port {port} (http) is already in use on 127.0.0.1", problems);
        Assert.Equal(2, problems.Count);
    }

    [Fact]
    public async Task A_run_with_a_missing_program_fails_before_starting_anything()
    {
        var builder = AppModelTests.NewBuilder();
        builder.AddExecutable("first", "sleep").WithArgs("300");
        builder.AddExecutable("cache", "no-such-program-moecluster");
        var (code, output, error) = await RunUntilReadyAsync(builder.Build());
        Assert.Equal(1, code);
        Assert.Contains("no-such-program-moecluster is not installed", error, StringComparison.Ordinal);
        Assert.DoesNotContain("started", output, StringComparison.Ordinal);
    }
}
