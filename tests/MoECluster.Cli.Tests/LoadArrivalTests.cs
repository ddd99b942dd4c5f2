using System.Text.Json.Nodes;
using MoECluster.Cli.Commands;
using MoECluster.Cli.Load;

namespace MoECluster.Cli.Tests;

/// <summary>The open loop's arrival schedule: gamma inter-arrival times (<c>--burstiness</c>) and the ramp-up of the rate.</summary>
public sealed class LoadArrivalTests
{
    private const int Samples = 40_000;

    /// <summary>
    /// Gaps of shape B and mean 1/rate: the sample mean within 5 standard errors of 1/rate (SE = CV/(rate·√n)) and the
    /// sample coefficient of variation within 5 standard errors of 1/√B (relative SE of the standard deviation of a
    /// gamma sample ≈ √((1 + 3/B)/(2n)), its excess kurtosis being 6/B, plus the mean's).
    /// </summary>
    [Theory]
    [InlineData(0.25)]
    [InlineData(0.5)]
    [InlineData(1.0)]
    [InlineData(4.0)]
    public void Gamma_gaps_have_mean_one_over_rate_and_coefficient_of_variation_one_over_root_burstiness(double burstiness)
    {
        const double Rate = 50;
        var schedule = new ArrivalSchedule(Rate, burstiness, null, 0, 1e9, seed: 7);
        var gaps = new double[Samples];
        double last = 0;
        for (int i = 0; i < Samples; i++)
        {
            double t = schedule.Next();
            gaps[i] = t - last;
            Assert.True(gaps[i] >= 0, $"arrival {i} goes back in time");
            last = t;
        }

        double mean = gaps.Average();
        double sd = Math.Sqrt(gaps.Sum(g => (g - mean) * (g - mean)) / (Samples - 1));
        double cv = sd / mean;
        double expectedCv = 1 / Math.Sqrt(burstiness);
        double meanTolerance = 5 * (1 / Rate) * expectedCv / Math.Sqrt(Samples);
        double cvTolerance = 5 * expectedCv * Math.Sqrt(((1 + (3 / burstiness)) / (2.0 * Samples)) + (expectedCv * expectedCv / Samples));
        Assert.True(Math.Abs(mean - (1 / Rate)) <= meanTolerance, $"B {burstiness}: mean gap {mean:F6} s, expected {1 / Rate:F6} ± {meanTolerance:F6}");
        Assert.True(Math.Abs(cv - expectedCv) <= cvTolerance, $"B {burstiness}: CV {cv:F4}, expected {expectedCv:F4} ± {cvTolerance:F4}");
    }

    [Fact]
    public void The_same_seed_gives_the_same_arrivals_and_another_seed_others()
    {
        double[] Take(ulong seed)
        {
            var s = new ArrivalSchedule(10, 0.5, null, 0, 100, seed);
            return [.. Enumerable.Range(0, 50).Select(_ => s.Next())];
        }

        Assert.Equal(Take(3), Take(3));
        Assert.NotEqual(Take(3), Take(4));
    }

    /// <summary>
    /// A ramp from 20 to 200 requests per second over 20 s (after 2 s of warm-up at 20/s): the arrivals in each 2-second
    /// window match the integral of the ramp over it within 5 Poisson standard deviations; the first and last windows
    /// differ as the rates do, which a constant rate (or a ramp not applied) would fail.
    /// </summary>
    [Theory]
    [InlineData(RampUp.Linear)]
    [InlineData(RampUp.Exponential)]
    public void A_ramp_up_sends_at_the_rate_of_each_moment(string strategy)
    {
        const double Start = 20, End = 200, Warmup = 2, Duration = 20;
        var ramp = new RampUp(strategy, Start, End);
        var schedule = new ArrivalSchedule(999, 1, ramp, Warmup, Duration, seed: 11);
        var arrivals = new List<double>();
        for (double t = schedule.Next(); t < Warmup + Duration; t = schedule.Next())
        {
            arrivals.Add(t);
        }

        double Expected(double from, double to)
        {
            // Midpoint rule over 1 ms steps.
            double sum = 0;
            for (double t = from + 0.0005; t < to; t += 0.001)
            {
                sum += (t <= Warmup ? Start : ramp.RateAt((t - Warmup) / Duration)) * 0.001;
            }

            return sum;
        }

        for (double from = 0; from < Warmup + Duration - 1e-9; from += 2)
        {
            double expected = Expected(from, from + 2);
            int seen = arrivals.Count(t => t >= from && t < from + 2);
            Assert.True(Math.Abs(seen - expected) <= 5 * Math.Sqrt(expected), $"{strategy}: [{from}, {from + 2}) s: {seen} arrivals, expected {expected:F1}");
        }

        Assert.Equal(Start, schedule.RateAt(1));
        Assert.Equal(End, schedule.RateAt(Warmup + Duration), 6);
    }

    [Fact]
    public void A_linear_ramp_may_start_at_zero()
    {
        var schedule = new ArrivalSchedule(1, 1, new RampUp(RampUp.Linear, 0, 100), 1, 10, seed: 5);
        double first = schedule.Next();
        Assert.True(first > 1, $"the first arrival at {first} s, within the warm-up whose rate is 0");
    }

    [Theory]
    [InlineData("linear", null, 5.0, "give all three")]
    [InlineData(null, 1.0, 5.0, "give all three")]
    public void Ramp_up_options_go_together(string? strategy, double? start, double? end, string message)
    {
        var e = Assert.Throws<UsageException>(() => RampUp.Parse(strategy, start, end));
        Assert.Contains(message, e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("--burstiness", "2")]
    [InlineData("--max-concurrency", "4")]
    public void Open_loop_options_are_refused_in_the_closed_loop(string option, string value)
    {
        using var output = new StringWriter();
        using var error = new StringWriter();
        Assert.Equal(CliApp.ExitUsage, CliApp.Run(["load", "--url", "http://127.0.0.1:1", "--mode", "closed", option, value], output, error));
        Assert.Contains("open loop", error.ToString(), StringComparison.Ordinal);
    }

    [Fact]
    public void A_sweep_step_reports_its_errors_by_kind_and_status_and_its_starts()
    {
        var recorder = new LoadRecorder([("m", "latent")]);
        recorder.Sent("m", LoadPhase.Measured);
        recorder.Started(LoadPhase.Measured, lateMicroseconds: 50_000, waitedForCap: true, thresholdMicroseconds: 10_000);
        recorder.Failed("m", LoadPhase.Measured, RequestError.Of(new MoECluster.Gateway.GatewayException(401, "no key")));
        recorder.Ended();
        var json = JsonNode.Parse(SweepReport.Step(SweepStep.From(5, recorder.Snapshot(), 1), LoadSettings.Open).ToJsonString())!;
        Assert.Equal(1, json["errors"]!["unauthorized"]!.GetValue<long>());
        Assert.Equal(1, json["errors"]!["by_status"]!["401"]!.GetValue<long>());
        Assert.Equal(1, json["starts"]!["late_by_cap"]!.GetValue<long>());
        Assert.Equal(50.0, json["starts"]!["max_late_ms"]!.GetValue<double>());
        Assert.Equal(1, json["starts"]!["peak_in_flight"]!.GetValue<long>());
    }
}
