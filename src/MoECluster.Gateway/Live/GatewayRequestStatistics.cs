using System.Diagnostics.Metrics;
using HdrHistogram;
using MoECluster.Cluster.Telemetry;

namespace MoECluster.Gateway.Live;

/// <summary>
/// What this gateway's clients saw: forward requests answered, failed (5xx), rejected (4xx), refused for overload (a
/// limit of "MoECluster:Gateway" reached: 503 with Retry-After), refused as busy (an expert shard's queue was full:
/// 429 with Retry-After) and abandoned by their client (it disconnected before
/// the answer), tokens served, and
/// the latency of answered requests from arrival to reply, in HDR histograms (1 µs to 1 h, 3 significant digits):
/// one since start and one over a sliding window of the last <see cref="RecentSeconds"/> seconds, kept as one
/// histogram per second. Tokens per second come from the same per-second buckets.
/// </summary>
/// <remarks>
/// The same tallies are published on the meter <c>MoECluster</c> (<see cref="TrafficLedger.MeterName"/>) when a meter
/// factory is given: <c>moecluster.gateway.requests</c> by model and outcome and <c>moecluster.gateway.tokens</c> by model,
/// observed from these counters at collection (so <c>/metrics</c> and <c>/stats</c> agree), and the histogram
/// <c>moecluster.gateway.request.duration</c> (seconds, answered requests, by model).
/// </remarks>
public sealed class GatewayRequestStatistics
{
    /// <summary>Window of the "recent" latency percentiles.</summary>
    public const int RecentSeconds = 10;

    /// <summary>Completed seconds averaged into tokens per second.</summary>
    public const int RateSeconds = 5;

    /// <summary>Seconds of the tokens-per-second timeline.</summary>
    public const int TimelineSeconds = 120;

    private const long MaxLatencyMicroseconds = 3_600_000_000;

    private readonly object _gate = new();
    private readonly LongHistogram _all = NewHistogram();
    private readonly Second[] _seconds = [.. Enumerable.Range(0, TimelineSeconds + 1).Select(_ => new Second())];
    private readonly Dictionary<string, ModelCounters> _models = new(StringComparer.Ordinal);
    private readonly TimeProvider _clock;
    private readonly long _startSecond;
    private readonly Histogram<double>? _duration;

    public GatewayRequestStatistics(TimeProvider clock, IMeterFactory? meters = null)
    {
        ArgumentNullException.ThrowIfNull(clock);
        _clock = clock;
        _startSecond = clock.GetUtcNow().ToUnixTimeSeconds();
        if (meters is not null)
        {
            Meter meter = meters.Create(TrafficLedger.MeterName);
            meter.CreateObservableCounter(RequestsInstrument, ObserveRequests, "{request}", "Forward requests at this gateway, by model and outcome (answered, failed, rejected, overloaded, busy, disconnected), as /stats' gateway section counts them");
            meter.CreateObservableCounter(TokensInstrument, ObserveTokens, "{token}", "Tokens of the forward requests this gateway answered, by model");
            _duration = meter.CreateHistogram("moecluster.gateway.request.duration", "s", "Arrival to reply of the forward requests this gateway answered, by model", advice: new InstrumentAdvice<double>
            {
                HistogramBucketBoundaries = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
            });
        }
    }

    public const string RequestsInstrument = "moecluster.gateway.requests";

    public const string TokensInstrument = "moecluster.gateway.tokens";

    /// <summary>Records an answered request (2xx) of <paramref name="tokens"/> tokens.</summary>
    public void RecordAnswered(string model, int tokens, TimeSpan latency)
    {
        long micros = Math.Clamp((long)(latency.Ticks / 10.0), 1, MaxLatencyMicroseconds);
        _duration?.Record(latency.TotalSeconds, new KeyValuePair<string, object?>("model", model));
        lock (_gate)
        {
            var second = Current();
            second.Latency.RecordValue(micros);
            second.Tokens += tokens;
            second.Requests++;
            _all.RecordValue(micros);
            var counters = Model(model);
            counters.Answered++;
            counters.Tokens += tokens;
        }
    }

    /// <summary>Records a request the cluster failed to answer (5xx).</summary>
    public void RecordFailed(string model)
    {
        lock (_gate)
        {
            Model(model).Failed++;
        }
    }

    /// <summary>Records a request refused as bad input (4xx); model is "" when none could be resolved.</summary>
    public void RecordRejected(string model)
    {
        lock (_gate)
        {
            Model(model).Rejected++;
        }
    }

    /// <summary>Records a request refused because a limit on work in flight was reached (503 with Retry-After): neither the client's fault nor a failure.</summary>
    public void RecordOverloaded(string model)
    {
        lock (_gate)
        {
            Model(model).Overloaded++;
        }
    }

    /// <summary>Records a request refused because an expert shard's queue was full (429 with Retry-After): back-pressure, not a failure.</summary>
    public void RecordBusy(string model)
    {
        lock (_gate)
        {
            Model(model).Busy++;
        }
    }

    /// <summary>Records a request whose client disconnected before it was answered.</summary>
    public void RecordDisconnected(string model)
    {
        lock (_gate)
        {
            Model(model).Disconnected++;
        }
    }

