using MoECluster.Gateway.Live;

namespace MoECluster.Gateway.Tests;

public sealed class GatewayRequestStatisticsTests
{
    [Fact]
    public void Percentiles_come_from_the_recorded_latencies_in_milliseconds()
    {
        var clock = new ManualClock();
        var stats = new GatewayRequestStatistics(clock);
        var random = new Random(7);
        var latencies = Enumerable.Range(0, 1000).Select(_ => 1 + (random.NextDouble() * 99)).ToArray();
        foreach (double ms in latencies)
        {
            stats.RecordAnswered("latent", 8, TimeSpan.FromMilliseconds(ms));
        }

        var report = stats.Snapshot();
        Array.Sort(latencies);
        Assert.Equal(1000, report.LatencyMs.Count);

        // HDR histograms with 3 significant digits: within 0.1 % of the exact order statistic.
        Assert.Equal(latencies[499], report.LatencyMs.P50, latencies[499] * 2e-3);
        Assert.Equal(latencies[989], report.LatencyMs.P99, latencies[989] * 2e-3);
        Assert.Equal(latencies[^1], report.LatencyMs.Max, latencies[^1] * 2e-3);
        Assert.True(report.LatencyMs.P50 < report.LatencyMs.P90 && report.LatencyMs.P90 < report.LatencyMs.P99);
    }

    [Fact]
    public void Counts_answered_failed_and_rejected_requests_per_model()
    {
        var stats = new GatewayRequestStatistics(new ManualClock());
        stats.RecordAnswered("latent", 8, TimeSpan.FromMilliseconds(2));
        stats.RecordAnswered("latent", 64, TimeSpan.FromMilliseconds(3));
        stats.RecordAnswered("standard", 1, TimeSpan.FromMilliseconds(4));
        stats.RecordFailed("standard");
        stats.RecordRejected(string.Empty);
        stats.RecordRejected("latent");

        var report = stats.Snapshot();
        Assert.Equal(new RequestCounts(Sent: 4, Answered: 3, Failed: 1, Rejected: 2), report.Requests);
        Assert.Equal(73, report.Tokens);
        var latent = report.PerModel.Single(m => m.Model == "latent");
        Assert.Equal((2L, 0L, 1L, 72L), (latent.Answered, latent.Failed, latent.Rejected, latent.Tokens));
        var standard = report.PerModel.Single(m => m.Model == "standard");
        Assert.Equal((1L, 1L, 0L, 1L), (standard.Answered, standard.Failed, standard.Rejected, standard.Tokens));
        Assert.Equal(3, report.LatencyMs.Count);
    }

    [Fact]
    public void Overloaded_and_disconnected_requests_are_counted_apart_from_failures_and_rejections()
    {
        var stats = new GatewayRequestStatistics(new ManualClock());
        stats.RecordAnswered("latent", 8, TimeSpan.FromMilliseconds(2));
        stats.RecordOverloaded(string.Empty);
        stats.RecordOverloaded("latent");
        stats.RecordDisconnected(string.Empty);

        var report = stats.Snapshot();
        Assert.Equal(new RequestCounts(Sent: 1, Answered: 1, Failed: 0, Rejected: 0, Overloaded: 2, Disconnected: 1), report.Requests);
        var latent = report.PerModel.Single(m => m.Model == "latent");
        Assert.Equal((1L, 0L, 0L, 1L, 0L), (latent.Answered, latent.Failed, latent.Rejected, latent.Overloaded, latent.Disconnected));
    }

