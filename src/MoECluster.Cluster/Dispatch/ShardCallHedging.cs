using System.Collections.Concurrent;
using System.Diagnostics;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using MoECluster.Cluster.Contracts;
using MoECluster.Cluster.Hosting;
using MoECluster.Cluster.Placement;
using Orleans.Runtime.MembershipService.SiloMetadata;

namespace MoECluster.Cluster.Dispatch;

/// <summary>
/// Hedged shard calls: what a router does about a hung expert silo (a process that keeps its TCP connections open and
/// answers nothing: stopped, swapping, deadlocked). Orleans finds such a silo only by missed probes, and suppresses
/// death votes while the connection carried a message within MaxProbeTimeout × NumMissedProbesLimit, so it is declared
/// dead seconds later than a killed one, and the calls in flight to it wait until then. Instead, a call that has not
/// answered within a delay derived from the shard's own recent latency (<see cref="ShardHedgingOptions"/>) is sent
/// again to the shard's alternate (<see cref="ShardKeys.Alternate"/>, placed on another expert silo), and the first
/// answer wins; the other call is cancelled. A shard call is a pure function of its rows, so either answer is the
/// answer. After an alternate has answered an overdue call, the shard's calls go to the alternate first for
/// <see cref="ShardHedgingOptions.PreferAlternateSeconds"/> or until membership changes (hedged back the same way), so
/// a hung silo costs one hedge delay per shard and period, not one per request. One instance per silo: every router activation shares the latencies.
/// </summary>
public sealed partial class ShardCallHedging(
    IOptions<MoeClusterOptions> options,
    IClusterMembershipService membership,
    ISiloMetadataCache metadata,
    IShardPlacementPolicy placement,
    ILogger<ShardCallHedging> logger)
{
    private readonly ConcurrentDictionary<string, ShardState> _shards = new(StringComparer.Ordinal);

    /// <summary>
    /// Calls <paramref name="primary"/> (the shard's grain) or, when that is overdue, <paramref name="alternate"/> too (the
    /// shard's alternate on the silo placement gives it); returns the first successful answer. Failures of both (or of
    /// the only call) propagate, for <see cref="ShardCallRetry"/>. An attempt that has not answered within twice the hedge
    /// delay (at least 2 s; not on a shard's first call) fails with <see cref="ShardCallTimeoutException"/>, which the
    /// retry sends again: a call can be lost with a silo that membership has just declared dead, and with one expert silo
    /// left there is nothing to hedge to.
    /// </summary>
    public async Task<T> CallAsync<T>(string key, int rows, Func<CancellationToken, Task<T>> primary, Func<SiloAddress, CancellationToken, Task<T>> alternate, CancellationToken cancellationToken)
    {
        var settings = options.Value.ShardHedging;
        if (!settings.Enabled)
        {
            return await primary(cancellationToken);
        }

        var state = _shards.GetOrAdd(key, k => new ShardState(k));
        var snapshot = membership.CurrentSnapshot;
        string first = state.Preferred(snapshot.Version);

        // An alternate that is called first may have no latency sample of its own yet: then the shard's is the measure.
        TimeSpan? delay = state.HedgeDelay(first, rows, settings) ?? state.HedgeDelay(key, rows, settings);
        if (delay is null)
        {
            return await TimedAsync(state, key, rows, primary, cancellationToken);
        }

        var attemptTimeout = TimeSpan.FromTicks(Math.Max(2 * delay.Value.Ticks, TimeSpan.FromSeconds(2).Ticks));
        using var attempt = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        attempt.CancelAfter(attemptTimeout);
        try
        {
            return await HedgedAsync(state, snapshot, key, first, delay.Value, rows, primary, alternate, settings, attempt.Token);
        }
        catch (OperationCanceledException) when (attempt.IsCancellationRequested && !cancellationToken.IsCancellationRequested)
        {
            TimedOut(logger, key, attemptTimeout.TotalMilliseconds);
            throw new ShardCallTimeoutException($"shard call to {key} did not answer within {attemptTimeout.TotalMilliseconds:F0} ms");
        }
    }

    private async Task<T> HedgedAsync<T>(
        ShardState state, ClusterMembershipSnapshot snapshot, string key, string first, TimeSpan delay, int rows,
        Func<CancellationToken, Task<T>> primary, Func<SiloAddress, CancellationToken, Task<T>> alternate, ShardHedgingOptions settings, CancellationToken cancellationToken)
    {
        string alternateKey = ShardKeys.Alternate(key);
        var experts = ExpertSilos.Active(snapshot, metadata);
        if (experts.Count < 2)
        {
            // One expert silo (or none) in this view: the alternate would sit beside the shard; only the timeout helps.
            return await TimedAsync(state, key, rows, primary, cancellationToken);
        }

        // Where the alternate lives: where the placement policy puts it (the default: the expert silo after the shard's own).
        var alternateSilo = placement.Choose(ShardIdentity.Parse(alternateKey), experts, options.Value.Pins);
        if (alternateSilo is null)
        {
            return await TimedAsync(state, key, rows, primary, cancellationToken);
        }

        bool alternateFirst = first != key;
        string second = alternateFirst ? key : alternateKey;
        Func<CancellationToken, Task<T>> callFirst = alternateFirst ? c => alternate(alternateSilo, c) : primary;
        Func<CancellationToken, Task<T>> callSecond = alternateFirst ? primary : c => alternate(alternateSilo, c);
        using var firstCancel = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        using var secondCancel = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var firstCall = TimedAsync(state, first, rows, callFirst, firstCancel.Token);
        using (var wait = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken))
        {
            if (await Task.WhenAny(firstCall, Task.Delay(delay, wait.Token)) == firstCall)
            {
                await wait.CancelAsync();
                return await firstCall;
            }
        }

        cancellationToken.ThrowIfCancellationRequested();
        Hedging(logger, first, delay.TotalMilliseconds, second);
        var secondCall = TimedAsync(state, second, rows, callSecond, secondCancel.Token);
        var winner = await Task.WhenAny(firstCall, secondCall);
        var other = winner == firstCall ? secondCall : firstCall;
        if (!winner.IsCompletedSuccessfully)
        {
            // The first to finish failed: the other may still answer. If it fails too, the first failure is the one to retry on.
            try
            {
                T answer = await other;
                Won(state, other == secondCall, second, settings, snapshot.Version);
                return answer;
            }
            catch (Exception) when (!cancellationToken.IsCancellationRequested)
            {
                return await winner;
            }
        }

        await (winner == firstCall ? secondCancel : firstCancel).CancelAsync();
        Observe(other);
        Won(state, winner == secondCall, second, settings, snapshot.Version);
        return await winner;
    }

    private void Won(ShardState state, bool hedgeWon, string hedgeKey, ShardHedgingOptions settings, MembershipVersion version)
    {
        if (hedgeWon)
        {
            state.Prefer(hedgeKey, settings, version);
            HedgeWon(logger, hedgeKey, settings.PreferAlternateSeconds);
        }
    }

    private static async Task<T> TimedAsync<T>(ShardState state, string key, int rows, Func<CancellationToken, Task<T>> call, CancellationToken cancellationToken)
    {
        long start = Stopwatch.GetTimestamp();
        T result = await call(cancellationToken).WaitAsync(cancellationToken);
        state.Record(key, rows, Stopwatch.GetElapsedTime(start).TotalMilliseconds);
        return result;
    }

    /// <summary>The losing call's outcome (usually its cancellation) is of no interest, but must not go unobserved.</summary>
    private static void Observe(Task task) =>
        task.ContinueWith(static t => _ = t.Exception, CancellationToken.None, TaskContinuationOptions.OnlyOnFaulted | TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);

    [LoggerMessage(Level = LogLevel.Warning, Message = "shard call to {Key} did not answer within {TimeoutMs:F0} ms: cancelled, to be sent again")]
    private static partial void TimedOut(ILogger logger, string key, double timeoutMs);

    [LoggerMessage(Level = LogLevel.Warning, Message = "shard call to {Key} has not answered in {DelayMs:F0} ms: hedging to {Hedge}")]
    private static partial void Hedging(ILogger logger, string key, double delayMs, string hedge);

    [LoggerMessage(Level = LogLevel.Warning, Message = "{Hedge} answered first; it is called first for the next {Seconds:F0} s")]
    private static partial void HedgeWon(ILogger logger, string hedge, double seconds);

    /// <summary>Latency statistics of a shard's two activations, and which one is called first.</summary>
    private sealed class ShardState(string shardKey)
    {
        private readonly string _key = shardKey;
        private const double Alpha = 0.1;
        private readonly Dictionary<string, Latency> _latency = new(StringComparer.Ordinal);
        private readonly HashSet<string> _called = new(StringComparer.Ordinal);
        private string _preferred = shardKey;
        private long _preferredUntil;
        private MembershipVersion _preferredIn = MembershipVersion.MinValue;

        /// <summary>
        /// The key to call first: the one that answered an overdue call, for a while, and only while membership is
        /// unchanged (once the hung silo is declared dead, the shard itself is re-placed and called first again).
        /// </summary>
        public string Preferred(MembershipVersion version)
        {
            lock (_latency)
            {
                return _preferred != _key && Stopwatch.GetTimestamp() < _preferredUntil && version == _preferredIn ? _preferred : _key;
            }
        }

        public void Prefer(string hedgeKey, ShardHedgingOptions settings, MembershipVersion version)
        {
            lock (_latency)
            {
                _preferred = hedgeKey;
                _preferredUntil = Stopwatch.GetTimestamp() + (long)(settings.PreferAlternateSeconds * Stopwatch.Frequency);
                _preferredIn = version;
            }
        }

        /// <summary>
        /// How long to wait for <paramref name="target"/> before hedging: the multiplier times its expected latency for
        /// <paramref name="rows"/> rows (mean + 4 mean deviations, scaled by rows over the usual rows when larger), within
        /// the bounds; null before any sample (a first call loads the shard's weights: it is not hedged).
        /// </summary>
        public TimeSpan? HedgeDelay(string target, int rows, ShardHedgingOptions settings)
        {
            lock (_latency)
            {
                if (!_latency.TryGetValue(target, out var l))
                {
                    return null;
                }

                double expected = (l.MeanMs + (4 * l.DeviationMs)) * Math.Max(1, rows / Math.Max(1, l.MeanRows));
                double ms = Math.Clamp(settings.LatencyMultiplier * expected, settings.MinDelayMilliseconds, Math.Max(settings.MinDelayMilliseconds, settings.MaxDelayMilliseconds));
                return TimeSpan.FromMilliseconds(ms);
            }
        }

        public void Record(string target, int rows, double ms)
        {
            lock (_latency)
            {
                // The first answer of an activation includes loading its weights: not a sample of its latency.
                if (_called.Add(target))
                {
                    return;
                }

                if (!_latency.TryGetValue(target, out var l))
                {
                    _latency[target] = new Latency(ms, ms / 2, rows);
                    return;
                }

                double deviation = l.DeviationMs + (Alpha * (Math.Abs(ms - l.MeanMs) - l.DeviationMs));
                _latency[target] = new Latency(l.MeanMs + (Alpha * (ms - l.MeanMs)), deviation, l.MeanRows + (Alpha * (rows - l.MeanRows)));
            }
        }

        private readonly record struct Latency(double MeanMs, double DeviationMs, double MeanRows);
    }
}

/// <summary>A shard call (hedged or not) did not answer within its attempt timeout; <see cref="ShardCallRetry"/> sends it again.</summary>
public sealed class ShardCallTimeoutException(string message) : TimeoutException(message);
