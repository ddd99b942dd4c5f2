using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;
using MoECluster.Testing;

namespace MoECluster.AppHost.Tests;

/// <summary>Finds processes through /proc: those whose command line or environment mention a text.</summary>
internal static partial class ProcessScan
{
    private static IEnumerable<int> AllPids() =>
        Directory.EnumerateDirectories("/proc").Select(Path.GetFileName).Where(n => n!.All(char.IsAsciiDigit)).Select(n => int.Parse(n!, CultureInfo.InvariantCulture));

    /// <summary>Live processes (not this one) whose command line or environment contains <paramref name="text"/>.</summary>
    public static IReadOnlyList<int> Mentioning(string text) =>
        [.. AllPids().Where(p => p != Environment.ProcessId && BackgroundProcess.IsAlive(p) && (Read(p, "cmdline").Contains(text, StringComparison.Ordinal) || Read(p, "environ").Contains(text, StringComparison.Ordinal)))];

    /// <summary>Every "pid N" and "watchdog N" the launcher printed.</summary>
    public static IReadOnlyList<int> Printed(string output) =>
        [.. PidPattern().Matches(output).Select(m => int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture)).Distinct()];

    public static string Describe(IEnumerable<int> pids) =>
        string.Join("; ", pids.Select(p => $"{p}: {Read(p, "cmdline").Replace('\0', ' ').Trim()}"));

    /// <summary>Waits up to <paramref name="timeout"/> for every pid to be gone (or a zombie); returns those still alive.</summary>
    public static IReadOnlyList<int> WaitAllGone(IEnumerable<int> pids, TimeSpan timeout)
    {
        var list = pids.ToList();
        var clock = Stopwatch.StartNew();
        while (list.Any(BackgroundProcess.IsAlive) && clock.Elapsed < timeout)
        {
            Thread.Sleep(100);
        }

        return [.. list.Where(BackgroundProcess.IsAlive)];
    }

    /// <summary>Kills what is left (test clean-up).</summary>
    public static void KillAll(IEnumerable<int> pids)
    {
        foreach (int pid in pids.Where(BackgroundProcess.IsAlive))
        {
            try
            {
                using var p = Process.GetProcessById(pid);
                p.Kill(entireProcessTree: true);
            }
            catch (Exception e) when (e is ArgumentException or InvalidOperationException or System.ComponentModel.Win32Exception)
            {
            }
        }
    }

    private static string Read(int pid, string file)
    {
        try
        {
            return Encoding.UTF8.GetString(File.ReadAllBytes($"/proc/{pid}/{file}"));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return string.Empty;
        }
    }

    [GeneratedRegex(@"(?:pid|watchdog) (\d+)")]
    private static partial Regex PidPattern();
}