    [Fact]
    public void Tokens_per_second_average_the_last_completed_seconds()
    {
        var clock = new ManualClock();
        var stats = new GatewayRequestStatistics(clock);
        for (int second = 0; second < 12; second++)
        {
            // 100 tokens per second for 12 s, then nothing.
            stats.RecordAnswered("latent", 100, TimeSpan.FromMilliseconds(1));
            clock.Advance(TimeSpan.FromSeconds(1));
        }

        Assert.Equal(100.0, stats.Snapshot().TokensPerSecond, 9);
        clock.Advance(TimeSpan.FromSeconds(2));
        Assert.Equal(60.0, stats.Snapshot().TokensPerSecond, 9);
        clock.Advance(TimeSpan.FromSeconds(GatewayRequestStatistics.RateSeconds));
        Assert.Equal(0.0, stats.Snapshot().TokensPerSecond, 9);
        Assert.Equal(1200, stats.Snapshot().Tokens);
    }

    [Fact]
    public void Tokens_per_second_right_after_start_divide_by_the_seconds_elapsed()
    {
        var clock = new ManualClock();
        var stats = new GatewayRequestStatistics(clock);
        stats.RecordAnswered("latent", 30, TimeSpan.FromMilliseconds(1));
        clock.Advance(TimeSpan.FromSeconds(1));
        stats.RecordAnswered("latent", 10, TimeSpan.FromMilliseconds(1));
        clock.Advance(TimeSpan.FromSeconds(1));

        Assert.Equal(20.0, stats.Snapshot().TokensPerSecond, 9);
    }

    [Fact]
    public void Recent_percentiles_forget_requests_older_than_the_window()
    {
        var clock = new ManualClock();
        var stats = new GatewayRequestStatistics(clock);
        stats.RecordAnswered("latent", 1, TimeSpan.FromMilliseconds(500));
        clock.Advance(TimeSpan.FromSeconds(GatewayRequestStatistics.RecentSeconds + 1));
        stats.RecordAnswered("latent", 1, TimeSpan.FromMilliseconds(2));

        var report = stats.Snapshot();
        Assert.Equal(1, report.RecentLatencyMs.Count);
        Assert.Equal(2.0, report.RecentLatencyMs.Max, 0.01);
        Assert.Equal(2, report.LatencyMs.Count);
        Assert.Equal(500.0, report.LatencyMs.Max, 0.5);
    }

    [Fact]
    public void Timeline_has_one_point_per_completed_second_and_reuses_its_ring_correctly()
    {
        var clock = new ManualClock();
        var stats = new GatewayRequestStatistics(clock);
        int seconds = GatewayRequestStatistics.TimelineSeconds + 37;
        for (int s = 0; s < seconds; s++)
        {
            stats.RecordAnswered("latent", s + 1, TimeSpan.FromMilliseconds(1));
            clock.Advance(TimeSpan.FromSeconds(1));
        }

        var timeline = stats.Snapshot().Timeline;
        Assert.Equal(GatewayRequestStatistics.TimelineSeconds, timeline.Count);

        // The newest completed second carried `seconds` tokens, the oldest kept one `seconds - Timeline + 1`.
        Assert.Equal(seconds, timeline[^1].Tokens);
        Assert.Equal(seconds - GatewayRequestStatistics.TimelineSeconds + 1, timeline[0].Tokens);
        Assert.All(timeline.Zip(timeline.Skip(1)), p => Assert.Equal(p.First.UnixSecond + 1, p.Second.UnixSecond));
        Assert.All(timeline, p => Assert.Equal(1, p.Requests));
    }

    [Fact]
    public void An_idle_gateway_reports_zeros_not_garbage()
    {
        var report = new GatewayRequestStatistics(new ManualClock()).Snapshot();
        Assert.Equal(new Percentiles(0, 0, 0, 0, 0, 0), report.LatencyMs);
        Assert.Equal(0, report.TokensPerSecond);
        Assert.Empty(report.PerModel);
    }
}

/// <summary>A clock that moves only when told.</summary>
internal sealed class ManualClock : TimeProvider
{
    private DateTimeOffset _now = new(2026, 11, 23, 12, 0, 0, TimeSpan.Zero);

    public override DateTimeOffset GetUtcNow() => _now;

    public void Advance(TimeSpan by) => _now += by;
}
