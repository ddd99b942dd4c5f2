using System.Diagnostics;
using System.Globalization;
using MoECluster.AppHost.Model;
using MoECluster.Cluster.Hosting;

namespace MoECluster.AppHost.Orchestration;

/// <summary>
/// Runs a <see cref="DistributedApplicationModel"/>: starts each resource once what it waits for is healthy (or
/// completed), probes health, prints progress, a summary when everything is up, and stops everything in reverse
/// order (a resource stops before what it waits for or references) when asked to, or when something fails.
/// </summary>
internal sealed class Orchestrator(DistributedApplicationModel model, LauncherConsole console) : IDisposable
{
    private static readonly TimeSpan ProgressEvery = TimeSpan.FromSeconds(15);
    private readonly Dictionary<IResource, ResourceState> _states = model.Resources.ToDictionary<IResource, IResource, ResourceState>(r => r, _ => new ResourceState(), ReferenceEqualityComparer.Instance);
    private readonly Dictionary<ResourceInstance, int> _colors = model.Instances.Select((i, n) => (i, n)).ToDictionary(p => p.i, p => p.n);
    private readonly HttpClient _http = new() { Timeout = Timeout.InfiniteTimeSpan };
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private readonly string? _setsid = ExecutableLocator.Find("setsid");
    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, int> _restarts = new(StringComparer.Ordinal);
    private readonly Lock _restartGate = new();
    private ResourceFailedException? _failure;
    private CancellationTokenSource? _startup;
    private volatile bool _ready;
    private volatile bool _stopping;

    /// <summary>
    /// Starts everything, serves until <paramref name="stopRequested"/> fires, stops everything. Exit code 0 after a
    /// requested stop, 1 when a resource failed while starting. <paramref name="forceStop"/> cuts the stop's grace short.
    /// </summary>
    public async Task<int> RunAsync(CancellationToken stopRequested, CancellationToken forceStop)
    {
        int exitCode = 0;
        using (_startup = CancellationTokenSource.CreateLinkedTokenSource(stopRequested))
        {
            try
            {
                await Task.WhenAll(model.StartOrder.Select(r => StartAsync(r, _startup.Token)));
                if (_failure is not null)
                {
                    ReportFailure(_failure);
                    exitCode = 1;
                }
                else if (!stopRequested.IsCancellationRequested)
                {
                    _ready = true;
                    PrintSummary();
                    try
                    {
                        await Task.Delay(Timeout.Infinite, stopRequested);
                    }
                    catch (OperationCanceledException)
                    {
                    }
                }
                else
                {
                    console.Info("stop requested while starting");
                }
            }
            finally
            {
                await StopAllAsync(forceStop);
            }
        }

        return exitCode;
    }

    public void Dispose()
    {
        foreach (var process in _states.Values.SelectMany(s => s.Processes))
        {
            process.Dispose();
        }

        _http.Dispose();
    }

    private async Task StartAsync(IResource resource, CancellationToken cancel)
    {
        var state = _states[resource];
        try
        {
            foreach (var wait in DistributedApplicationModel.WaitsOf(resource))
            {
                var target = _states[wait.Resource];
                var task = wait.WaitType == WaitType.UntilCompleted ? target.Completed.Task : target.Healthy.Task;
                if (!task.IsCompleted)
                {
                    console.Info($"{resource.Name} waits for {wait.Resource.Name} to {(wait.WaitType == WaitType.UntilCompleted ? "complete" : "be healthy")}");
                }

                await task.WaitAsync(cancel);
            }

            // A resource without a process (an Orleans cluster) is ready once what it references is healthy; a
            // resource that references one starts after that.
            bool hasNoProcess = resource is not (IProcessResource or TaskResource);
            foreach (var dependency in model.DependenciesOf(resource).Where(d => hasNoProcess || d is not (IProcessResource or TaskResource)))
            {
                await _states[dependency].Healthy.Task.WaitAsync(cancel);
            }

            switch (resource)
            {
                case TaskResource task:
                    await RunTaskAsync(task, state, cancel);
                    break;
                case IProcessResource process:
                    await RunProcessesAsync(process, state, cancel);
                    break;
                default:
                    break;
            }

            state.Healthy.TrySetResult();
            state.Completed.TrySetResult();
        }
        catch (OperationCanceledException) when (cancel.IsCancellationRequested)
        {
            state.Healthy.TrySetCanceled(cancel);
            state.Completed.TrySetCanceled(cancel);
        }
        catch (Exception e)
        {
            // Anything else that goes wrong while starting a resource ends the launch with a message naming it.
            Fail(e as ResourceFailedException ?? new ResourceFailedException(resource.Name, $"{resource.Name}: {e.Message.ReplaceLineEndings(" ")}", []));
            state.Healthy.TrySetCanceled(cancel);
            state.Completed.TrySetCanceled(cancel);
        }
    }

