using System.Diagnostics;
using System.Globalization;

namespace MoECluster.Cli.Chaos;

/// <summary>A silo process found on this machine: its pid, role (frontend or expert) and Orleans name.</summary>
internal sealed record SiloProcess(int Pid, string Role, string Name);

/// <summary>
/// Finds the silo processes of a cluster on this machine by reading /proc: every process running
/// <c>moecluster … silo --role R</c> that descends from the launcher's pid (or, without one, every such process of this
/// user), with its name from <c>Orleans__Name</c> in its environment or <c>--name</c>. Faults are sent as signals.
/// </summary>
internal static class SiloProcesses
{
    public static IReadOnlyList<SiloProcess> Find(int? launcherPid)
    {
        var parents = new Dictionary<int, int>();
        foreach (string dir in Directory.EnumerateDirectories("/proc"))
        {
            if (int.TryParse(Path.GetFileName(dir), NumberStyles.None, CultureInfo.InvariantCulture, out int pid) && ParentOf(pid) is int parent)
            {
                parents[pid] = parent;
            }
        }

        var silos = new List<SiloProcess>();
        foreach (int pid in parents.Keys)
        {
            if (launcherPid is int root && !DescendsFrom(pid, root, parents))
            {
                continue;
            }

            string[] args = CommandLine(pid);
            int verb = Array.IndexOf(args, "silo");
            if (verb < 0 || !args.Take(verb).Any(a => a.EndsWith("moecluster.dll", StringComparison.Ordinal) || a.EndsWith("/moecluster", StringComparison.Ordinal) || a == "moecluster"))
            {
                continue;
            }

            string role = Value(args, "--role") ?? "expert";
            string name = Environment(pid, "Orleans__Name") ?? Value(args, "--name") ?? role;
            silos.Add(new SiloProcess(pid, role, name));
        }

        return [.. silos.OrderBy(s => s.Role == "frontend" ? 0 : 1).ThenBy(s => s.Name, StringComparer.Ordinal)];
    }

    public static bool IsAlive(int pid)
    {
        try
        {
            string stat = File.ReadAllText($"/proc/{pid.ToString(CultureInfo.InvariantCulture)}/stat");
            return stat[(stat.LastIndexOf(')') + 2)] is not ('Z' or 'X');
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }

    /// <summary>Sends a signal by name (KILL, STOP, CONT, TERM) with kill(1); false when the process is gone.</summary>
    public static bool Signal(int pid, string signal)
    {
        using var kill = Process.Start(new ProcessStartInfo("kill", [$"-{signal}", pid.ToString(CultureInfo.InvariantCulture)])
        {
            UseShellExecute = false,
            RedirectStandardError = true,
        })!;
        kill.StandardError.ReadToEnd();
        kill.WaitForExit();
        return kill.ExitCode == 0;
    }

    private static bool DescendsFrom(int pid, int root, Dictionary<int, int> parents)
    {
        for (int i = 0; i < 64 && parents.TryGetValue(pid, out int parent); i++)
        {
            if (parent == root)
            {
                return true;
            }

            pid = parent;
        }

        return false;
    }

    private static int? ParentOf(int pid)
    {
        try
        {
            string stat = File.ReadAllText($"/proc/{pid.ToString(CultureInfo.InvariantCulture)}/stat");
            string[] fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            return fields.Length > 1 && int.TryParse(fields[1], NumberStyles.None, CultureInfo.InvariantCulture, out int parent) ? parent : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    private static string[] CommandLine(int pid)
    {
        try
        {
            return File.ReadAllText($"/proc/{pid.ToString(CultureInfo.InvariantCulture)}/cmdline").Split('\0', StringSplitOptions.RemoveEmptyEntries);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return [];
        }
    }

    private static string? Environment(int pid, string name)
    {
        try
        {
            string prefix = name + "=";
            return File.ReadAllText($"/proc/{pid.ToString(CultureInfo.InvariantCulture)}/environ").Split('\0')
                .FirstOrDefault(v => v.StartsWith(prefix, StringComparison.Ordinal))?[prefix.Length..];
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    private static string? Value(string[] args, string flag)
    {
        int i = Array.IndexOf(args, flag);
        return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
    }
}
