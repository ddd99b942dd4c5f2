using System.Diagnostics;

namespace MoECluster.Cluster.Requests;

/// <summary>
/// Batching at the front-end (pure logic, no Orleans): concurrent forward requests for the same key (model, layer or stack,
/// wire type) share one forward over all their tokens. A key with no forward in progress starts a lone request at once (no
/// timer, no added latency); requests that arrive while a forward of their key runs wait in the key's queue, and when it
/// ends ALL of them (up to <c>maxTokens</c> tokens; a lone request larger than that still runs, alone) go into the next
/// forward: their hidden rows [tokens, width] concatenated in arrival order, the forward called once, each caller's rows
/// of the output split back. Every token of an MoE layer and of the stack is independent of the others, so this is exact.
/// At most <c>maxInFlight</c> forwards per key are in flight at a time (default 1: a forward runs, the next waits for it);
/// different keys run at once.
/// <para>
/// Per caller: a caller that cancels while queued leaves the queue; one whose rows are in a forward in progress gets its
/// cancellation at once (the forward goes on for the others, and is itself cancelled once every caller in it has
/// cancelled). A forward of several requests that fails with a request's own fault (<c>isRequestFault</c>: input too
/// large for the model) is run again one request at a time, so only that request fails; any other failure (a shard that
/// failed, timed out) fails every caller of the forward with the same exception.
/// </para>
/// </summary>
/// <typeparam name="TKey">What requests must share to be batched.</typeparam>
/// <typeparam name="TTraffic">What a forward reports besides its output (the batch's traffic), handed to every caller.</typeparam>
/// <param name="forward">One forward: key, hidden rows [tokens, width], tokens, cancellation → output rows [tokens, width] and the batch's traffic.</param>
/// <param name="isRequestFault">Whether an exception of a forward of several requests may be one request's fault (then each is run alone).</param>
/// <param name="maxTokens">Most tokens one forward merges (at least 1).</param>
/// <param name="batched">Told of every forward that succeeded (requests, tokens, time), for the ledger.</param>
/// <param name="maxInFlight">Most forwards of one key in flight at once (at least 1); with more than one, a request that
/// arrives while fewer run starts its own forward at once, so that one forward's front-end work overlaps another's wait for
/// the shards.</param>
public sealed class ForwardBatcher<TKey, TTraffic>(
    Func<TKey, float[], int, CancellationToken, Task<ForwardBatchOutput<TTraffic>>> forward,
    Func<Exception, bool> isRequestFault,
    int maxTokens,
    Action<TKey, FrontEndBatch>? batched = null,
    int maxInFlight = 1)
    where TKey : notnull
{
    private readonly object _gate = new();
    private readonly Dictionary<TKey, Lane> _lanes = [];

    /// <summary>Most tokens one forward merges.</summary>
    public int MaxTokens { get; } = maxTokens >= 1 ? maxTokens : throw new ArgumentOutOfRangeException(nameof(maxTokens), maxTokens, "at least 1");

    /// <summary>Most forwards of one key in flight at once.</summary>
    public int MaxInFlight { get; } = maxInFlight >= 1 ? maxInFlight : throw new ArgumentOutOfRangeException(nameof(maxInFlight), maxInFlight, "at least 1");

    /// <summary>Requests of <paramref name="key"/> waiting for the next forward.</summary>
    public int Queued(TKey key)
    {
        lock (_gate)
        {
            return _lanes.TryGetValue(key, out var lane) ? lane.Queue.Count : 0;
        }
    }

    /// <summary>
    /// Queues <paramref name="hidden"/> ([<paramref name="tokens"/>, width]) for the next forward of <paramref name="key"/>,
    /// which starts now if none runs; completes with this caller's output rows, in its own order, and the forward's traffic.
    /// </summary>
    public Task<ForwardBatchResult<TTraffic>> ForwardAsync(TKey key, float[] hidden, int tokens, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(hidden);
        if (tokens < 1 || hidden.Length % tokens != 0 || hidden.Length == 0)
        {
            // Checked here, not in the forward: a request of the wrong shape would shift every other caller's rows.
            throw new ArgumentException($"{tokens} tokens need [{tokens}, width] hidden states; got {hidden.Length} values", nameof(hidden));
        }

        cancellationToken.ThrowIfCancellationRequested();
        var item = new Item(this, hidden, tokens);
        if (cancellationToken.CanBeCanceled)
        {
            item.Registration = cancellationToken.Register(static (state, token) => ((Item)state!).Owner.Cancelled((Item)state!, token), item);
        }

        Lane? start = null;
        lock (_gate)
        {
            if (!_lanes.TryGetValue(key, out var lane))
            {
                _lanes[key] = lane = new Lane(hidden.Length / tokens);
            }

            if (lane.Width != item.Width)
            {
                item.Registration.Dispose();
                throw new ArgumentException($"rows of {item.Width} values where the requests of this key have {lane.Width}", nameof(hidden));
            }

            lane.Queue.Enqueue(item);
            if (lane.Running < MaxInFlight)
            {
                lane.Running++;
                start = lane;
            }
        }

        if (start is not null)
        {
            _ = Task.Run(() => RunAsync(key, start), CancellationToken.None);
        }

        return item.Result.Task;
    }

    private async Task RunAsync(TKey key, Lane lane)
    {
        while (true)
        {
            List<Item> batch;
            lock (_gate)
            {
                batch = Take(lane);
                if (batch.Count == 0)
                {
                    // Idle: when no other forward of the key runs, the key holds nothing until its next request.
                    if (--lane.Running == 0)
                    {
                        _lanes.Remove(key);
                    }

                    return;
                }
            }

            try
            {
                await ExecuteAsync(key, batch, retryAlone: batch.Count > 1).ConfigureAwait(false);
            }
            catch (Exception e)
            {
                // Never leave a caller waiting or the key stuck (the loop goes on with the next forward).
                foreach (var item in batch)
                {
                    Fail(item, e);
                }
            }
        }
    }

    /// <summary>The next forward: queued requests in arrival order while the bound allows (at least one); the caller holds the lock.</summary>
    private List<Item> Take(Lane lane)
    {
        var batch = new List<Item>();
        long tokens = 0;
        while (lane.Queue.TryPeek(out var next))
        {
            if (next.Result.Task.IsCompleted)
            {
                // Cancelled while queued.
                lane.Queue.Dequeue().Registration.Dispose();
                continue;
            }

            if (batch.Count > 0 && tokens + next.Tokens > MaxTokens)
            {
                break;
            }

            batch.Add(lane.Queue.Dequeue());
            tokens += next.Tokens;
        }

        return batch;
    }

    private async Task ExecuteAsync(TKey key, List<Item> batch, bool retryAlone)
    {
        using var running = new Running();
        lock (_gate)
        {
            foreach (var item in batch)
            {
                item.Running = running;
                running.Live += item.Result.Task.IsCompleted ? 0 : 1;
            }

            if (running.Live == 0)
            {
                return;
            }
        }

        int width = batch[0].Width;
        int total = batch.Sum(i => i.Tokens);
        float[] hidden = batch.Count == 1 ? batch[0].Hidden : Concatenate(batch, total, width);
        var clock = Stopwatch.StartNew();
        ForwardBatchOutput<TTraffic> output;
        try
        {
            output = await forward(key, hidden, total, running.Token).ConfigureAwait(false);
            if (output.Hidden.Length != (long)total * width)
            {
                throw new InvalidOperationException($"the forward of {total} tokens answered {output.Hidden.Length} values, not [{total}, {width}]");
            }
        }
        catch (Exception e) when (retryAlone && isRequestFault(e))
        {
            // One request's rows made the forward fail: each alone, so that only its caller sees the error.
            foreach (var item in batch)
            {
                await ExecuteAsync(key, [item], retryAlone: false).ConfigureAwait(false);
            }

            return;
        }
        catch (Exception e)
        {
            foreach (var item in batch)
            {
                Fail(item, e);
            }

            return;
        }

        var pass = new FrontEndBatch(batch.Count, total, (long)clock.Elapsed.TotalMicroseconds);
        Report(key, pass);
        if (batch.Count == 1)
        {
            Complete(batch[0], new ForwardBatchResult<TTraffic>(output.Hidden, output.Traffic, pass));
            return;
        }

        int row = 0;
        foreach (var item in batch)
        {
            Complete(item, new ForwardBatchResult<TTraffic>(output.Hidden.AsSpan(row * width, item.Tokens * width).ToArray(), output.Traffic, pass));
            row += item.Tokens;
        }
    }

    private static float[] Concatenate(List<Item> batch, int total, int width)
    {
        var hidden = new float[(long)total * width];
        int row = 0;
        foreach (var item in batch)
        {
            item.Hidden.CopyTo(hidden, (long)row * width);
            row += item.Tokens;
        }

        return hidden;
    }

    /// <summary>A caller's token fired: its task ends now; the forward it is in is cancelled once none of its callers is left.</summary>
    private void Cancelled(Item item, CancellationToken token)
    {
        item.Result.TrySetCanceled(token);
        Running? running;
        lock (_gate)
        {
            running = item.Running;
        }

        running?.MemberCancelled();
    }

    private void Report(TKey key, FrontEndBatch pass)
    {
        try
        {
            batched?.Invoke(key, pass);
        }
        catch (Exception)
        {
            // Telemetry never fails a caller.
        }
    }

    private static void Complete(Item item, ForwardBatchResult<TTraffic> result)
    {
        item.Registration.Dispose();
        item.Result.TrySetResult(result);
    }

    private static void Fail(Item item, Exception e)
    {
        item.Registration.Dispose();
        item.Result.TrySetException(e);
    }

    private sealed class Lane(int width)
    {
        public int Width { get; } = width;

        public Queue<Item> Queue { get; } = new();

        /// <summary>Forwards of this key in flight (runner loops).</summary>
        public int Running { get; set; }
    }

    /// <summary>One forward in progress: its cancellation, cancelled when the last of its live callers cancels.</summary>
    private sealed class Running : IDisposable
    {
        private readonly object _gate = new();
        private readonly CancellationTokenSource _cancel = new();
        private bool _disposed;
        private int _live;

        public CancellationToken Token => _cancel.Token;

        /// <summary>Callers not yet cancelled (set under the batcher's lock before the forward starts).</summary>
        public int Live
        {
            get => _live;
            set => _live = value;
        }

        public void MemberCancelled()
        {
            if (Interlocked.Decrement(ref _live) != 0)
            {
                return;
            }

            lock (_gate)
            {
                if (!_disposed)
                {
                    _cancel.Cancel();
                }
            }
        }

        public void Dispose()
        {
            lock (_gate)
            {
                _disposed = true;
                _cancel.Dispose();
            }
        }
    }

    private sealed class Item(ForwardBatcher<TKey, TTraffic> owner, float[] hidden, int tokens)
    {
        public ForwardBatcher<TKey, TTraffic> Owner { get; } = owner;

        public float[] Hidden { get; } = hidden;

        public int Tokens { get; } = tokens;

        public int Width { get; } = hidden.Length / tokens;

        public Running? Running { get; set; }

        public TaskCompletionSource<ForwardBatchResult<TTraffic>> Result { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public CancellationTokenRegistration Registration { get; set; }
    }
}

/// <summary>What one forward answers: its output rows [tokens, width] and what it reports besides (the batch's traffic).</summary>
public sealed record ForwardBatchOutput<TTraffic>(float[] Hidden, TTraffic Traffic);

/// <summary>One caller's output rows [its tokens, width], in its own order; the traffic of the whole forward it ran in, and that forward.</summary>
public sealed record ForwardBatchResult<TTraffic>(float[] Hidden, TTraffic Traffic, FrontEndBatch Batch);

/// <summary>One forward at the front-end: how many requests and tokens it merged, and its time.</summary>
public readonly record struct FrontEndBatch(int Requests, int Tokens, long Microseconds);