    private async Task RunTaskAsync(TaskResource task, ResourceState state, CancellationToken cancel)
    {
        var clock = Stopwatch.StartNew();
        console.Info($"running {task.Name}");
        try
        {
            state.Summary = await task.Run(new TaskContext(model, line => console.Info($"{task.Name}: {line}"), model.Settings.StartupTimeout), cancel);
        }
        catch (OperationCanceledException) when (cancel.IsCancellationRequested)
        {
            throw;
        }
        catch (Exception e) when (e is not ResourceFailedException)
        {
            // Whatever a task throws ends the launch with its message.
            throw new ResourceFailedException(task.Name, $"{task.Name} failed: {e.Message.ReplaceLineEndings(" ")}", []);
        }

        console.Info(string.Create(CultureInfo.InvariantCulture, $"{task.Name} completed in {clock.Elapsed.TotalSeconds:F1} s{(state.Summary is null ? "" : $": {state.Summary}")}"));
    }

    private async Task RunProcessesAsync(IProcessResource resource, ResourceState state, CancellationToken cancel)
    {
        bool oneShot = model.IsOneShot(resource);
        var instances = model.InstancesOf(resource);
        var clock = Stopwatch.StartNew();
        var started = new List<(ResourceInstance Instance, ManagedProcess Process)>();
        foreach (var instance in instances)
        {
            cancel.ThrowIfCancellationRequested();
            if (Preflight.BusyPorts(instance).FirstOrDefault() is string busy)
            {
                throw new ResourceFailedException(instance.Name, $"{busy} (it was free when the launcher started)", []);
            }

            var process = ManagedProcess.Start(instance, console, _colors[instance], _setsid, withWatchdog: !resource.StopsWithParent());
            lock (state.Processes)
            {
                state.Processes.Add(process);
            }

            started.Add((instance, process));
            console.Info($"started {instance.Name} (pid {process.Id}{(process.Watchdog is { } w ? $", watchdog pid {w.Id}" : "")}): {Path.GetFileName(instance.FileName)} {string.Join(' ', instance.Arguments.Select(Quote))}");
            if (!oneShot)
            {
                _ = MonitorAsync(instance, process);
            }
        }

        if (oneShot)
        {
            foreach (var (instance, process) in started)
            {
                int code = await process.Exited.WaitAsync(cancel);
                if (code != 0)
                {
                    throw new ResourceFailedException(instance.Name, $"{instance.Name} exited with code {code}", process.LastLines());
                }
            }

            console.Info(string.Create(CultureInfo.InvariantCulture, $"{resource.Name} completed in {clock.Elapsed.TotalSeconds:F1} s"));
            return;
        }

        await Task.WhenAll(started.Select(s => WaitHealthyAsync(s.Instance, s.Process, cancel)));
    }

