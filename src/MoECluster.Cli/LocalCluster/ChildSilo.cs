using System.Diagnostics;

namespace MoECluster.Cli.LocalCluster;

/// <summary>
/// One <c>moecluster silo</c> child process, started from the same executable as this one, its output streamed
/// line by line with a name prefix. It is told our process id, so it stops by itself if we die.
/// </summary>
internal sealed class ChildSilo : IDisposable
{
    private readonly Process _process;
    private volatile bool _quiet;

    private ChildSilo(string name, Process process)
    {
        Name = name;
        _process = process;
    }

    /// <summary>Stops echoing the silo's output (used while the cluster shuts down: departures are expected then).</summary>
    public void Quiet() => _quiet = true;

    public string Name { get; }

    public bool HasExited => _process.HasExited;

    public int ExitCode => _process.ExitCode;

    public int Id => _process.Id;

    /// <summary>Completes when the process has exited (and its output has been read).</summary>
    public Task WaitForExitAsync(CancellationToken cancellationToken = default) => _process.WaitForExitAsync(cancellationToken);

    /// <summary>
    /// Starts a silo process; with <paramref name="cpus"/> (a taskset CPU list, e.g. "1") it runs under <c>taskset -c</c>,
    /// so that every thread it ever has runs on those cores and .NET sizes its thread pool and GEMM to them.
    /// </summary>
    public static ChildSilo Start(string name, IEnumerable<string> siloArguments, TextWriter log, bool echo, IReadOnlyDictionary<string, string>? environment = null, string? cpus = null)
    {
        string self = Environment.ProcessPath ?? "dotnet";
        var info = new ProcessStartInfo(cpus is null ? self : "taskset")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        if (cpus is not null)
        {
            info.ArgumentList.Add("-c");
            info.ArgumentList.Add(cpus);
            info.ArgumentList.Add(self);
        }

        if (IsDotnetHost(self))
        {
            info.ArgumentList.Add(typeof(ChildSilo).Assembly.Location);
        }

        foreach (var (variable, value) in environment ?? new Dictionary<string, string>())
        {
            info.Environment[variable] = value;
        }

        // The arguments start with the verb ("silo ...", SiloLaunch.Arguments).
        foreach (string a in siloArguments)
        {
            info.ArgumentList.Add(a);
        }

        info.ArgumentList.Add("--parent-pid");
        info.ArgumentList.Add(Environment.ProcessId.ToString(System.Globalization.CultureInfo.InvariantCulture));
        var process = new Process { StartInfo = info, EnableRaisingEvents = true };
        ChildSilo? silo = null;
        void Forward(object? _, DataReceivedEventArgs e)
        {
            if (e.Data is not null && silo?._quiet != true && (echo || e.Data.Contains("error", StringComparison.OrdinalIgnoreCase) || e.Data.Contains("fail", StringComparison.OrdinalIgnoreCase)))
            {
                lock (log)
                {
                    log.WriteLine($"[{name}] {e.Data}");
                }
            }
        }

        process.OutputDataReceived += Forward;
        process.ErrorDataReceived += Forward;
        if (!process.Start())
        {
            throw new InvalidOperationException($"could not start {info.FileName}");
        }

        silo = new ChildSilo(name, process);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return silo;
    }

    /// <summary>Asks the silo to stop (SIGTERM: a graceful Orleans shutdown), then kills it after the grace period.</summary>
    public async Task StopAsync(TimeSpan grace)
    {
        if (_process.HasExited)
        {
            return;
        }

        try
        {
            using (var kill = Process.Start(new ProcessStartInfo("kill", ["-TERM", _process.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)]) { UseShellExecute = false }))
            {
                kill?.WaitForExit();
            }

            using var timeout = new CancellationTokenSource(grace);
            await _process.WaitForExitAsync(timeout.Token);
        }
        catch (Exception e) when (e is OperationCanceledException or System.ComponentModel.Win32Exception or InvalidOperationException)
        {
            if (!_process.HasExited)
            {
                _process.Kill(entireProcessTree: true);
                await _process.WaitForExitAsync();
            }
        }
    }

    /// <summary>SIGKILL, without waiting.</summary>
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
            _process.Kill(entireProcessTree: true);
        }

        _process.Dispose();
    }

    private static bool IsDotnetHost(string path) =>
        string.Equals(Path.GetFileNameWithoutExtension(path), "dotnet", StringComparison.OrdinalIgnoreCase);
}
