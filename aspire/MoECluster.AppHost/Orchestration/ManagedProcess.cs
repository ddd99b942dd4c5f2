using System.Diagnostics;
using System.Globalization;
using MoECluster.AppHost.Model;

namespace MoECluster.AppHost.Orchestration;

/// <summary>
/// One child process of the launcher: started in a session of its own (<c>setsid</c>, when present, so a Ctrl+C in
/// the terminal reaches the launcher alone and the launcher stops the children in order), its output streamed with a
/// prefix, its last lines kept for error messages, stopped with SIGTERM and then killed after a grace period.
/// </summary>
internal sealed class ManagedProcess : IDisposable
{
    private const int KeptLines = 20;
    private readonly Process _process;
    private readonly Queue<string> _lastLines = new();
    private readonly Task<int> _exited;
    private volatile bool _quiet;

    private ManagedProcess(string name, Process process)
    {
        Name = name;
        _process = process;
        _exited = WaitAsync();
    }

    public string Name { get; }

    public int Id => _process.Id;

    public bool HasExited => _exited.IsCompleted;

    /// <summary>Completes with the exit code once the process has exited and its output has been read to the end.</summary>
    public Task<int> Exited => _exited;

    /// <summary>A watchdog that kills this process if the launcher dies (programs that know nothing of their parent).</summary>
    public Watchdog? Watchdog { get; private set; }

    /// <summary>Stops echoing the output (it is still kept for error messages).</summary>
    public void Quiet() => _quiet = true;

    public IReadOnlyList<string> LastLines()
    {
        lock (_lastLines)
        {
            return [.. _lastLines];
        }
    }

    public static ManagedProcess Start(ResourceInstance instance, LauncherConsole console, int colorIndex, string? setsid, bool withWatchdog)
    {
        var info = new ProcessStartInfo(setsid ?? instance.FileName!)
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = Environment.CurrentDirectory,
        };
        if (setsid is not null)
        {
            info.ArgumentList.Add(instance.FileName!);
        }

        foreach (string a in instance.Arguments)
        {
            info.ArgumentList.Add(a);
        }

        foreach (var (key, value) in instance.Environment)
        {
            info.Environment[key] = value;
        }

        var process = new Process { StartInfo = info, EnableRaisingEvents = true };
        ManagedProcess? managed = null;
        var early = new List<string>();
        void Forward(object? sender, DataReceivedEventArgs e)
        {
            if (e.Data is null)
            {
                return;
            }

            // Lines that arrive before the ManagedProcess exists are kept in `early`, which it takes over under the
            // same lock: no line is lost between the two.
            ManagedProcess? target;
            lock (early)
            {
                target = managed;
                if (target is null)
                {
                    early.Add(e.Data);
                }
            }

            if (target?._quiet != true)
            {
                console.ChildLine(instance.Name, colorIndex, e.Data);
            }

            target?.Keep(e.Data);
        }

        process.OutputDataReceived += Forward;
        process.ErrorDataReceived += Forward;
        try
        {
            process.Start();
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            process.Dispose();
            throw new ResourceFailedException(instance.Name, $"could not start {info.FileName}: {e.Message}", []);
        }

        // Nothing is written to the children's input; closing it now gives them end-of-file, as from /dev/null.
        process.StandardInput.Close();

        // Reading starts before the exit is awaited: Process.WaitForExitAsync waits for the output to be read to the
        // end only if asynchronous reading has begun, so a child that exits at once would otherwise be reported
        // before its last lines were read (seen in CI: "job exited with code 1" without its "disk full").
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        lock (early)
        {
            managed = new ManagedProcess(instance.Name, process);
            early.ForEach(managed.Keep);
        }
        if (withWatchdog)
        {
            managed.Watchdog = Watchdog.Start(process.Id, instance.Name, setsid);
        }

        return managed;
    }

    /// <summary>SIGTERM, then a kill of the whole process tree after <paramref name="grace"/> (or at once when <paramref name="force"/> fires). Returns whether it stopped by itself.</summary>
    public async Task<bool> StopAsync(TimeSpan grace, CancellationToken force)
    {
        bool graceful = true;
        if (!HasExited)
        {
            Signal(_process.Id, "TERM");
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(force);
            timeout.CancelAfter(grace);
            try
            {
                await _exited.WaitAsync(timeout.Token);
            }
            catch (OperationCanceledException)
            {
                graceful = false;
                Kill();
                await _exited;
            }
        }

        Watchdog?.Dispose();
        return graceful;
    }

    public void Kill()
    {
        try
        {
            _process.Kill(entireProcessTree: true);
        }
        catch (InvalidOperationException)
        {
            // already exited
        }
    }

    public void Dispose()
    {
        if (!_process.HasExited)
        {
            Kill();
        }

        Watchdog?.Dispose();
        _process.Dispose();
    }

    /// <summary>Sends a signal with the <c>kill</c> command (the runtime itself only sends SIGKILL).</summary>
    public static void Signal(int pid, string signal)
    {
        try
        {
            using var kill = Process.Start(new ProcessStartInfo("kill", [$"-{signal}", pid.ToString(CultureInfo.InvariantCulture)])
            {
                UseShellExecute = false,
                RedirectStandardError = true,
            });
            kill?.WaitForExit();
        }
        catch (System.ComponentModel.Win32Exception)
        {
            // no kill command: the caller falls back to killing after the grace period
        }
    }

    private void Keep(string line)
    {
        lock (_lastLines)
        {
            _lastLines.Enqueue(line);
            while (_lastLines.Count > KeptLines)
            {
                _lastLines.Dequeue();
            }
        }
    }

    private async Task<int> WaitAsync()
    {
        await _process.WaitForExitAsync();
        return _process.ExitCode;
    }
}

/// <summary>A resource failed to start, exited, or did not become healthy: the message names it; its last log lines come along.</summary>
internal sealed class ResourceFailedException(string resource, string message, IReadOnlyList<string> lastLines) : Exception(message)
{
    public string Resource { get; } = resource;

    public IReadOnlyList<string> LastLines { get; } = lastLines;
}
