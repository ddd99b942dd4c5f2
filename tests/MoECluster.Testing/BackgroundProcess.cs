using System.Diagnostics;
using System.Text;

namespace MoECluster.Testing;

/// <summary>A long-running child process (a silo, a cluster) whose output is collected; killed on dispose.</summary>
public sealed class BackgroundProcess : IDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _output = new();

    private BackgroundProcess(Process process) => _process = process;

    public int Id => _process.Id;

    /// <summary>A field of the process's /proc/PID/status, in KiB (VmRSS, VmHWM).</summary>
    public long StatusKiB(string field)
    {
        string path = $"/proc/{Id.ToString(System.Globalization.CultureInfo.InvariantCulture)}/status";
        foreach (string line in File.ReadLines(path))
        {
            if (line.StartsWith(field + ":", StringComparison.Ordinal))
            {
                return long.Parse(line[(field.Length + 1)..].Trim().Split(' ')[0], System.Globalization.CultureInfo.InvariantCulture);
            }
        }

        throw new InvalidOperationException($"no {field} in {path}");
    }

    public bool HasExited => _process.HasExited;

    /// <summary>The exit code, once <see cref="WaitForExit"/> returned true.</summary>
    public int ExitCode => _process.ExitCode;

    /// <summary>Waits for the process to exit (and its output to be read); false if it is still running after <paramref name="timeout"/>.</summary>
    public bool WaitForExit(TimeSpan timeout)
    {
        if (!_process.WaitForExit(timeout))
        {
            return false;
        }

        _process.WaitForExit();
        return true;
    }

    public string Output
    {
        get
        {
            lock (_output)
            {
                return _output.ToString();
            }
        }
    }

    /// <summary>Starts <c>dotnet moecluster.dll args…</c>.</summary>
    public static BackgroundProcess Moecluster(params string[] args) => Start("dotnet", [ChildProcess.CliDll, .. args]);

    /// <summary>Starts <c>dotnet moecluster.dll args…</c> with extra environment variables (any MoECluster__Tls__ key among them replaces the test run's TLS material).</summary>
    public static BackgroundProcess Moecluster(IReadOnlyDictionary<string, string> environment, params string[] args) =>
        Start("dotnet", [ChildProcess.CliDll, .. args], environment);

    public static BackgroundProcess Start(string program, IEnumerable<string> args, IReadOnlyDictionary<string, string>? environment = null)
    {
        var info = new ProcessStartInfo(program) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (string a in args)
        {
            info.ArgumentList.Add(a);
        }

        // Silos started by tests form a mutual-TLS cluster with the test run's certificates, unless the test sets
        // MoECluster__Tls__* itself (variables pass through `env` and `ip netns exec` to the silo).
        foreach (var (name, value) in TestTls.WithClusterTls(environment))
        {
            info.Environment[name] = value;
        }

        var process = new Process { StartInfo = info };
        var result = new BackgroundProcess(process);
        void Collect(object? _, DataReceivedEventArgs e)
        {
            if (e.Data is not null)
            {
                lock (result._output)
                {
                    result._output.AppendLine(e.Data);
                }
            }
        }

        process.OutputDataReceived += Collect;
        process.ErrorDataReceived += Collect;
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return result;
    }

    /// <summary>Waits until <paramref name="text"/> appears in the output (or the process exits, or time runs out).</summary>
    public async Task<bool> WaitForOutputAsync(string text, TimeSpan timeout)
    {
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed < timeout)
        {
            if (Output.Contains(text, StringComparison.Ordinal))
            {
                return true;
            }

            if (_process.HasExited)
            {
                await Task.Delay(100);
                return Output.Contains(text, StringComparison.Ordinal);
            }

            await Task.Delay(100);
        }

        return false;
    }

    /// <summary>SIGTERM (a graceful stop), then a kill after <paramref name="grace"/>. Returns whether it stopped by itself.</summary>
    public bool Stop(TimeSpan grace)
    {
        if (_process.HasExited)
        {
            return true;
        }

        using (var kill = Process.Start(new ProcessStartInfo("kill", ["-TERM", _process.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)]) { UseShellExecute = false }))
        {
            kill?.WaitForExit();
        }

        if (_process.WaitForExit(grace))
        {
            return true;
        }

        _process.Kill(entireProcessTree: true);
        _process.WaitForExit();
        return false;
    }

    public void Dispose()
    {
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: true);
            _process.WaitForExit(5000);
        }

        _process.Dispose();
    }

    /// <summary>Whether a process with this id is still alive (not a zombie).</summary>
    public static bool IsAlive(int pid)
    {
        string stat = $"/proc/{pid}/stat";
        if (!File.Exists(stat))
        {
            return false;
        }

        try
        {
            string text = File.ReadAllText(stat);
            int close = text.LastIndexOf(')');
            return close < 0 || close + 2 >= text.Length || text[close + 2] != 'Z';
        }
        catch (IOException)
        {
            return false;
        }
    }
}
