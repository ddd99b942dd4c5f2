using System.Diagnostics;
using System.Globalization;
using MoECluster.Cluster.Dispatch;
using MoECluster.Cluster.Hosting;
using MoECluster.Model.Dispatch;

namespace MoECluster.Cluster.Grains;

/// <summary>
/// Continuous batching at an expert shard (pure logic, no Orleans). Requests that arrive while the shard computes wait
/// in a queue; when the pass in progress ends, everything queued (up to <see cref="ShardBatchingOptions.MaxRows"/> rows and
/// <see cref="ShardBatchingOptions.MaxBytes"/> bytes) goes into ONE grouped pass: the rows of all requests concatenated,
/// their <see cref="RoutedPairs"/> concatenated (offsets shifted), the compute called once — each expert's rows of every
/// caller in one GEMM, so the shard's weights are streamed once per pass, not once per request — and the partial sums
/// split back to each caller in its own row order. An idle shard starts a lone request at once (no timer, no wait).
/// <para>
/// A pass of several requests that throws (a partial sum beyond float32, say) is run again one request at a time, so
/// only the request that causes it fails. A caller that cancels while queued leaves the queue; one whose rows are in a
/// pass in progress gets its cancellation when the pass ends.
/// </para>
/// </summary>
/// <param name="width">The width of every row (the experts' input and output width).</param>
/// <param name="compute">The grouped pass: rows [R, width] and their pairs in, partial sums [R, width] out (<c>GroupedExperts.ComputePartials</c>).</param>
/// <param name="bounds">How large one pass may grow; a lone request larger than the bounds still runs (alone).</param>
/// <param name="batched">Told of every pass run (requests, rows, time), for the ledger.</param>
public sealed class ShardBatcher(int width, Func<float[], RoutedPairs, float[]> compute, ShardBatchingOptions bounds, Action<ShardBatch>? batched = null)
{
    private readonly object _gate = new();
    private readonly Queue<Item> _queue = new();
    private long _queuedBytes;
    private long _queuedRows;
    private long _lastPassTicks;
    private bool _running;

    /// <summary>The width of every row.</summary>
    public int Width { get; } = width;

    /// <summary>Requests waiting for the next pass.</summary>
    public int Queued
    {
        get
        {
            lock (_gate)
            {
                return _queue.Count;
            }
        }
    }

    /// <summary>Bytes held by the requests waiting for the next pass (<see cref="BytesOf"/> of each).</summary>
    public long QueuedBytes
    {
        get
        {
            lock (_gate)
            {
                return _queuedBytes;
            }
        }
    }

    /// <summary>
    /// Refuses at once with <see cref="ShardBusyException"/> when the queue is already at one of its bounds, so that a
    /// caller can skip decoding a request that could not be queued. <see cref="ComputeAsync"/> checks again, exactly.
    /// </summary>
    public void ThrowIfFull()
    {
        lock (_gate)
        {
            if (_queue.Count > 0 && (_queue.Count >= bounds.MaxQueuedRequests || _queuedBytes >= bounds.MaxQueuedBytes))
            {
                throw Busy(0);
            }
        }
    }

    /// <summary>The bytes a request holds in a pass: its fp32 rows in, and one fp32 expert output per pair.</summary>
    public static long BytesOf(int rows, int pairs, int width) => 4L * width * ((long)rows + pairs);

