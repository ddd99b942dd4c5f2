using HdrHistogram;

namespace MoECluster.Cli.Load;

/// <summary>Whether a request belongs to the warm-up (not recorded in the results) or the measured window.</summary>
internal enum LoadPhase
{
    Warmup,
    Measured,
}

/// <summary>
/// Counters and latency histograms (microseconds) of a load run, per model and overall, thread-safe. Every request
/// is counted as sent when it starts and as ok, failed or busy when it ends, so sent = ok + failed + busy once all have
/// ended. Busy: refused with 429 (an expert shard's queue was full) — back-pressure, not a failure.
/// </summary>
internal sealed class LoadRecorder
{
    private const long HighestMicroseconds = 3_600_000_000L;

    private readonly object _gate = new();
    private readonly Dictionary<string, ModelTally> _models;
    private readonly Tally _overall = new();
    private readonly Tally _warmup = new();
    private readonly List<(long RequestsOk, long Tokens)> _seconds = [];
    private LongHistogram _interval = NewHistogram();
    private int _inFlight;
    private int _peakInFlight;

    public LoadRecorder(IEnumerable<(string Id, string Mode)> models)
    {
        _models = models.ToDictionary(m => m.Id, m => new ModelTally(m.Mode));
    }

    public static LongHistogram NewHistogram() => new(1, HighestMicroseconds, 3);

    public void Sent(string model, LoadPhase phase)
    {
        lock (_gate)
        {
            TallyOf(phase).Sent++;
            _models[model].Of(phase).Sent++;
        }
    }

    /// <summary>A failed request; <paramref name="overloaded"/> when the gateway refused it for overload (503), also counted as failed.</summary>
    public void Failed(string model, LoadPhase phase, bool overloaded = false) =>
        Failed(model, phase, overloaded ? new RequestError(RequestErrorKind.Overloaded, 503) : new RequestError(RequestErrorKind.Other, 0));

    /// <summary>A failed request and why (its HTTP status, a timeout, a connection error...); a 503 also counts as overloaded.</summary>
    public void Failed(string model, LoadPhase phase, RequestError error)
    {
        lock (_gate)
        {
            var tally = TallyOf(phase);
            var mt = _models[model].Of(phase);
            tally.Failed++;
            mt.Failed++;
            tally.Errors.Add(error);
            if (error.Kind == RequestErrorKind.Overloaded)
            {
                tally.Overloaded++;
                mt.Overloaded++;
            }
        }
    }

    /// <summary>
    /// A request began: <paramref name="lateMicroseconds"/> after its intended start (closed loop: 0), having waited for
    /// the <c>--max-concurrency</c> cap or not; late past <paramref name="thresholdMicroseconds"/>. Counts it in flight.
    /// </summary>
    public void Started(LoadPhase phase, long lateMicroseconds, bool waitedForCap, long thresholdMicroseconds)
    {
        lock (_gate)
        {
            var tally = TallyOf(phase);
            _inFlight++;
            _peakInFlight = Math.Max(_peakInFlight, _inFlight);
            if (waitedForCap)
            {
                tally.WaitedForCap++;
            }

            if (lateMicroseconds > thresholdMicroseconds)
            {
                tally.Late++;
                if (waitedForCap)
                {
                    tally.LateByCap++;
                }
            }

            tally.MaxLateMicroseconds = Math.Max(tally.MaxLateMicroseconds, lateMicroseconds);
        }
    }

    /// <summary>A request that <see cref="Started"/> has ended (whatever its outcome).</summary>
    public void Ended()
    {
        lock (_gate)
        {
            _inFlight--;
        }
    }

    /// <summary>A request refused with 429 (an expert shard's queue was full): counted apart, not as failed.</summary>
    public void Busy(string model, LoadPhase phase)
    {
        lock (_gate)
        {
            TallyOf(phase).Busy++;
            TallyOf(phase).Errors.Add(new RequestError(RequestErrorKind.Busy, 429));
            _models[model].Of(phase).Busy++;
        }
    }

    /// <summary>
    /// A successful request: its latency, the seconds from the start of the measured window to its end (its
    /// one-second bucket of the timeline; negative values count in the first) and, from the response, what its layers routed.
    /// </summary>
    public void Ok(string model, LoadPhase phase, long microseconds, double endSeconds, int tokens, long payloadBytes, long predictedBytes, long routedRows, long trafficTokens)
    {
        long us = Math.Clamp(microseconds, 1, HighestMicroseconds);
        lock (_gate)
        {
            var m = _models[model];
            var tally = TallyOf(phase);
            var mt = m.Of(phase);
            tally.Ok++;
            tally.Tokens += tokens;
            mt.Ok++;
            mt.Tokens += tokens;
            _interval.RecordValue(us);
            if (phase == LoadPhase.Measured)
            {
                _overall.Latency.RecordValue(us);
                mt.Latency.RecordValue(us);
                m.PayloadBytes += payloadBytes;
                m.PredictedBytes += predictedBytes;
                m.RoutedRows += routedRows;
                m.TrafficTokens += trafficTokens;
                int second = double.IsNaN(endSeconds) || endSeconds < 0 ? 0 : (int)Math.Min(Math.Floor(endSeconds), 86_400 * 2);
                while (_seconds.Count <= second)
                {
                    _seconds.Add((0, 0));
                }

                var (requestsOk, bucketTokens) = _seconds[second];
                _seconds[second] = (requestsOk + 1, bucketTokens + tokens);
            }
        }
    }

