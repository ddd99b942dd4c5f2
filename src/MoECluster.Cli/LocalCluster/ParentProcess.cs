using System.Diagnostics;
using System.Globalization;

namespace MoECluster.Cli.LocalCluster;

/// <summary>
/// The process that started this one and whose death must end it too: a launcher (<c>moecluster run</c>, the
/// AppHost) passes its id with <c>--parent-pid</c> or in the environment variable <see cref="EnvironmentVariable"/>.
/// </summary>
internal static class ParentProcess
{
    public const string EnvironmentVariable = "MOECLUSTER_PARENT_PID";

    /// <summary>The flag's value, else the environment variable's; null when neither is set.</summary>
    public static int? Resolve(int? flag)
    {
        if (flag is not null)
        {
            return flag;
        }

        string? text = Environment.GetEnvironmentVariable(EnvironmentVariable);
        if (string.IsNullOrWhiteSpace(text))
        {
            return null;
        }

        return int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out int pid) && pid > 0
            ? pid
            : throw new ArgumentException($"{EnvironmentVariable}={text} is not a process id");
    }

    /// <summary>How often a watchdog that cannot read /proc says so (the first failure is reported at once).</summary>
    public static readonly TimeSpan ProbeErrorInterval = TimeSpan.FromSeconds(30);

    /// <summary>
    /// Completes when process <paramref name="pid"/> has exited (at once if it is already gone), or throws when
    /// <paramref name="cancel"/> fires. On Linux it reads /proc every 250 ms: a parent that died but was not reaped yet
    /// (a zombie) counts as gone, and so does a new process that reused the id (another start time). Only "no such
    /// process" counts as gone: when /proc cannot be read for another reason (no file handle left: "too many open
    /// files", out of memory), the parent's state is unknown, so the watchdog keeps watching and reports the error to
    /// <paramref name="probeError"/> (the first, then at most once per <see cref="ProbeErrorInterval"/>).
    /// </summary>
    public static async Task WaitForExitAsync(int pid, CancellationToken cancel, Action<string>? probeError = null)
    {
        if (OperatingSystem.IsLinux())
        {
            string? started = null;
            long lastReport = 0;
            long failures = 0;
            while (true)
            {
                var probe = Probe(pid);
                if (probe.Gone || (started is not null && probe.StartTime is not null && probe.StartTime != started))
                {
                    return;
                }

                if (probe.StartTime is not null)
                {
                    started ??= probe.StartTime;
                }
                else
                {
                    failures++;
                    if (lastReport == 0 || Stopwatch.GetElapsedTime(lastReport) >= ProbeErrorInterval)
                    {
                        probeError?.Invoke(string.Create(CultureInfo.InvariantCulture,
                            $"cannot tell whether parent process {pid} is alive ({probe.Error}; {failures} failed reads so far); still watching"));
                        lastReport = Stopwatch.GetTimestamp();
                    }
                }

                await Task.Delay(250, cancel);
            }
        }

        Process parent;
        try
        {
            parent = Process.GetProcessById(pid);
        }
        catch (ArgumentException)
        {
            return;
        }

        using (parent)
        {
            try
            {
                await parent.WaitForExitAsync(cancel);
            }
            catch (InvalidOperationException)
            {
                // exited between the lookup and the wait
            }
        }
    }

    /// <summary>What /proc/PID/stat says: gone (no such process, or a zombie), its start time, or an error that says neither.</summary>
    internal readonly record struct ProcessProbe(bool Gone, string? StartTime, string? Error);

    internal static ProcessProbe Probe(int pid)
    {
        string directory = $"/proc/{pid.ToString(CultureInfo.InvariantCulture)}";
        string text;
        try
        {
            text = File.ReadAllText(directory + "/stat");
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            return new ProcessProbe(true, null, null);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // The read failed for another reason: ask stat(2), which needs no file handle, whether the process is there
            // (a process that exited between open and read fails with "no such process" and is gone by now).
            try
            {
                File.GetAttributes(directory);
                return new ProcessProbe(false, null, e.Message);
            }
            catch (Exception gone) when (gone is FileNotFoundException or DirectoryNotFoundException)
            {
                return new ProcessProbe(true, null, null);
            }
            catch (Exception other) when (other is IOException or UnauthorizedAccessException)
            {
                return new ProcessProbe(false, null, e.Message);
            }
        }

        // pid (comm) state ppid ... ; comm may hold spaces and parentheses: split after the last ')'.
        int close = text.LastIndexOf(')');
        string[] fields = close >= 0 && close + 2 < text.Length ? text[(close + 2)..].Split(' ') : [];
        if (fields.Length > 0 && fields[0] is "Z" or "X")
        {
            return new ProcessProbe(true, null, null);
        }

        return fields.Length > 19 ? new ProcessProbe(false, fields[19], null) : new ProcessProbe(false, null, "unexpected /proc/PID/stat format");
    }

    /// <summary>
    /// For a one-shot verb that does not observe cancellation: when the parent exits, this process exits too
    /// (with exit code 1, after <paramref name="grace"/>, killing itself if exiting hangs).
    /// </summary>
    public static void ExitWithParent(int pid, TextWriter error)
    {
        _ = Task.Run(async () =>
        {
            await WaitForExitAsync(pid, CancellationToken.None);
            error.WriteLine($"moecluster: parent process {pid} exited; stopping");
            _ = Task.Run(async () =>
            {
                await Task.Delay(TimeSpan.FromSeconds(5));
                using var self = Process.GetCurrentProcess();
                self.Kill();
            });
            Environment.Exit(CliApp.ExitFailure);
        });
    }
}
