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

    /// <summary>
    /// Completes when process <paramref name="pid"/> has exited (at once if it is already gone), or throws when
    /// <paramref name="cancel"/> fires. On Linux it reads /proc every 250 ms: a parent that died but was not reaped yet
    /// (a zombie) counts as gone, and so does a new process that reused the id (another start time).
    /// </summary>
    public static async Task WaitForExitAsync(int pid, CancellationToken cancel)
    {
        if (OperatingSystem.IsLinux())
        {
            string? started = StartTime(pid);
            while (started is not null && StartTime(pid) == started)
            {
                await Task.Delay(250, cancel);
            }

            return;
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

    /// <summary>The start time field of /proc/PID/stat; null when the process is gone or a zombie.</summary>
    private static string? StartTime(int pid)
    {
        string text;
        try
        {
            text = File.ReadAllText($"/proc/{pid.ToString(CultureInfo.InvariantCulture)}/stat");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }

        // pid (comm) state ppid ... ; comm may hold spaces and parentheses: split after the last ')'.
        string[] fields = text[(text.LastIndexOf(')') + 2)..].Split(' ');
        return fields.Length > 19 && fields[0] != "Z" && fields[0] != "X" ? fields[19] : null;
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