    private async Task WaitHealthyAsync(ResourceInstance instance, ManagedProcess process, CancellationToken cancel)
    {
        if (!HealthProbes.HasChecks(instance.Resource))
        {
            return;
        }

        var probes = new HealthProbes(_http);
        var clock = Stopwatch.StartNew();
        var nextProgress = ProgressEvery;
        console.Info($"waiting for {instance.Name} ({HealthProbes.Describe(instance)})");
        while (true)
        {
            if (process.HasExited)
            {
                throw new ResourceFailedException(instance.Name, $"{instance.Name} exited with code {await process.Exited} before it became healthy", process.LastLines());
            }

            var result = await probes.CheckAsync(instance, cancel);
            if (result.IsHealthy)
            {
                console.Info(string.Create(CultureInfo.InvariantCulture, $"{instance.Name} is healthy ({clock.Elapsed.TotalSeconds:F1} s)"));
                return;
            }

            if (clock.Elapsed > model.Settings.StartupTimeout)
            {
                throw new ResourceFailedException(instance.Name,
                    string.Create(CultureInfo.InvariantCulture, $"{instance.Name} did not become healthy within {model.Settings.StartupTimeout.TotalSeconds:F0} s (last answer: {result.Detail})"),
                    process.LastLines());
            }

            if (clock.Elapsed > nextProgress)
            {
                nextProgress += ProgressEvery;
                console.Info(string.Create(CultureInfo.InvariantCulture, $"still waiting for {instance.Name} ({clock.Elapsed.TotalSeconds:F0} s; {result.Detail})"));
            }

            await Task.Delay(250, cancel);
        }
    }

    /// <summary>
    /// A long-running process exited: while starting, that ends the launch; once ready, it is restarted (same instance:
    /// name, arguments, ports, environment) after a backoff, and the resources that must restart with it are restarted
    /// too (<see cref="RestartWithAnnotation"/>); a process that crash-loops (<see cref="RestartPolicy"/>) is reported and
    /// left stopped. A stop the launcher asked for is never restarted.
    /// </summary>
    private async Task MonitorAsync(ResourceInstance instance, ManagedProcess process)
    {
        var policy = RestartPolicy.Default();
        var state = _states[instance.Resource];
        while (true)
        {
            var started = _clock.Elapsed;
            _ = WatchLivenessAsync(instance, process);
            int code = await process.Exited;
            process.Watchdog?.Dispose();
            if (_stopping)
            {
                return;
            }

            var failure = new ResourceFailedException(instance.Name, $"{instance.Name} exited with code {code}", process.LastLines());
            if (!_ready)
            {
                Fail(failure);
                return;
            }

            var ranFor = _clock.Elapsed - started;
            if (policy.NextDelay(_clock.Elapsed, ranFor) is not { } delay)
            {
                ReportFailure(failure);
                console.Error($"{instance.Name} was restarted {policy.Restarts} times, {policy.Describe()}: not restarting it again (crash loop); the other resources keep running; Ctrl+C stops them");
                return;
            }

            console.Error(string.Create(CultureInfo.InvariantCulture,
                $"{instance.Name} (pid {process.Id}) exited with code {code} after {ranFor.TotalSeconds:F1} s; restarting it in {delay.TotalSeconds:F1} s (restart {policy.Restarts}, {policy.Describe()})"));
            RestartDependentsOf(instance);
            await Task.Delay(delay);
            ManagedProcess next;
            lock (_restartGate)
            {
                if (_stopping)
                {
                    return;
                }

                try
                {
                    next = ManagedProcess.Start(instance, console, _colors[instance], _setsid, withWatchdog: !((IProcessResource)instance.Resource).StopsWithParent());
                }
                catch (ResourceFailedException e)
                {
                    ReportFailure(e);
                    return;
                }

                lock (state.Processes)
                {
                    state.Processes[state.Processes.IndexOf(process)] = next;
                }

                _restarts[instance.Name] = policy.Restarts;
            }

            process.Dispose();
            process = next;
            console.Info($"restarted {instance.Name}:");
            console.Info(SummaryLine(instance));
        }
    }

