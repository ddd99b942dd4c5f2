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
        Assert.DoesNotContain("--replica-bytes-per-silo", plain);
        var bytes = new SiloLaunch(SiloRoles.Expert, "expert-1", [], 4, "managed", ReplicaBytesPerSilo: 536_870_912).Arguments().ToList();
        Assert.Equal("536870912", bytes[bytes.IndexOf("--replica-bytes-per-silo") + 1]);
    }

    [Theory]
    [InlineData("100", 100)]
    [InlineData("512MiB", 536_870_912)]
    [InlineData("2 gib", 2_147_483_648)]
    [InlineData("64KiB", 65_536)]
    [InlineData("7B", 7)]
    [InlineData("1TiB", 1_099_511_627_776)]
    public void A_size_is_whole_bytes_or_a_number_with_a_binary_suffix(string text, long bytes) =>
        Assert.Equal(bytes, Commands.ByteSizes.Parse(text, "--size"));

    [Theory]
    [InlineData("lots")]
    [InlineData("-5MiB")]
    [InlineData("1.5GiB")]
    [InlineData("MiB")]
    [InlineData("9999999999TiB")]
    public void A_size_that_is_not_one_is_refused_naming_the_option(string text)
    {
        var e = Assert.Throws<Commands.UsageException>(() => Commands.ByteSizes.Parse(text, "--size"));
        Assert.Contains($"--size '{text}' is not a size", e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("--redundant-experts", "-1", "--redundant-experts = -1 is out of range")]
    [InlineData("--rebalance-every", "0.5", "--rebalance-every = 0.5 is out of range")]
    [InlineData("--replica-bytes-per-silo", "half", "--replica-bytes-per-silo 'half' is not a size")]
    public void Run_refuses_a_budget_or_period_out_of_range_before_starting_anything(string option, string value, string expected)
    {
        var r = ChildProcess.Moecluster("run", "--preset", "tiny", option, value);
        Assert.Equal(2, r.ExitCode);
        Assert.Contains(expected, r.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public void Run_takes_the_replica_budget_in_experts_or_in_bytes_not_both()
    {
        var r = ChildProcess.Moecluster("run", "--preset", "tiny", "--redundant-experts", "2", "--replica-bytes-per-silo", "64MiB");
        Assert.Equal(2, r.ExitCode);
        Assert.Contains("--replica-bytes-per-silo 67108864 and --redundant-experts 2: give the budget one way, not both", r.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public void A_silo_given_both_replica_budgets_exits_at_start_naming_the_key()
    {
        var r = ChildProcess.Moecluster("silo", "--role", "expert", "--redundant-experts", "2", "--replica-bytes-per-silo", "1GiB");
        Assert.Equal(2, r.ExitCode);
        Assert.Contains("MoECluster:Balancing:ReplicaBytesPerSilo = 1073741824", r.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public void A_silo_with_a_rebalance_period_below_a_second_exits_at_start_naming_the_key()
    {
        var r = ChildProcess.Moecluster("silo", "--role", "expert", "--rebalance-every", "0.5");
        Assert.Equal(2, r.ExitCode);
        Assert.Contains("MoECluster:Balancing:PeriodSeconds = 0.5", r.Stderr, StringComparison.Ordinal);
    }
}