    /// <summary>
    /// Queues <paramref name="z"/> (<c>pairs.Rows</c> rows of <see cref="Width"/>) for the next pass, which starts now if the
    /// shard is idle; completes with this request's partial sums [rows, width] and the pass it ran in. Throws
    /// <see cref="ShardBusyException"/> at once, queueing nothing, when the request would pass the queue's bounds.
    /// </summary>
    public Task<ShardBatchResult> ComputeAsync(float[] z, RoutedPairs pairs, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(z);
        ArgumentNullException.ThrowIfNull(pairs);
        if (z.Length != (long)pairs.Rows * Width)
        {
            // Checked here, not in the pass: a request of the wrong shape would shift every other caller's rows.
            throw new ArgumentException($"{pairs.Rows} rows of pairs need [{pairs.Rows}, {Width}] rows; got {z.Length} values", nameof(z));
        }

        if (pairs.Offsets.Length == 0 || pairs.Offsets[0] != 0 || pairs.Offsets[^1] != pairs.Experts.Length || pairs.Weights.Length != pairs.Experts.Length)
        {
            throw new ArgumentException($"pairs: offsets must run from 0 to the pair count ({pairs.Experts.Length}) with one weight per expert", nameof(pairs));
        }

        cancellationToken.ThrowIfCancellationRequested();
        var item = new Item(z, pairs, BytesOf(pairs.Rows, pairs.Count, Width));
        if (cancellationToken.CanBeCanceled)
        {
            item.Registration = cancellationToken.Register(static (state, token) => ((Item)state!).Result.TrySetCanceled(token), item);
        }

        bool start;
        ShardBusyException? busy = null;
        lock (_gate)
        {
            // The bound on what waits, checked before anything is queued.
            if (_queue.Count > 0 && (_queue.Count >= bounds.MaxQueuedRequests || _queuedBytes + item.Bytes > bounds.MaxQueuedBytes))
            {
                busy = Busy(item.Bytes);
                start = false;
            }
            else
            {
                _queue.Enqueue(item);
                _queuedBytes += item.Bytes;
                _queuedRows += pairs.Rows;
                start = !_running;
                _running = true;
            }
        }

        if (busy is not null)
        {
            // Refused: nothing queued, and the token keeps no callback.
            item.Registration.Dispose();
            throw busy;
        }

        if (start)
        {
            _ = Task.Run(Run, CancellationToken.None);
        }

        return item.Result.Task;
    }

    /// <summary>
    /// The refusal of a request of <paramref name="bytes"/> bytes (0: not yet known); the caller holds the lock. Its hint:
    /// the time the passes queued ahead take at the last pass's pace, in whole seconds, 1 to 60.
    /// </summary>
    private ShardBusyException Busy(long bytes)
    {
        long passes = 1 + Math.Max((_queuedRows + bounds.MaxRows - 1) / bounds.MaxRows, (_queuedBytes + bounds.MaxBytes - 1) / bounds.MaxBytes);
        double seconds = passes * (double)Volatile.Read(ref _lastPassTicks) / Stopwatch.Frequency;
        int retryAfter = (int)Math.Clamp(Math.Ceiling(seconds), 1, 60);
        return new ShardBusyException(string.Create(CultureInfo.InvariantCulture,
            $"the expert shard's queue is full: {_queue.Count} requests ({_queuedBytes} bytes) wait; the bounds are {bounds.MaxQueuedRequests} requests and {bounds.MaxQueuedBytes} bytes (MoECluster:ShardBatching:MaxQueuedRequests, MaxQueuedBytes){(bytes > 0 ? $", this request holds {bytes} bytes" : string.Empty)}; retry after {retryAfter} s"),
            retryAfter);
    }

    private void Run()
    {
        while (true)
        {
            List<Item> batch;
            lock (_gate)
            {
                batch = Take();
                if (batch.Count == 0)
                {
                    _running = false;
                    return;
                }
            }

            try
            {
                Execute(batch);
            }
            catch (Exception e)
            {
                // Never leave a caller waiting or the shard stuck (the loop goes on with the next pass): e.g. memory for
                // the concatenated rows.
                foreach (var item in batch)
                {
                    item.Registration.Dispose();
                    item.Result.TrySetException(e);
                }
            }
        }
    }

    /// <summary>The next pass: queued requests in arrival order while the bounds allow (at least one); the caller holds the lock.</summary>
    private List<Item> Take()
    {
        var batch = new List<Item>();
        long rows = 0, bytes = 0;
        while (_queue.TryPeek(out var next))
        {
            if (next.Result.Task.IsCompleted)
            {
                // Cancelled while queued.
                Dequeue().Registration.Dispose();
                continue;
            }

            if (batch.Count > 0 && (rows + next.Pairs.Rows > bounds.MaxRows || bytes + next.Bytes > bounds.MaxBytes))
            {
                break;
            }

            batch.Add(Dequeue());
            rows += next.Pairs.Rows;
            bytes += next.Bytes;
        }

        return batch;
    }

