using System.Text.Json.Nodes;
using MoECluster.Testing;

namespace MoECluster.EndToEnd.Tests;

/// <summary>
/// <c>moecluster cost --check-load</c> against the shared cluster of real silo processes: the measured profile's
/// prediction of a closed-loop <c>moecluster load</c>, part by part, and the load run itself in the same command. The
/// mechanics on the tiny model, whose layer is cheap enough that the parts the model leaves out (Orleans' messaging)
/// dominate: the ratio is far from 1 here, so a tolerance of 0 must fail. docs/COST.md has the Super-shaped measurements.
/// </summary>
[Collection(ProcessClusterGroup.Name)]
public sealed class CostLoadCheckTests(ProcessClusterFixture cluster)
{
    [Fact]
    public void The_load_check_predicts_from_measured_parts_runs_the_load_and_fails_beyond_its_tolerance()
    {
        string report = cluster.Dir.File("cost-load-check.json");
        using var cost = BackgroundProcess.Moecluster("cost", "--model", cluster.LatentPath, "--profile", "measured", "--ep", "1", "--wire", "bf16/bf16",
            "--check-load", cluster.Url, "--load-model", "lat", "--load-workers", "4", "--load-tokens", "2", "--load-seconds", "2", "--tolerance", "0", "--report", report);
        Assert.True(cost.WaitForExit(TimeSpan.FromSeconds(180)), "cost --check-load did not finish:\n" + cost.Output);
        Assert.True(cost.ExitCode == 1, cost.Output);
        Assert.Contains("OFF", cost.Output, StringComparison.Ordinal);

        var check = JsonNode.Parse(File.ReadAllText(report))!["load_check"]!;
        Assert.Equal(4, check["assumed_frontend_batch"]!.GetValue<int>());
        var parts = check["parts"]!.AsArray();
        Assert.Equal(4, parts.Count);
        Assert.All(parts, p => Assert.True(p!["seconds_per_token"]!.GetValue<double>() > 0, p!.ToJsonString()));
        double predicted = check["predicted_tokens_per_second"]!.GetValue<double>();
        double measured = check["measured_tokens_per_second"]!.GetValue<double>();
        Assert.Equal(1, predicted * parts.Sum(p => p!["seconds_per_token"]!.GetValue<double>()), 9);
        Assert.True(measured > 0, check.ToJsonString());
        Assert.Equal(measured / predicted, check["measured_over_predicted"]!.GetValue<double>(), 9);
        Assert.True(check["measured_frontend_batch"]!.GetValue<double>() >= 2, check.ToJsonString());
    }
}
