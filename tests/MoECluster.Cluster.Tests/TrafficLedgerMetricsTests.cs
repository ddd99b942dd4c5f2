using System.Diagnostics.Metrics;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;
using MoECluster.Cluster.Grains;
using MoECluster.Cluster.Requests;
using MoECluster.Cluster.Telemetry;
using MoECluster.Wire;

namespace MoECluster.Cluster.Tests;

/// <summary>
/// The ledger's instruments behind <c>/metrics</c>: tokens per expert observed from the tallies <c>/stats</c> reports,
/// one shard-call latency per call (by the shard's silo), the forward duration by model, mode and target, and the
/// shard pass duration.
/// </summary>
public sealed class TrafficLedgerMetricsTests
{
    [Fact]
    public void Expert_tokens_call_latencies_and_durations_are_measured_as_the_ledger_records_them()
    {
        using var services = new ServiceCollection().AddMetrics().BuildServiceProvider();
        var meters = services.GetRequiredService<IMeterFactory>();
        using var ledger = new TrafficLedger(meters, Options.Create(new SiloIdentity { Name = "fe" }));
        var doubles = new List<(string Instrument, double Value, Dictionary<string, object?> Tags)>();
        var longs = new List<(string Instrument, long Value, Dictionary<string, object?> Tags)>();
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
        listener.SetMeasurementEventCallback<double>((i, v, tags, _) => doubles.Add((i.Name, v, tags.ToArray().ToDictionary(t => t.Key, t => t.Value))));
        listener.SetMeasurementEventCallback<long>((i, v, tags, _) => longs.Add((i.Name, v, tags.ToArray().ToDictionary(t => t.Key, t => t.Value))));
        listener.Start();

        // Two tokens, top-2 of 4 experts: expert 1 twice, 0 and 3 once; two shard calls to two silos.
        ledger.RecordBatch(
            new LayerBatch("lat", "latent", 3, 64, 16, 2, 4, 2, 256, WirePair.Of(WireDType.F32, WireDType.BF16)),
            [1, 0, 1, 3],
            [new ShardCallTraffic("fe", "ex1", 64, 90, 64, 80, 2, 0.004), new ShardCallTraffic("fe", "ex2", 64, 90, 64, 80, 2, 0.25)]);
        ledger.RecordFrontEndBatch("lat", "stack", WirePair.Default, new FrontEndBatch(3, 12, 1500), "latent");
        ledger.RecordShardBatch("lat/3/s0/0-2", "lat", 3, new ShardBatch(2, 5, 7, 2500));
        listener.RecordObservableInstruments();

        var experts = longs.Where(m => m.Instrument == TrafficLedger.ExpertTokensInstrument).ToDictionary(m => (int)m.Tags["expert"]!, m => m.Value);
        var stats = ledger.Snapshot("fe").Layers.Single();
        Assert.Equal(new Dictionary<int, long> { [0] = 1, [1] = 2, [3] = 1 }, experts);
        Assert.Equal(stats.ExpertTokens.Select((v, e) => (e, v)).Where(x => x.v > 0).ToDictionary(x => x.e, x => x.v), experts);
        Assert.All(longs.Where(m => m.Instrument == TrafficLedger.ExpertTokensInstrument), m =>
            Assert.Equal(("lat", "latent", 3), ((string)m.Tags["model"]!, (string)m.Tags["mode"]!, (int)m.Tags["layer"]!)));

        var calls = doubles.Where(m => m.Instrument == "moecluster.shard.call.duration").ToList();
        Assert.Equal([(0.004, "ex1"), (0.25, "ex2")], calls.Select(c => (c.Value, (string)c.Tags["silo"]!)));
        var forward = Assert.Single(doubles, m => m.Instrument == "moecluster.forward.duration");
        Assert.Equal(0.0015, forward.Value, 12);
        Assert.Equal(("lat", "latent", "stack"), ((string)forward.Tags["model"]!, (string)forward.Tags["mode"]!, (string)forward.Tags["target"]!));
        Assert.Equal(0.0025, Assert.Single(doubles, m => m.Instrument == "moecluster.shard.pass.duration").Value, 12);

        // A forward recorded without a mode (a caller that has none) adds batch sizes but no duration.
        ledger.RecordFrontEndBatch("lat", "3", WirePair.Default, new FrontEndBatch(1, 2, 100));
        Assert.Single(doubles, m => m.Instrument == "moecluster.forward.duration");
    }

    [Fact]
    public void Socket_bytes_count_only_the_Orleans_meter_of_the_ledgers_own_silo()
    {
        // Two silos in one process (a test cluster) each have their own IMeterFactory and so their own Orleans meter; the
        // neighbour's messages must not appear in this silo's socket traffic.
        using var own = new ServiceCollection().AddMetrics().BuildServiceProvider();
        using var neighbour = new ServiceCollection().AddMetrics().BuildServiceProvider();
        using var ledger = new TrafficLedger(own.GetRequiredService<IMeterFactory>(), Options.Create(new SiloIdentity { Name = "fe" }));
        Histogram<int> Sent(ServiceProvider services) =>
            services.GetRequiredService<IMeterFactory>().Create(TrafficLedger.OrleansMeterName).CreateHistogram<int>(TrafficLedger.OrleansSentSizeInstrument);
        var siloToSilo = new System.Diagnostics.TagList { { "ConnectionDirection", "SiloToSilo" }, { "silo", "S10.0.0.2:11111:1" }, { "MessageDirection", "Request" } };

        Sent(neighbour).Record(5000, siloToSilo);
        Sent(own).Record(300, siloToSilo);
        Sent(own).Record(200, siloToSilo);
        Sent(own).Record(7000, new System.Diagnostics.TagList { { "ConnectionDirection", "GatewayToClient" }, { "silo", "S10.0.0.3:30000:1" } });

        var socket = Assert.Single(ledger.Snapshot("fe").Socket);
        Assert.Equal(("S10.0.0.2:11111:1", "Request", 2L, 500L, 2L * TrafficLedger.OrleansFrameBytes), (socket.ToSilo, socket.MessageDirection, socket.Messages, socket.MessageBytes, socket.FrameBytes));
    }
}