    /// <summary>Counts so far and the latency percentiles of the requests that ended since the last call (p50, p99 in ms).</summary>
    public (long Sent, long Ok, long Failed, long Busy, long Tokens, double? P50, double? P99) Progress()
    {
        lock (_gate)
        {
            long sent = _overall.Sent + _warmup.Sent, ok = _overall.Ok + _warmup.Ok, failed = _overall.Failed + _warmup.Failed;
            long busy = _overall.Busy + _warmup.Busy, tokens = _overall.Tokens + _warmup.Tokens;
            double? p50 = null, p99 = null;
            if (_interval.TotalCount > 0)
            {
                p50 = _interval.GetValueAtPercentile(50) / 1000.0;
                p99 = _interval.GetValueAtPercentile(99) / 1000.0;
            }

            _interval = NewHistogram();
            return (sent, ok, failed, busy, tokens, p50, p99);
        }
    }

    /// <summary>A consistent copy of everything recorded.</summary>
    public LoadSnapshot Snapshot()
    {
        lock (_gate)
        {
            return new LoadSnapshot(
                _overall.Copy(),
                _warmup.Copy(),
                _models.ToDictionary(kv => kv.Key, kv => new ModelSnapshot(kv.Value.Mode, kv.Value.Measured.Copy(), kv.Value.Warmup.Copy(),
                    kv.Value.PayloadBytes, kv.Value.PredictedBytes, kv.Value.RoutedRows, kv.Value.TrafficTokens)),
                [.. _seconds.Select((b, i) => new SecondSnapshot(i, b.RequestsOk, b.Tokens))],
                _peakInFlight);
        }
    }

    private Tally TallyOf(LoadPhase phase) => phase == LoadPhase.Measured ? _overall : _warmup;

    private sealed class Tally
    {
        public long Sent { get; set; }

        public long Ok { get; set; }

        public long Failed { get; set; }

        public long Tokens { get; set; }

        public long Overloaded { get; set; }

        public long Busy { get; set; }

        public LongHistogram Latency { get; } = NewHistogram();

        public ErrorCounts Errors { get; } = new();

        public long WaitedForCap { get; set; }

        public long Late { get; set; }

        public long LateByCap { get; set; }

        public long MaxLateMicroseconds { get; set; }

        public TallySnapshot Copy() => new(Sent, Ok, Failed, Tokens, (LongHistogram)Latency.Copy(), Overloaded, Busy)
        {
            Errors = Errors.Copy(),
            Starts = new StartCounts(WaitedForCap, Late, LateByCap, MaxLateMicroseconds),
        };
    }

    private sealed class ModelTally(string mode)
    {
        public string Mode { get; } = mode;

        public Tally Measured { get; } = new();

        public Tally Warmup { get; } = new();

        public long PayloadBytes { get; set; }

        public long PredictedBytes { get; set; }

        public long RoutedRows { get; set; }

        public long TrafficTokens { get; set; }

        public Tally Of(LoadPhase phase) => phase == LoadPhase.Measured ? Measured : Warmup;
    }
}

/// <summary>
/// Counts of one phase; <see cref="Overloaded"/> is the part of <see cref="Failed"/> refused for overload (503);
/// <see cref="Busy"/> the requests refused with 429 (a shard's queue full), not in <see cref="Failed"/>.
/// </summary>
internal sealed record TallySnapshot(long Sent, long Ok, long Failed, long Tokens, LongHistogram Latency, long Overloaded = 0, long Busy = 0)
{
    /// <summary>The requests not answered 2xx, by kind and by HTTP status.</summary>
    public ErrorCounts Errors { get; init; } = new();

    /// <summary>When the requests began against when they were meant to.</summary>
    public StartCounts Starts { get; init; } = new(0, 0, 0, 0);
}

/// <summary>
/// Requests that waited for the <c>--max-concurrency</c> cap; requests that began more than the late threshold after
/// their intended start (<see cref="LateByCap"/> of them had waited for the cap, the others were late because the
/// client could not keep up); the largest delay seen.
/// </summary>
internal sealed record StartCounts(long WaitedForCap, long Late, long LateByCap, long MaxLateMicroseconds);

/// <summary>One model's counts; bytes and rows summed over the layers of its measured successful responses.</summary>
internal sealed record ModelSnapshot(string Mode, TallySnapshot Measured, TallySnapshot Warmup, long PayloadBytes, long PredictedBytes, long RoutedRows, long TrafficTokens);

/// <summary>One second of the measured window (by request end): successful requests and their tokens.</summary>
internal sealed record SecondSnapshot(int Second, long RequestsOk, long Tokens);

/// <summary>Everything recorded; <see cref="PeakInFlight"/>: the most requests in flight at once (warm-up included).</summary>
internal sealed record LoadSnapshot(TallySnapshot Overall, TallySnapshot Warmup, IReadOnlyDictionary<string, ModelSnapshot> Models, IReadOnlyList<SecondSnapshot> Timeline, int PeakInFlight = 0);
