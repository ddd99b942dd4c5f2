using System.Diagnostics.Metrics;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;
using MoECluster.Cluster.Hosting;
using MoECluster.Cluster.Telemetry;
using MoECluster.Gateway.Limits;
using MoECluster.Gateway.Live;

namespace MoECluster.Gateway.Tests;

/// <summary>
/// The gateway's instruments on the meter <c>MoECluster</c>: the in-flight and queued gauges follow admission, and the
/// request and token counters are the tallies <c>/stats</c> reports.
/// </summary>
public sealed class GatewayMetricsTests
{
    [Fact]
    public async Task The_in_flight_and_queued_gauges_follow_admission_and_the_router_queue()
    {
        using var services = new ServiceCollection().AddMetrics().BuildServiceProvider();
        var meters = services.GetRequiredService<IMeterFactory>();
        var options = new MoeClusterOptions();
        options.Gateway.MaxTokensPerRequest = 10;
        options.Gateway.MaxTokensInFlight = 10;
        options.Gateway.MaxQueuedTokens = 20;
        using var admission = new GatewayAdmission(Options.Create(options), meters);
        var read = Observe(meters);
        Assert.Equal(0, read()["moecluster.gateway.requests.in_flight"]);

        using var ticket = admission.Admit(300);
        using var second = admission.Admit(0);
        var forwarded = await admission.EnterRoutersAsync(8, CancellationToken.None);
        var waiting = admission.EnterRoutersAsync(5, CancellationToken.None).AsTask();
        var alsoWaiting = admission.EnterRoutersAsync(6, CancellationToken.None).AsTask();
        var now = read();
        Assert.Equal(2, now["moecluster.gateway.requests.in_flight"]);
        Assert.Equal(2, now["moecluster.gateway.requests.queued"]);
        Assert.Equal(8, now["moecluster.gateway.tokens.in_flight"]);
        Assert.Equal(11, now["moecluster.gateway.tokens.queued"]);
        Assert.Equal(300, now["moecluster.gateway.body.in_flight"]);

        forwarded.Dispose();
        (await waiting).Dispose();
        (await alsoWaiting).Dispose();
        ticket.ReleaseBody();
        now = read();
        Assert.Equal(0, now["moecluster.gateway.requests.queued"]);
        Assert.Equal(0, now["moecluster.gateway.tokens.in_flight"]);
        Assert.Equal(0, now["moecluster.gateway.tokens.queued"]);
        Assert.Equal(0, now["moecluster.gateway.body.in_flight"]);
    }

    [Fact]
    public void The_request_and_token_counters_are_the_tallies_of_stats()
    {
        using var services = new ServiceCollection().AddMetrics().BuildServiceProvider();
        var meters = services.GetRequiredService<IMeterFactory>();
        var statistics = new GatewayRequestStatistics(TimeProvider.System, meters);
        statistics.RecordAnswered("lat", 8, TimeSpan.FromMilliseconds(20));
        statistics.RecordAnswered("lat", 3, TimeSpan.FromMilliseconds(30));
        statistics.RecordAnswered("std", 5, TimeSpan.FromMilliseconds(40));
        statistics.RecordFailed("lat");
        statistics.RecordRejected("");
        statistics.RecordBusy("std");
        statistics.RecordOverloaded("std");
        statistics.RecordDisconnected("lat");
        var counts = new Dictionary<string, long>(StringComparer.Ordinal);
        var durations = new List<(double Seconds, string Model)>();
        using var listener = new MeterListener
        {
            InstrumentPublished = (instrument, l) =>
            {
                if (instrument.Meter.Scope == meters && instrument.Meter.Name == TrafficLedger.MeterName)
                {
                    l.EnableMeasurementEvents(instrument);
                }
            },
        };
        listener.SetMeasurementEventCallback<long>((instrument, value, tags, _) =>
        {
            string key = instrument.Name + "|" + string.Join(",", tags.ToArray().Select(t => $"{t.Key}={t.Value}"));
            counts[key] = value;
        });
        listener.SetMeasurementEventCallback<double>((_, value, tags, _) => durations.Add((value, (string)tags.ToArray().Single(t => t.Key == "model").Value!)));
        listener.Start();
        statistics.RecordAnswered("lat", 1, TimeSpan.FromMilliseconds(250));
        listener.RecordObservableInstruments();

        var report = statistics.Snapshot();
        Assert.Equal(report.PerModel.Single(m => m.Model == "lat").Answered, counts["moecluster.gateway.requests|model=lat,outcome=answered"]);
        Assert.Equal(3, counts["moecluster.gateway.requests|model=lat,outcome=answered"]);
        Assert.Equal(1, counts["moecluster.gateway.requests|model=lat,outcome=failed"]);
        Assert.Equal(1, counts["moecluster.gateway.requests|model=lat,outcome=disconnected"]);
        Assert.Equal(1, counts["moecluster.gateway.requests|model=,outcome=rejected"]);
        Assert.Equal(1, counts["moecluster.gateway.requests|model=std,outcome=busy"]);
        Assert.Equal(1, counts["moecluster.gateway.requests|model=std,outcome=overloaded"]);
        Assert.Equal(0, counts["moecluster.gateway.requests|model=std,outcome=failed"]);
        Assert.Equal(12, counts["moecluster.gateway.tokens|model=lat"]);
        Assert.Equal(5, counts["moecluster.gateway.tokens|model=std"]);
        Assert.Equal(report.Tokens, counts.Where(c => c.Key.StartsWith("moecluster.gateway.tokens|", StringComparison.Ordinal)).Sum(c => c.Value));
        Assert.Equal([(0.25, "lat")], durations);
    }

    /// <summary>Reads every observable instrument of the meter factory's <c>MoECluster</c> meter, by instrument name.</summary>
    private static Func<Dictionary<string, long>> Observe(IMeterFactory meters) => () =>
    {
        var values = new Dictionary<string, long>(StringComparer.Ordinal);
        using var listener = new MeterListener
        {
            InstrumentPublished = (instrument, l) =>
            {
                if (instrument.Meter.Scope == meters && instrument.Meter.Name == TrafficLedger.MeterName)
                {
                    l.EnableMeasurementEvents(instrument);
                }
            },
        };
        listener.SetMeasurementEventCallback<int>((instrument, value, _, _) => values[instrument.Name] = value);
        listener.SetMeasurementEventCallback<long>((instrument, value, _, _) => values[instrument.Name] = value);
        listener.Start();
        listener.RecordObservableInstruments();
        return values;
    };
}