    /// <summary>
    /// Once the application is ready and <paramref name="process"/> has passed its liveness check
    /// (<see cref="LivenessAnnotation"/>), checks it every second; one that fails it for the annotation's timeout is hung
    /// and is killed (the exit monitor restarts it).
    /// </summary>
    private async Task WatchLivenessAsync(ResourceInstance instance, ManagedProcess process)
    {
        if (instance.Resource.Annotations.OfType<LivenessAnnotation>().FirstOrDefault() is not { } liveness)
        {
            return;
        }

        long? lastAlive = null;
        while (!process.HasExited && !_stopping)
        {
            await Task.WhenAny(process.Exited, Task.Delay(TimeSpan.FromSeconds(1)));
            if (!_ready || process.HasExited || _stopping)
            {
                continue;
            }

            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(5));
            bool alive;
            try
            {
                alive = await liveness.IsAlive(instance, timeout.Token);
            }
            catch (OperationCanceledException)
            {
                alive = false;
            }

            if (alive)
            {
                lastAlive = Stopwatch.GetTimestamp();
            }
            else if (lastAlive is long last && Stopwatch.GetElapsedTime(last) > liveness.Timeout && !process.HasExited && !_stopping)
            {
                console.Error(string.Create(CultureInfo.InvariantCulture,
                    $"{instance.Name} (pid {process.Id}) has not answered {liveness.Describe(instance)} for {Stopwatch.GetElapsedTime(last).TotalSeconds:F0} s (hung): killing it"));
                process.Kill();
                return;
            }
        }
    }

    /// <summary>Kills the processes of every resource that must restart with <paramref name="instance"/>'s (their own supervision restarts them).</summary>
    private void RestartDependentsOf(ResourceInstance instance)
    {
        foreach (var dependent in model.Resources.Where(r => r.Annotations.OfType<RestartWithAnnotation>().Any(a => ReferenceEquals(a.Resource, instance.Resource))))
        {
            List<ManagedProcess> running;
            lock (_states[dependent].Processes)
            {
                running = [.. _states[dependent].Processes.Where(p => !p.HasExited)];
            }

            if (running.Count > 0)
            {
                console.Info($"{string.Join(", ", running.Select(p => p.Name))} must restart with {instance.Name}: restarting them");
                running.ForEach(p => p.Kill());
            }
        }
    }

    private void Fail(ResourceFailedException failure)
    {
        if (Interlocked.CompareExchange(ref _failure, failure, null) is null)
        {
            try
            {
                _startup?.Cancel();
            }
            catch (ObjectDisposedException)
            {
            }
        }
    }

    private void ReportFailure(ResourceFailedException failure)
    {
        console.Error($"error: {failure.Message}");
        if (failure.LastLines.Count > 0)
        {
            console.Error($"last lines of {failure.Resource}:");
            foreach (string line in failure.LastLines)
            {
                console.Error($"  {line}");
            }
        }
    }

    /// <summary>One resource's line of the listing: status, pid, restarts, endpoints.</summary>
    private string SummaryLine(ResourceInstance instance)
    {
        var state = _states[instance.Resource];
        ManagedProcess? process;
        lock (state.Processes)
        {
            process = state.Processes.FirstOrDefault(p => p.Name == instance.Name);
        }

        string status = process is null ? "completed"
            : !process.HasExited ? "running"
            : model.IsOneShot(instance.Resource) && process.Exited.Result == 0 ? "completed"
            : $"exited ({process.Exited.Result})";
        string pid = process is null ? "" : $"pid {process.Id}{(process.Watchdog is { } w ? $" (watchdog {w.Id})" : "")}";
        var where = instance.Endpoints.Values.Select(e => e.Scheme is "http" or "https" ? e.Address : $"{e.Name} {e.HostAndPort}").ToList();
        if (process is null && state.Summary is not null)
        {
            where.Add(state.Summary);
        }

        if (_restarts.TryGetValue(instance.Name, out int restarts))
        {
            where.Insert(0, string.Create(CultureInfo.InvariantCulture, $"restarts {restarts}"));
        }

        return $"  {instance.Name,-10} {status,-10} {pid,-26} {string.Join("  ", where)}".TrimEnd();
    }

    private void PrintSummary()
    {
        console.Info("");
        console.Info("resources:");
        foreach (var instance in model.Instances)
        {
            console.Info(SummaryLine(instance));
        }

        var lines = new List<(string Label, string Text)>();
        foreach (var instance in model.Instances)
        {
            foreach (var a in instance.Resource.Annotations)
            {
                if (a is UrlAnnotation url)
                {
                    lines.Add((url.DisplayText, instance.Endpoint(url.EndpointName).Address + url.Path));
                }
                else if (a is HintAnnotation hint)
                {
                    lines.Add((hint.DisplayText, hint.Text(instance)));
                }
            }
        }

        if (lines.Count > 0)
        {
            console.Info("");
            int width = lines.Max(l => l.Label.Length);
            foreach (var (label, text) in lines)
            {
                console.Info($"  {label.PadRight(width)}  {text}");
            }
        }

        console.Info("");
        console.Info(string.Create(CultureInfo.InvariantCulture, $"ready in {_clock.Elapsed.TotalSeconds:F1} s: {model.Instances.Count} resources. Ctrl+C stops every process."));
    }

    /// <summary>Stops each resource after everything that waits for it or references it has stopped.</summary>
    private async Task StopAllAsync(CancellationToken force)
    {
        lock (_restartGate)
        {
            _stopping = true;
        }

        if (!_states.Values.Any(s => s.Processes.Any(p => !p.HasExited)))
        {
            return;
        }

        var clock = Stopwatch.StartNew();
        console.Info("stopping every process (their output is no longer shown)");
        foreach (var process in _states.Values.SelectMany(s => s.Processes))
        {
            process.Quiet();
        }

        var tasks = new Dictionary<IResource, Task>(ReferenceEqualityComparer.Instance);
        Task Stop(IResource resource)
        {
            lock (tasks)
            {
                if (!tasks.TryGetValue(resource, out var task))
                {
                    task = StopOneAsync(resource, Stop, force);
                    tasks[resource] = task;
                }

                return task;
            }
        }

        await Task.WhenAll(model.Resources.Select(Stop));
        console.Info(string.Create(CultureInfo.InvariantCulture, $"stopped every process in {clock.Elapsed.TotalSeconds:F1} s"));
    }

    private async Task StopOneAsync(IResource resource, Func<IResource, Task> stop, CancellationToken force)
    {
        await Task.WhenAll(model.DependentsOf(resource).Select(stop));
        List<ManagedProcess> running;
        lock (_states[resource].Processes)
        {
            running = [.. _states[resource].Processes.Where(p => !p.HasExited)];
        }

        if (running.Count == 0)
        {
            return;
        }

        console.Info($"stopping {string.Join(", ", running.Select(p => p.Name))}");
        bool[] graceful = await Task.WhenAll(running.Select(p => p.StopAsync(model.Settings.StopGrace, force)));
        foreach (var (process, ok) in running.Zip(graceful))
        {
            if (!ok)
            {
                console.Info(string.Create(CultureInfo.InvariantCulture, $"{process.Name} did not stop within {model.Settings.StopGrace.TotalSeconds:F0} s of SIGTERM: killed"));
            }
        }
    }

    private static string Quote(string arg) => arg.Length > 0 && arg.All(c => char.IsAsciiLetterOrDigit(c) || "-_./=:,".Contains(c, StringComparison.Ordinal)) ? arg : $"'{arg}'";

    private sealed class ResourceState
    {
        public TaskCompletionSource Healthy { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public TaskCompletionSource Completed { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public List<ManagedProcess> Processes { get; } = [];

        public string? Summary { get; set; }
    }
}
