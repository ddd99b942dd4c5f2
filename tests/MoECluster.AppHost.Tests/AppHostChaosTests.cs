using System.Globalization;
using System.Text.Json.Nodes;
using MoECluster.Testing;

namespace MoECluster.AppHost.Tests;

/// <summary>
/// The CI-sized chaos run: 60 seconds of checked load on the launcher's cluster (the main command with the tiny pair)
/// while <c>moecluster chaos</c> kills, hangs and stops its silo processes, the front-end included, one at a time.
/// No request may fail, every answer must equal the in-process forward, and the cluster must be whole again after
/// every fault. bench/chaos.sh runs the same for 10 minutes on the Super-shaped pair (docs/CHAOS.md).
/// </summary>
public sealed partial class AppHostEndToEndTests
{
    [Fact]
    public async Task A_60_second_chaos_run_on_the_launchers_cluster_fails_no_request_and_every_answer_is_the_in_process_one()
    {
        using var dir = new TempDirectory("moecluster-chaos-");
        using var launch = new Launch(dir, "--backend", "managed");
        await launch.WaitReadyAsync();
        string json = dir.File("chaos.json");
        string seed = Random.Shared.Next(1, int.MaxValue).ToString(CultureInfo.InvariantCulture);
        using var chaos = BackgroundProcess.Moecluster(
            "chaos", "--url", launch.Url, "--launcher-pid", P(launch.Process.Id),
            "--model", $"latent={Path.Combine(launch.ModelsDir, "tiny-8x1")}", "--model", $"standard={Path.Combine(launch.ModelsDir, "tiny-standard-8x1")}",
            "--duration", "60", "--warmup", "3", "--concurrency", "2", "--fault-interval", "3", "--hang", "3,8", "--recovery-timeout", "40",
            "--seed", seed, "--json", json);
        bool finished = chaos.WaitForExit(TimeSpan.FromMinutes(4));
        log.WriteLine(chaos.Output);
        Assert.True(finished, "the chaos run did not finish in 4 minutes:\n" + chaos.Output + "\n" + launch.Process.Output);
        Assert.True(chaos.ExitCode == 0, $"chaos run (seed {seed}) exit {chaos.ExitCode}:\n{chaos.Output}\n--- launcher:\n{launch.Process.Output}");

        var report = JsonNode.Parse(File.ReadAllText(json))!;
        var requests = report["requests"]!;
        Assert.Equal(0, requests["failed"]!.GetValue<long>());
        Assert.Equal(0, requests["wrong_answers"]!.GetValue<long>());
        Assert.True(requests["ok"]!.GetValue<long>() > 100, chaos.Output);
        Assert.True(requests["answers_checked"]!.GetValue<long>() >= requests["ok"]!.GetValue<long>());
        var faults = report["faults"]!.AsArray();
        Assert.True(faults.Count >= 3, $"only {faults.Count} faults in 60 s:\n{chaos.Output}");
        Assert.Equal(["hang", "kill", "term"], faults.Select(f => f!["kind"]!.GetValue<string>()).Distinct().Order());
        Assert.Contains(faults, f => f!["role"]!.GetValue<string>() == "frontend" && f["kind"]!.GetValue<string>() == "kill");
        Assert.All(faults, f => Assert.NotNull(f!["whole_again_after_s"]));
    }
}
