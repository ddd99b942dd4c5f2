using System.Diagnostics;
using System.Globalization;
using MoECluster.Model.Presets;
using MoECluster.Testing;

namespace MoECluster.Cli.Tests;

/// <summary>What launchers rely on: <c>prepare-models</c> (generate once, then reuse) and MOECLUSTER_PARENT_PID.</summary>
public sealed class LauncherContractTests
{
    [Fact]
    public void Prepare_models_writes_the_pair_once_and_reuses_it_in_the_directories_run_uses()
    {
        using var dir = new TempDirectory();
        string models = dir.File("models");
        var first = ChildProcess.Moecluster("prepare-models", "--preset", "tiny", "--experts", "12", "--layers", "2", "--models-dir", models);
        Assert.True(first.ExitCode == 0, first.ToString());
        var plan = ModelPairs.Plan("tiny", 12, 2, models);
        Assert.Equal([Path.Combine(models, "tiny-standard-12x2"), Path.Combine(models, "tiny-12x2")], plan.Select(m => m.Directory));
        foreach (var member in plan)
        {
            Assert.Contains($"{member.Id}={member.Directory}", first.Stdout, StringComparison.Ordinal);
            Assert.True(SyntheticCheckpoint.IsSame(member.Directory, member.Config, 1), member.Directory);
        }

        var written = plan.Select(m => File.GetLastWriteTimeUtc(Path.Combine(m.Directory, "model.safetensors"))).ToList();
        var second = ChildProcess.Moecluster("prepare-models", "--preset", "tiny", "--experts", "12", "--layers", "2", "--models-dir", models);
        Assert.True(second.ExitCode == 0, second.ToString());
        Assert.DoesNotContain("generating", second.Stdout, StringComparison.Ordinal);
        Assert.Equal(2, second.Stdout.Split('\n').Count(l => l.EndsWith("; reused", StringComparison.Ordinal)));
        Assert.Equal(written, plan.Select(m => File.GetLastWriteTimeUtc(Path.Combine(m.Directory, "model.safetensors"))));
    }

    [Fact]
    public void Prepare_models_is_hidden_from_help_and_checks_its_input()
    {
        var help = ChildProcess.Moecluster("--help");
        Assert.DoesNotContain("prepare-models", help.Stdout, StringComparison.Ordinal);
        var bad = ChildProcess.Moecluster("prepare-models", "--preset", "huge");
        Assert.Equal(2, bad.ExitCode);
        Assert.Contains("huge", bad.Stderr, StringComparison.Ordinal);
        var layers = ChildProcess.Moecluster("prepare-models", "--preset", "tiny", "--layers", "0");
        Assert.Equal(2, layers.ExitCode);
        Assert.Contains("--layers = 0 is out of range", layers.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public void A_parent_pid_that_is_not_a_number_is_a_usage_error()
    {
        var r = ChildProcess.Run("env", ["MOECLUSTER_PARENT_PID=abc", "dotnet", ChildProcess.CliDll, "silo", "--role", "expert"]);
        Assert.True(r.ExitCode == 2, r.ToString());
        Assert.Contains("MOECLUSTER_PARENT_PID=abc is not a process id", r.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Prepare_models_stops_writing_when_its_parent_exits()
    {
        using var dir = new TempDirectory();
        using var parent = Process.Start(new ProcessStartInfo("sleep", ["120"]) { UseShellExecute = false })!;
        string pid = parent.Id.ToString(CultureInfo.InvariantCulture);

        // The super-shape pair with 24 experts (K is 22): its standard model alone is about 1 GB, seconds of writing.
        using var prepare = BackgroundProcess.Start("env", [$"MOECLUSTER_PARENT_PID={pid}", "dotnet", ChildProcess.CliDll,
            "prepare-models", "--preset", "super", "--experts", "24", "--models-dir", dir.File("models")]);
        try
        {
            Assert.True(await prepare.WaitForOutputAsync("generating super-standard", TimeSpan.FromSeconds(60)), prepare.Output);
            parent.Kill();
            Assert.True(prepare.WaitForExit(TimeSpan.FromSeconds(15)), "prepare-models outlived its parent:\n" + prepare.Output);
            Assert.Equal(1, prepare.ExitCode);
            Assert.Contains($"parent process {pid} exited; stopping", prepare.Output, StringComparison.Ordinal);
            Assert.DoesNotContain("latent=", prepare.Output, StringComparison.Ordinal);
        }
        finally
        {
            if (!parent.HasExited)
            {
                parent.Kill();
            }
        }
    }

    [Fact]
    public async Task A_silo_configured_from_the_environment_stops_when_the_parent_in_MOECLUSTER_PARENT_PID_exits()
    {
        using var dir = new TempDirectory();
        SyntheticCheckpoint.Write(dir.File("m"), ModelPresets.Get("tiny").Build(), 5);
        int[] ports = FreePorts.Take(3);
        string P(int p) => p.ToString(CultureInfo.InvariantCulture);
        using var parent = Process.Start(new ProcessStartInfo("sleep", ["120"]) { UseShellExecute = false })!;
        using var silo = BackgroundProcess.Start("env", [
            $"MOECLUSTER_PARENT_PID={P(parent.Id)}", $"ASPNETCORE_URLS=http://127.0.0.1:{P(ports[0])}",
            $"Orleans__Endpoints__SiloPort={P(ports[1])}", $"Orleans__Endpoints__GatewayPort={P(ports[2])}",
            $"MoECluster__Models__tiny__Path={dir.File("m")}", "dotnet", ChildProcess.CliDll, "silo", "--role", "frontend"]);
        try
        {
            using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(2) };
            await ProcessWait.UntilAsync("the silo's /alive",
                async () => (await http.GetAsync(new Uri($"http://127.0.0.1:{P(ports[0])}/alive"))).IsSuccessStatusCode, TimeSpan.FromSeconds(60), silo);
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
}
