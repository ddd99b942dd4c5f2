using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using MoECluster.Cluster.Hosting;

namespace MoECluster.AppHost.Resources;

/// <summary>What the supervisor watches: each silo resource and where its <c>/alive</c> answers.</summary>
/// <param name="Silos">Silo resource name → its liveness URL.</param>
/// <param name="Frontend">The front-end's resource name.</param>
/// <param name="RestartExpertsWithFrontend">Localhost clustering: the membership lives in the front-end, so the expert silos restart with it.</param>
public sealed record SiloSupervision(IReadOnlyDictionary<string, Uri> Silos, string Frontend, bool RestartExpertsWithFrontend);

/// <summary>
/// Supervision of the silo resources on Aspire, as <c>moecluster run</c> supervises its own processes: a silo that exits
/// while the AppHost runs (killed, crashed, a SIGTERM it did not get from Aspire) is restarted through Aspire's restart
/// command after a backoff (<see cref="RestartPolicy"/>: 0.5 s doubling, at most 5 within 2 minutes, then left stopped);
/// one whose <c>/alive</c> has not answered for <see cref="LivenessTimeout"/> (hung, SIGSTOP) is killed and so restarted;
/// with localhost clustering the expert silos are restarted with the front-end. A stop from the dashboard (the Stop
/// command) is the user's: that silo stays stopped until started again.
/// </summary>
public sealed partial class SiloSupervisor(
    SiloSupervision supervision,
    ResourceNotificationService notifications,
    ResourceCommandService commands,
    IHostApplicationLifetime lifetime,
    ILogger<SiloSupervisor> logger)
{
    /// <summary>How long a running silo's <c>/alive</c> may stay unanswered before the silo is killed.</summary>
    public static readonly TimeSpan LivenessTimeout = TimeSpan.FromSeconds(10);

    private readonly ConcurrentDictionary<string, bool> _stoppedByUser = new(StringComparer.Ordinal);

    /// <summary>Silos being restarted by a command (the supervisor's or the user's): the exit that restart causes is not a crash.</summary>
    private readonly ConcurrentDictionary<string, bool> _restarting = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, RestartPolicy> _policies = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, (string State, int? Pid, long StartedTicks)> _last = new(StringComparer.Ordinal);

    /// <summary>The dashboard's Stop was used on <paramref name="silo"/>: leave it stopped.</summary>
    public void StoppedByUser(string silo) => _stoppedByUser[silo] = true;

    /// <summary>The dashboard's Start or Restart was used on <paramref name="silo"/>: supervise it again.</summary>
    public void StartedByUser(string silo)
    {
        _stoppedByUser.TryRemove(silo, out _);
        _restarting[silo] = true;
    }

    /// <summary>
    /// Starts watching (from the app's <c>BeforeStartEvent</c>: a hosted service would start only after Aspire's orchestrator
    /// has started every resource, the warm-up included, and miss what happens before); runs until the AppHost stops.
    /// </summary>
    public Task Start()
    {
        var stop = lifetime.ApplicationStopping;
        return Task.WhenAll(Task.Run(() => WatchExitsAsync(stop), CancellationToken.None), Task.Run(() => WatchLivenessAsync(stop), CancellationToken.None));
    }

    private async Task WatchExitsAsync(CancellationToken stop)
    {
        LogSupervising(supervision.Silos.Count);

        try
        {
            await foreach (var e in notifications.WatchAsync(stop))
            {
                string name = e.Resource.Name;
                if (!supervision.Silos.ContainsKey(name))
                {
                    continue;
                }

                string state = e.Snapshot.State?.Text ?? string.Empty;
                int? pid = e.Snapshot.Properties.FirstOrDefault(p => p.Name == "executable.pid")?.Value is { } value
                    && int.TryParse(value.ToString(), NumberStyles.Integer, CultureInfo.InvariantCulture, out int parsed) ? parsed : null;
                var previous = _last.GetValueOrDefault(name);
                long started = state == KnownResourceStates.Running && previous.State != KnownResourceStates.Running ? Stopwatch.GetTimestamp() : previous.StartedTicks;
                _last[name] = (state, pid ?? previous.Pid, started);
                if (state != previous.State)
                {
                    LogState(name, previous.State, state, e.Snapshot.ExitCode);
                }

                // A (re)start is over when the silo comes up as a new process; Running snapshots of the old one (health and
                // property updates) keep coming until Aspire sees it exit, and must not end it.
                if (state == KnownResourceStates.Running && (previous.State != KnownResourceStates.Running || (pid is not null && pid != previous.Pid)))
                {
                    _restarting.TryRemove(name, out _);
                }

                bool exited = state == KnownResourceStates.Exited || state == KnownResourceStates.Finished || state == KnownResourceStates.FailedToStart;
                if (!exited || previous.State != KnownResourceStates.Running || lifetime.ApplicationStopping.IsCancellationRequested)
                {
                    continue;
                }

                if (_stoppedByUser.ContainsKey(name))
                {
                    LogLeftStopped(name);
                    continue;
                }

                if (_restarting.ContainsKey(name))
                {
                    continue;
                }

                // Before anything else sees them exit: the expert silos go with the front-end and come back after it.
                var dependents = DependentsOf(name);
                dependents.ForEach(s => _restarting[s] = true);
                _ = RestartAsync(name, e.Snapshot.ExitCode, Stopwatch.GetElapsedTime(started), dependents, stop);
            }
        }
        catch (OperationCanceledException) when (stop.IsCancellationRequested)
        {
        }
    }

    /// <summary>
    /// The silos that cannot outlive <paramref name="silo"/>: with localhost clustering the membership table lived in the
    /// front-end, so the expert silos (but those the user stopped) are doomed when it exits.
    /// </summary>
    private List<string> DependentsOf(string silo) =>
        silo == supervision.Frontend && supervision.RestartExpertsWithFrontend
            ? [.. supervision.Silos.Keys.Where(s => s != silo && !_stoppedByUser.ContainsKey(s))]
            : [];

    private async Task RestartAsync(string name, int? exitCode, TimeSpan ranFor, List<string> dependents, CancellationToken stop)
    {
        var policy = _policies.GetOrAdd(name, _ => RestartPolicy.Default());
        TimeSpan? delay;
        lock (policy)
        {
            delay = policy.NextDelay(TimeSpan.FromTicks(Stopwatch.GetTimestamp() * TimeSpan.TicksPerSecond / Stopwatch.Frequency), ranFor);
        }

        if (delay is not { } wait)
        {
            LogCrashLoop(name, policy.Describe());
            dependents.ForEach(s => _restarting.TryRemove(s, out _));
            return;
        }

        LogRestarting(name, exitCode?.ToString(CultureInfo.InvariantCulture) ?? "?", ranFor.TotalSeconds, wait.TotalSeconds, policy.Restarts, policy.Describe());
        try
        {
            if (dependents.Count > 0)
            {
                // A graceful stop of a silo whose membership is gone only waits on it: kill them now, start them once the
                // new front-end answers (a silo that starts before its primary listens fails to join and exits).
                LogRestartingWithFrontend(string.Join(", ", dependents), name);
                foreach (string dependent in dependents)
                {
                    if (_last.GetValueOrDefault(dependent).Pid is int pid)
                    {
                        KillTree(pid);
                    }
                }
            }

            await Task.Delay(wait, stop);
            _restarting[name] = true;
            await commands.ExecuteCommandAsync(name, KnownResourceCommands.RestartCommand, stop);
            if (dependents.Count > 0)
            {
                await WaitUntilAliveAsync(supervision.Silos[name], stop);
                await Task.WhenAll(dependents.Select(s => StartAgainAsync(s, stop)));
            }
        }
        catch (OperationCanceledException) when (stop.IsCancellationRequested)
        {
        }
        catch (Exception ex) when (ex is InvalidOperationException or HttpRequestException)
        {
            LogRestartFailed(name, ex.Message);
        }
    }

    /// <summary>Starts a silo this supervisor killed, once Aspire has seen it exit (a restart if it still shows running after 5 s).</summary>
    private async Task StartAgainAsync(string silo, CancellationToken stop)
    {
        var clock = Stopwatch.StartNew();
        while (_last.GetValueOrDefault(silo).State == KnownResourceStates.Running && clock.Elapsed < TimeSpan.FromSeconds(5))
        {
            await Task.Delay(100, stop);
        }

        bool running = _last.GetValueOrDefault(silo).State == KnownResourceStates.Running;
        var result = await commands.ExecuteCommandAsync(silo, running ? KnownResourceCommands.RestartCommand : KnownResourceCommands.StartCommand, stop);
        if (!result.Success)
        {
            LogRestartFailed(silo, result.Message ?? "the command failed");
        }
    }

    /// <summary>
    /// Until <paramref name="alive"/> answers 2xx (at most 2 minutes). The silo listens before the web server does (its
    /// hosted service starts first), so an answer means a silo can join it.
    /// </summary>
    private static async Task WaitUntilAliveAsync(Uri alive, CancellationToken stop)
    {
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(2) };
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed < TimeSpan.FromMinutes(2) && !await AnswersAsync(http, alive, stop))
        {
            await Task.Delay(250, stop);
        }
    }

    /// <summary>Whether <paramref name="alive"/> answers 2xx within the client's timeout.</summary>
    private static async Task<bool> AnswersAsync(HttpClient http, Uri alive, CancellationToken stop)
    {
        try
        {
            using var response = await http.GetAsync(alive, stop);
            return response.IsSuccessStatusCode;
        }
        catch (Exception ex) when (ex is HttpRequestException or TaskCanceledException && !stop.IsCancellationRequested)
        {
            return false;
        }
    }

    private async Task WatchLivenessAsync(CancellationToken stop)
    {
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(2) };
        var lastAnswer = new Dictionary<string, long>(StringComparer.Ordinal);
        using var timer = new PeriodicTimer(TimeSpan.FromSeconds(1));
        try
        {
            while (await timer.WaitForNextTickAsync(stop))
            {
                foreach (var (name, alive) in supervision.Silos)
                {
                    var last = _last.GetValueOrDefault(name);
                    if (last.State != KnownResourceStates.Running || lifetime.ApplicationStopping.IsCancellationRequested)
                    {
                        lastAnswer.Remove(name);
                        continue;
                    }

                    bool answered = await AnswersAsync(http, alive, stop);

                    // The clock starts at the first answer after a (re)start: starting up is the health check's business.
                    long now = Stopwatch.GetTimestamp();
                    if (answered)
                    {
                        lastAnswer[name] = now;
                        continue;
                    }

                    if (!lastAnswer.TryGetValue(name, out long since))
                    {
                        continue;
                    }

                    if (Stopwatch.GetElapsedTime(since, now) >= LivenessTimeout && last.Pid is int pid)
                    {
                        LogHung(name, LivenessTimeout.TotalSeconds, pid);
                        KillTree(pid);
                        lastAnswer.Remove(name);
                    }
                }
            }
        }
        catch (OperationCanceledException) when (stop.IsCancellationRequested)
        {
        }
    }

    /// <summary>
    /// SIGKILL to the process and its descendants (Aspire runs a project as `dotnet run`, the silo its child); works on a
    /// stopped process too. Gone already is fine.
    /// </summary>
    private static void KillTree(int pid)
    {
        try
        {
            using var process = Process.GetProcessById(pid);
            process.Kill(entireProcessTree: true);
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or System.ComponentModel.Win32Exception or AggregateException)
        {
        }
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "supervising {Silos} silos: a silo that exits is restarted, one whose /alive stops answering is killed and restarted")]
    private partial void LogSupervising(int silos);

    [LoggerMessage(Level = LogLevel.Debug, Message = "{Silo}: {From} -> {To} (exit code {ExitCode})")]
    private partial void LogState(string silo, string? from, string to, int? exitCode);

    [LoggerMessage(Level = LogLevel.Warning, Message = "{Silo} exited (code {ExitCode}) after {RanSeconds:F1} s; restarting it in {DelaySeconds:F1} s (restart {Restart}, {Limit})")]
    private partial void LogRestarting(string silo, string exitCode, double ranSeconds, double delaySeconds, int restart, string limit);

    [LoggerMessage(Level = LogLevel.Warning, Message = "{Experts} must restart with {Frontend} (localhost clustering: the membership lived in it): killed now, started again once it answers")]
    private partial void LogRestartingWithFrontend(string experts, string frontend);

    [LoggerMessage(Level = LogLevel.Error, Message = "{Silo} keeps exiting ({Limit} reached): left stopped; its console log says why")]
    private partial void LogCrashLoop(string silo, string limit);

    [LoggerMessage(Level = LogLevel.Information, Message = "{Silo} was stopped from the dashboard: left stopped")]
    private partial void LogLeftStopped(string silo);

    [LoggerMessage(Level = LogLevel.Warning, Message = "{Silo} has not answered /alive for {Seconds:F0} s (hung): killing pid {Pid} and its children, so that it restarts")]
    private partial void LogHung(string silo, double seconds, int pid);

    [LoggerMessage(Level = LogLevel.Error, Message = "restarting {Silo} failed: {Reason}")]
    private partial void LogRestartFailed(string silo, string reason);
}
