using System.Diagnostics;
using System.Globalization;
using MoECluster.Cluster.Hosting;

namespace MoECluster.Cli.LocalCluster;

/// <summary>
/// A silo process of <c>moecluster run</c> under supervision: once the cluster is up, a silo that exits on its own
/// (killed, crashed, told by the cluster that it was declared dead, or a silo of localhost clustering whose primary
/// restarted) is started again with the same name, arguments and ports, after a backoff, and not again once it
/// crash-loops (<see cref="RestartPolicy"/>). A silo that stops answering its <c>/alive</c> for
/// <see cref="LivenessTimeout"/> (hung: stopped, deadlocked) is killed, and so restarted. Each restart is printed. A
/// stop asked for by the launcher is not restarted.
/// </summary>
internal sealed class SupervisedSilo(string name, string[] arguments, Uri alive, TextWriter log, TextWriter output, bool echo, IReadOnlyDictionary<string, string>? environment = null, string? cpus = null) : IDisposable
{
    /// <summary>How long a silo that answered <c>/alive</c> once may go without answering it before it is killed.</summary>
    public static readonly TimeSpan LivenessTimeout = TimeSpan.FromSeconds(10);

    private readonly RestartPolicy _policy = RestartPolicy.Default();
    private readonly CancellationTokenSource _stopping = new();
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private ChildSilo _current = ChildSilo.Start(name, arguments, log, echo, environment, cpus);
    private Task _supervision = Task.CompletedTask;
    private Task _liveness = Task.CompletedTask;

    public string Name { get; } = name;

    public ChildSilo Current => Volatile.Read(ref _current);

    public int Restarts => _policy.Restarts;

    /// <summary>Raised (on the supervision's thread) when the silo exited on its own, before it is restarted.</summary>
    public event Action<SupervisedSilo>? ExitedUnexpectedly;

    /// <summary>Kills the current process (SIGKILL); the supervision then restarts it like any other exit.</summary>
    public void Kill()
    {
        var child = Current;
        if (!child.HasExited)
        {
            child.Kill();
        }
    }

    /// <summary>Starts restarting the silo whenever it exits (from now on: an exit while the cluster starts is a failure).</summary>
    public void Supervise()
    {
        _supervision = Task.Run(SuperviseAsync);
        _liveness = Task.Run(WatchLivenessAsync);
    }

    public void Quiet() => Current.Quiet();

    /// <summary>No more restarts (the launcher stops the cluster: the exits that follow are expected).</summary>
    public async Task StopSupervisingAsync()
    {
        await _stopping.CancelAsync();
        try
        {
            await _supervision;
        }
        catch (OperationCanceledException)
        {
        }

        try
        {
            await _liveness;
        }
        catch (OperationCanceledException)
        {
        }
    }

    public async Task StopAsync(TimeSpan grace)
    {
        await StopSupervisingAsync();
        await Current.StopAsync(grace);
    }

    public void Dispose()
    {
        _stopping.Cancel();
        Current.Dispose();
        _stopping.Dispose();
    }

    private async Task SuperviseAsync()
    {
        var token = _stopping.Token;
        while (!token.IsCancellationRequested)
        {
            var child = Current;
            var started = _clock.Elapsed;
            await child.WaitForExitAsync(token);
            var ranFor = _clock.Elapsed - started;
            ExitedUnexpectedly?.Invoke(this);
            if (_policy.NextDelay(_clock.Elapsed, ranFor) is not { } delay)
            {
                Write($"{Name} (pid {child.Id}) exited with code {child.ExitCode}: restarted {_policy.Restarts} times already, {_policy.Describe()}; not restarting it again (crash loop, see its log above). Ctrl+C stops the rest.");
                return;
            }

            Write(string.Create(CultureInfo.InvariantCulture,
                $"{Name} (pid {child.Id}) exited with code {child.ExitCode} after {ranFor.TotalSeconds:F1} s; restarting it in {delay.TotalSeconds:F1} s (restart {_policy.Restarts}, {_policy.Describe()})"));
            await Task.Delay(delay, token);
            child.Dispose();
            ChildSilo next;
            try
            {
                next = ChildSilo.Start(Name, arguments, log, echo, environment, cpus);
            }
            catch (Exception e) when (e is InvalidOperationException or System.ComponentModel.Win32Exception)
            {
                Write($"could not restart {Name}: {e.Message}");
                return;
            }

            Volatile.Write(ref _current, next);
            Write($"restarted {Name}: pid {next.Id}");
        }
    }

    /// <summary>
    /// Probes <c>/alive</c> every second (3 s timeout). Armed once the current process has answered (a silo that is
    /// starting is left alone); a process that then answers nothing for <see cref="LivenessTimeout"/> is killed.
    /// </summary>
    private async Task WatchLivenessAsync()
    {
        var token = _stopping.Token;
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(3) };
        int pid = -1;
        long? lastAnswer = null;
        while (!token.IsCancellationRequested)
        {
            await Task.Delay(TimeSpan.FromSeconds(1), token);
            var child = Current;
            if (child.Id != pid)
            {
                (pid, lastAnswer) = (child.Id, null);
            }

            if (child.HasExited)
            {
                continue;
            }

            try
            {
                using var response = await http.GetAsync(alive, token);
                if (response.IsSuccessStatusCode)
                {
                    lastAnswer = Stopwatch.GetTimestamp();
                    continue;
                }
            }
            catch (Exception e) when (e is HttpRequestException || (e is TaskCanceledException && !token.IsCancellationRequested))
            {
            }

            if (lastAnswer is long last && Stopwatch.GetElapsedTime(last) > LivenessTimeout)
            {
                Write(string.Create(CultureInfo.InvariantCulture,
                    $"{Name} (pid {child.Id}) has not answered {alive} for {Stopwatch.GetElapsedTime(last).TotalSeconds:F0} s (hung): killing it"));
                child.Kill();
                lastAnswer = null;
            }
        }
    }

    private void Write(string line)
    {
        lock (output)
        {
            output.WriteLine(line);
        }
    }
}