    /// <summary>The head of the queue, out of the queue's counts; the caller holds the lock.</summary>
    private Item Dequeue()
    {
        var item = _queue.Dequeue();
        _queuedBytes -= item.Bytes;
        _queuedRows -= item.Pairs.Rows;
        return item;
    }

    private void Execute(List<Item> batch)
    {
        if (batch.Count == 1)
        {
            ExecuteAlone(batch[0]);
            return;
        }

        int totalRows = 0, totalPairs = 0;
        foreach (var item in batch)
        {
            totalRows += item.Pairs.Rows;
            totalPairs += item.Pairs.Count;
        }

        var z = new float[(long)totalRows * Width];
        var offsets = new int[totalRows + 1];
        var experts = new int[totalPairs];
        var weights = new float[totalPairs];
        int row = 0, pair = 0;
        foreach (var item in batch)
        {
            item.Z.CopyTo(z, (long)row * Width);
            item.Pairs.Experts.CopyTo(experts, pair);
            item.Pairs.Weights.CopyTo(weights, pair);
            for (int r = 0; r < item.Pairs.Rows; r++)
            {
                offsets[row + r + 1] = pair + item.Pairs.Offsets[r + 1];
            }

            row += item.Pairs.Rows;
            pair += item.Pairs.Count;
        }

        var clock = Stopwatch.StartNew();
        float[] partials;
        try
        {
            partials = compute(z, new RoutedPairs(offsets, experts, weights));
        }
        catch (Exception)
        {
            // One request's rows made the pass fail: each alone, so that only its caller sees the error.
            foreach (var item in batch)
            {
                ExecuteAlone(item);
            }

            return;
        }

        var pass = new ShardBatch(batch.Count, totalRows, totalPairs, (long)clock.Elapsed.TotalMicroseconds);
        Report(pass);
        row = 0;
        foreach (var item in batch)
        {
            int values = item.Pairs.Rows * Width;
            Complete(item, new ShardBatchResult(partials.AsSpan(row * Width, values).ToArray(), pass));
            row += item.Pairs.Rows;
        }
    }

    private void ExecuteAlone(Item item)
    {
        if (item.Result.Task.IsCompleted)
        {
            item.Registration.Dispose();
            return;
        }

        var clock = Stopwatch.StartNew();
        try
        {
            float[] partials = compute(item.Z, item.Pairs);
            var pass = new ShardBatch(1, item.Pairs.Rows, item.Pairs.Count, (long)clock.Elapsed.TotalMicroseconds);
            Report(pass);
            Complete(item, new ShardBatchResult(partials, pass));
        }
        catch (Exception e)
        {
            item.Registration.Dispose();
            item.Result.TrySetException(e);
        }
    }

    private void Report(ShardBatch pass)
    {
        Volatile.Write(ref _lastPassTicks, (long)(pass.Microseconds * (Stopwatch.Frequency / 1e6)));
        try
        {
            batched?.Invoke(pass);
        }
        catch (Exception)
        {
            // Telemetry never fails a caller.
        }
    }

    private static void Complete(Item item, ShardBatchResult result)
    {
        item.Registration.Dispose();
        item.Result.TrySetResult(result);
    }

    private sealed class Item(float[] z, RoutedPairs pairs, long bytes)
    {
        public float[] Z { get; } = z;

        public RoutedPairs Pairs { get; } = pairs;

        public long Bytes { get; } = bytes;

        public TaskCompletionSource<ShardBatchResult> Result { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public CancellationTokenRegistration Registration { get; set; }
    }
}

/// <summary>One grouped pass of a shard: how many requests, rows and (row, expert) pairs it merged, and its compute time.</summary>
public readonly record struct ShardBatch(int Requests, int Rows, int Pairs, long Microseconds);

/// <summary>One caller's partial sums [rows, width], in its own row order, and the pass that computed them.</summary>
public sealed record ShardBatchResult(float[] Partials, ShardBatch Batch);
