using MoECluster.Cluster.Hosting;
using MoECluster.Testing;

namespace MoECluster.Cli.Tests;

/// <summary>The hot-expert options of <c>run</c> and <c>silo</c>: passed to every silo, refused out of range.</summary>
public sealed class BalancingOptionTests
{
    [Fact]
    public void A_silo_launch_passes_the_replica_budget_and_the_rebalance_period_only_when_given()
    {
        var args = new SiloLaunch(SiloRoles.Expert, "expert-1", [], 4, "managed", RedundantExperts: 8, RebalanceEverySeconds: 30).Arguments().ToList();
        Assert.Equal("8", args[args.IndexOf("--redundant-experts") + 1]);
        Assert.Equal("30", args[args.IndexOf("--rebalance-every") + 1]);
        var plain = new SiloLaunch(SiloRoles.Expert, "expert-1", [], 4, "managed").Arguments();
        Assert.DoesNotContain("--redundant-experts", plain);
        Assert.DoesNotContain("--rebalance-every", plain);
    }

    [Theory]
    [InlineData("--redundant-experts", "-1", "--redundant-experts = -1 is out of range")]
    [InlineData("--rebalance-every", "0.5", "--rebalance-every = 0.5 is out of range")]
    public void Run_refuses_a_budget_or_period_out_of_range_before_starting_anything(string option, string value, string expected)
    {
        var r = ChildProcess.Moecluster("run", "--preset", "tiny", option, value);
        Assert.Equal(2, r.ExitCode);
        Assert.Contains(expected, r.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public void A_silo_with_a_rebalance_period_below_a_second_exits_at_start_naming_the_key()
    {
        var r = ChildProcess.Moecluster("silo", "--role", "expert", "--rebalance-every", "0.5");
        Assert.Equal(2, r.ExitCode);
        Assert.Contains("MoECluster:Balancing:PeriodSeconds = 0.5", r.Stderr, StringComparison.Ordinal);
    }
}