    public GatewayRequestReport Snapshot()
    {
        lock (_gate)
        {
            long now = _clock.GetUtcNow().ToUnixTimeSeconds();
            var recent = NewHistogram();
            long rateTokens = 0;
            var timeline = new List<TimelinePoint>(TimelineSeconds);
            for (long s = now - TimelineSeconds; s <= now; s++)
            {
                var bucket = _seconds[Index(s)];
                bool live = bucket.Epoch == s;
                if (live && s > now - RecentSeconds)
                {
                    recent.Add(bucket.Latency);
                }

                if (live && s < now && s >= now - RateSeconds)
                {
                    rateTokens += bucket.Tokens;
                }

                if (s < now && s >= _startSecond)
                {
                    timeline.Add(new TimelinePoint(s, live ? bucket.Tokens : 0, live ? bucket.Requests : 0));
                }
            }

            long answered = _models.Values.Sum(m => m.Answered);
            return new GatewayRequestReport(
                now,
                new RequestCounts(
                    answered + _models.Values.Sum(m => m.Failed),
                    answered,
                    _models.Values.Sum(m => m.Failed),
                    _models.Values.Sum(m => m.Rejected),
                    _models.Values.Sum(m => m.Overloaded),
                    _models.Values.Sum(m => m.Disconnected),
                    _models.Values.Sum(m => m.Busy)),
                _models.Values.Sum(m => m.Tokens),
                (double)rateTokens / Math.Clamp(now - _startSecond, 1, RateSeconds),
                Percentiles.Of(_all),
                Percentiles.Of(recent),
                RecentSeconds,
                [.. _models.OrderBy(m => m.Key, StringComparer.Ordinal).Select(m => new ModelRequestCounts(m.Key, m.Value.Answered, m.Value.Failed, m.Value.Rejected, m.Value.Tokens, m.Value.Overloaded, m.Value.Disconnected, m.Value.Busy))],
                timeline);
        }
    }

    private static LongHistogram NewHistogram() => new(MaxLatencyMicroseconds, 3);

    private List<Measurement<long>> ObserveRequests()
    {
        var measurements = new List<Measurement<long>>();
        lock (_gate)
        {
            foreach (var (model, c) in _models)
            {
                void Add(string outcome, long value) => measurements.Add(new Measurement<long>(value, new KeyValuePair<string, object?>("model", model), new KeyValuePair<string, object?>("outcome", outcome)));
                Add("answered", c.Answered);
                Add("failed", c.Failed);
                Add("rejected", c.Rejected);
                Add("overloaded", c.Overloaded);
                Add("busy", c.Busy);
                Add("disconnected", c.Disconnected);
            }
        }

        return measurements;
    }

    private List<Measurement<long>> ObserveTokens()
    {
        lock (_gate)
        {
            return [.. _models.Select(m => new Measurement<long>(m.Value.Tokens, new KeyValuePair<string, object?>("model", m.Key)))];
        }
    }

    private static int Index(long second) => (int)(((second % (TimelineSeconds + 1)) + TimelineSeconds + 1) % (TimelineSeconds + 1));

    private Second Current()
    {
        long now = _clock.GetUtcNow().ToUnixTimeSeconds();
        var bucket = _seconds[Index(now)];
        if (bucket.Epoch != now)
        {
            bucket.Epoch = now;
            bucket.Tokens = 0;
            bucket.Requests = 0;
            bucket.Latency.Reset();
        }

        return bucket;
    }

    private ModelCounters Model(string model)
    {
        if (!_models.TryGetValue(model, out var counters))
        {
            _models[model] = counters = new ModelCounters();
        }

        return counters;
    }

    private sealed class Second
    {
        public long Epoch { get; set; } = long.MinValue;

        public long Tokens { get; set; }

        public long Requests { get; set; }

        public LongHistogram Latency { get; } = NewHistogram();
    }

    private sealed class ModelCounters
    {
        public long Answered { get; set; }

        public long Failed { get; set; }

        public long Rejected { get; set; }

        public long Overloaded { get; set; }

        public long Disconnected { get; set; }

        public long Busy { get; set; }

        public long Tokens { get; set; }
    }
}

/// <summary>
/// The <c>gateway</c> section of <c>/stats</c>. Latencies in milliseconds; <c>sent</c> = answered + failed (rejected,
/// overloaded (503), busy (429: an expert shard's queue was full) and disconnected requests are counted apart).
/// </summary>
public sealed record GatewayRequestReport(
    long UnixSeconds,
    RequestCounts Requests,
    long Tokens,
    double TokensPerSecond,
    Percentiles LatencyMs,
    Percentiles RecentLatencyMs,
    int RecentWindowSeconds,
    IReadOnlyList<ModelRequestCounts> PerModel,
    IReadOnlyList<TimelinePoint> Timeline);

public sealed record RequestCounts(long Sent, long Answered, long Failed, long Rejected, long Overloaded = 0, long Disconnected = 0, long Busy = 0);

public sealed record ModelRequestCounts(string Model, long Answered, long Failed, long Rejected, long Tokens, long Overloaded = 0, long Disconnected = 0, long Busy = 0);

/// <summary>Tokens and requests answered in the second starting at <see cref="UnixSecond"/>.</summary>
public sealed record TimelinePoint(long UnixSecond, long Tokens, long Requests);

/// <summary>Latency percentiles in milliseconds (0 when nothing was recorded).</summary>
public sealed record Percentiles(long Count, double P50, double P90, double P99, double P999, double Max)
{
    public static Percentiles Of(HistogramBase histogram)
    {
        if (histogram.TotalCount == 0)
        {
            return new Percentiles(0, 0, 0, 0, 0, 0);
        }

        static double Ms(long micros) => Math.Round(micros / 1000.0, 3);
        return new Percentiles(
            histogram.TotalCount,
            Ms(histogram.GetValueAtPercentile(50)),
            Ms(histogram.GetValueAtPercentile(90)),
            Ms(histogram.GetValueAtPercentile(99)),
            Ms(histogram.GetValueAtPercentile(99.9)),
            Ms(histogram.GetMaxValue()));
    }
}
