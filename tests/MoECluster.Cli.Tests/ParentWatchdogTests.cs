using System.Diagnostics;
using System.Globalization;
using MoECluster.Model.Presets;
using MoECluster.Testing;

namespace MoECluster.Cli.Tests;

/// <summary>
/// The silo's parent-process watchdog tells "the parent is gone" from "/proc cannot be read now": a silo whose file
/// handles run out (here its open-file limit lowered under it with prlimit, as ~20,000 idle connections did) keeps
/// running and keeps watching, and still stops when the parent does exit.
/// </summary>
public sealed class ParentWatchdogTests
{
    [Fact]
    public async Task A_silo_out_of_file_handles_keeps_watching_its_parent_and_stays_up()
    {
        using var dir = new TempDirectory();
        SyntheticCheckpoint.Write(dir.File("m"), ModelPresets.Get("tiny").Build(), 5);
        int[] ports = FreePorts.Take(3);
        string P(int p) => p.ToString(CultureInfo.InvariantCulture);
        using var parent = Process.Start(new ProcessStartInfo("sleep", ["300"]) { UseShellExecute = false })!;
        using var silo = BackgroundProcess.Moecluster([
            "silo", "--role", "frontend", "--urls", $"http://127.0.0.1:{P(ports[0])}", "--silo-port", P(ports[1]), "--gateway-port", P(ports[2]),
            "--model", $"tiny={dir.File("m")}", "--parent-pid", P(parent.Id)]);
        try
        {
            using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(5) };
            var alive = new Uri($"http://127.0.0.1:{P(ports[0])}/alive");
            await ProcessWait.UntilAsync("the silo's /alive", async () => (await http.GetAsync(alive)).IsSuccessStatusCode, TimeSpan.FromSeconds(60), silo);

            // Every new file handle fails with EMFILE ("Too many open files") for 3 s: twelve reads of /proc by the watchdog.
            string soft = OpenFileSoftLimit(silo.Id);
            Prlimit(silo.Id, "8:");
            try
            {
                await Task.Delay(TimeSpan.FromSeconds(3));
            }
            finally
            {
                // Back to what it was (it fails only when the silo is gone, which the next lines report).
                ChildProcess.Run("prlimit", ["--pid", P(silo.Id), $"--nofile={soft}:"]);
            }

            await Task.Delay(TimeSpan.FromSeconds(1));
            Assert.False(silo.HasExited, "the silo stopped when its file handles ran out:\n" + silo.Output);
            Assert.DoesNotContain("exited; stopping", silo.Output, StringComparison.Ordinal);
            Assert.Contains($"cannot tell whether parent process {P(parent.Id)} is alive (Too many open files", silo.Output, StringComparison.Ordinal);
            Assert.True((await http.GetAsync(alive)).IsSuccessStatusCode);

            // It still watches: the parent's real exit stops it.
            parent.Kill();
            Assert.True(silo.WaitForExit(TimeSpan.FromSeconds(15)), "the silo outlived its parent:\n" + silo.Output);
            Assert.Contains($"parent process {P(parent.Id)} exited; stopping", silo.Output, StringComparison.Ordinal);
        }
        finally
        {
            if (!parent.HasExited)
            {
                parent.Kill();
            }
        }
    }

    /// <summary>The soft "Max open files" of process <paramref name="pid"/>.</summary>
    private static string OpenFileSoftLimit(int pid)
    {
        string line = File.ReadLines($"/proc/{pid.ToString(CultureInfo.InvariantCulture)}/limits").Single(l => l.StartsWith("Max open files", StringComparison.Ordinal));
        return line["Max open files".Length..].Split(' ', StringSplitOptions.RemoveEmptyEntries)[0];
    }

    private static void Prlimit(int pid, string nofile)
    {
        var r = ChildProcess.Run("prlimit", ["--pid", pid.ToString(CultureInfo.InvariantCulture), $"--nofile={nofile}"]);
        Assert.True(r.ExitCode == 0, r.ToString());
    }
}
