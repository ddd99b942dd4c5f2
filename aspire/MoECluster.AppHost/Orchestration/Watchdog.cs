using System.Diagnostics;
using System.Globalization;

namespace MoECluster.AppHost.Orchestration;

/// <summary>
/// Stops a child that knows nothing of its parent (redis-server) when the launcher dies, even by SIGKILL: a small
/// <c>bash</c> process reads its standard input, a pipe whose only writer is the launcher. When the launcher exits for
/// any reason the kernel closes that pipe, <c>read</c> sees end-of-file, and the watchdog sends SIGTERM to the child,
/// then SIGKILL if it is still there 5 s later. The launcher kills the watchdog itself once the child has stopped.
/// </summary>
internal sealed class Watchdog : IDisposable
{
    /// <summary>$1: the pid to guard.</summary>
    internal const string Script = """
        while read -r _; do :; done
        kill -TERM "$1" 2>/dev/null || exit 0
        for _ in 1 2 3 4 5 6 7 8 9 10; do
          sleep 0.5
          kill -0 "$1" 2>/dev/null || exit 0
        done
        kill -KILL "$1" 2>/dev/null
        """;

    private readonly Process _process;
    private readonly Lock _gate = new();
    private bool _disposed;

    private Watchdog(Process process) => _process = process;

    public int Id => _process.Id;

    public bool HasExited => _process.HasExited;

    public static Watchdog Start(int target, string name, string? setsid)
    {
        var info = new ProcessStartInfo(setsid ?? "bash")
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        if (setsid is not null)
        {
            info.ArgumentList.Add("bash");
        }

        foreach (string a in new[] { "-c", Script, $"{name}-watchdog", target.ToString(CultureInfo.InvariantCulture) })
        {
            info.ArgumentList.Add(a);
        }

        var process = Process.Start(info) ?? throw new InvalidOperationException("could not start the watchdog (bash)");
        process.OutputDataReceived += (_, _) => { };
        process.ErrorDataReceived += (_, _) => { };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return new Watchdog(process);
    }

    /// <summary>What the launcher's death does: end-of-file on the watchdog's input (it then stops its child).</summary>
    internal void CloseInput() => _process.StandardInput.Close();

    /// <summary>
    /// Kills the watchdog and waits for it to be gone. Safe to call more than once and from several threads (the stop
    /// path and the monitor of the guarded child's exit both call it): concurrent disposals of one Process race on its
    /// input pipe, so callers take turns, and a caller that finds it already disposed returns only once it is gone.
    /// </summary>
    public void Dispose()
    {
        lock (_gate)
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
            try
            {
                if (!_process.HasExited)
                {
                    _process.Kill();
                }

                // SIGKILL is delivered asynchronously: wait until it is gone, so "stopped every process" holds when
                // the launcher says it.
                _process.WaitForExit(TimeSpan.FromSeconds(5));
            }
            catch (InvalidOperationException)
            {
            }

            _process.Dispose();
        }
    }
}
