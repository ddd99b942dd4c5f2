using System.Runtime.CompilerServices;
using MoECluster.Cluster.Dispatch;
using MoECluster.Cluster.Grains;
using MoECluster.Cluster.Hosting;
using MoECluster.Model.Dispatch;
using MoECluster.Model.Experts;
using MoECluster.Model.Layers;
using MoECluster.Model.Presets;
using MoECluster.Testing;

namespace MoECluster.Cluster.Tests;

/// <summary>
/// Continuous batching at the expert shard, without Orleans: requests queued while a pass runs share the next pass, each
/// caller gets exactly its own partial sums, a bad request fails only its caller, passes respect their bounds, and an idle
/// shard starts a lone request at once; the queue is bounded (requests and bytes waiting) and refuses beyond at once.
/// </summary>
public sealed class ShardBatcherTests : IDisposable
{
    private const int Layer = 1;
    private const int Held = 8;
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(10);

    private readonly TempDirectory _dir = new("moecluster-batcher-");
    private readonly MoeModel _model;
    private readonly GroupedExperts _experts;

    public ShardBatcherTests()
    {
        SyntheticCheckpoint.Write(_dir.Path, ModelPresets.Get("tiny").Build(experts: 16), 31);
        _model = MoeModel.Open(_dir.Path);
        _experts = _model.ShardExperts(Layer, 0, Held);
    }

    public void Dispose()
    {
        _model.Dispose();
        _dir.Dispose();
    }

    [Fact]
    public async Task Requests_queued_behind_a_pass_share_the_next_pass_and_each_gets_exactly_its_own_partials()
    {
        int seed = TestInputs.NewSeed();
        var rng = new Random(seed);
        using var gated = new GatedCompute(_experts);
        var passes = new List<ShardBatch>();
        var batcher = new ShardBatcher(_experts.Width, gated.Compute, new ShardBatchingOptions(), p => { lock (passes) { passes.Add(p); } });

        // The first request holds the shard; six of 1..9 rows each queue behind it.
        var first = Request(rng, 2);
        var blocker = batcher.ComputeAsync(first.Z, first.Pairs);
        Assert.True(gated.Entered.Wait(Patience), "the idle shard did not start the lone request");
        var requests = Enumerable.Range(0, 6).Select(_ => Request(rng, 1 + rng.Next(9))).ToList();
        var answers = requests.Select(r => batcher.ComputeAsync(r.Z, r.Pairs)).ToList();
        Assert.Equal(6, batcher.Queued);
        gated.Open();

        await blocker.WaitAsync(Patience);
        var results = await Task.WhenAll(answers).WaitAsync(Patience);
        for (int i = 0; i < requests.Count; i++)
        {
            float[] alone = _experts.ComputePartials(requests[i].Z, requests[i].Pairs);
            Assert.Equal(alone.Length, results[i].Partials.Length);
            double error = Metrics.RelativeError(results[i].Partials, alone);
            Assert.True(error <= 1e-6, $"seed {seed}: request {i} ({requests[i].Pairs.Rows} rows): relative error {error:E2} against its own pass");
            Assert.Equal(6, results[i].Batch.Requests);
            Assert.Equal(requests.Sum(r => r.Pairs.Rows), results[i].Batch.Rows);
        }

        Assert.Equal([1, 6], passes.Select(p => p.Requests));
        Assert.Equal(2, gated.Calls);
    }

    [Fact]
    public async Task A_bad_request_in_a_pass_fails_only_its_caller()
    {
        var rng = new Random(TestInputs.NewSeed());
        using var gated = new GatedCompute(_experts);
        var batcher = new ShardBatcher(_experts.Width, gated.Compute, new ShardBatchingOptions());
        var first = Request(rng, 1);
        var blocker = batcher.ComputeAsync(first.Z, first.Pairs);
        Assert.True(gated.Entered.Wait(Patience));

        // Expert 12 is not one of the shard's (0..7): the merged pass throws, each request then runs alone.
        var good1 = Request(rng, 3);
        var bad = (Z: new float[2 * _experts.Width], Pairs: new RoutedPairs([0, 1, 2], [1, 12], [0.5f, 0.5f]));
        var good2 = Request(rng, 4);
        var a1 = batcher.ComputeAsync(good1.Z, good1.Pairs);
        var ab = batcher.ComputeAsync(bad.Z, bad.Pairs);
        var a2 = batcher.ComputeAsync(good2.Z, good2.Pairs);
        gated.Open();

        var e = await Assert.ThrowsAsync<InvalidOperationException>(() => ab.WaitAsync(Patience));
        Assert.Contains("expert 12", e.Message, StringComparison.Ordinal);
        Assert.Equal(_experts.ComputePartials(good1.Z, good1.Pairs), (await a1.WaitAsync(Patience)).Partials);
        Assert.Equal(_experts.ComputePartials(good2.Z, good2.Pairs), (await a2.WaitAsync(Patience)).Partials);
        await blocker.WaitAsync(Patience);

        // A request of the wrong shape never reaches a pass: refused at once, to its caller alone.
        Assert.Throws<ArgumentException>(() => { _ = batcher.ComputeAsync(new float[_experts.Width + 1], good1.Pairs); });
    }

    [Fact]
    public async Task A_pass_never_exceeds_its_bounds_in_rows_or_bytes()
    {
        var rng = new Random(TestInputs.NewSeed());
        int w = _experts.Width;

        // Rows: at most 5 per pass; 3, 3, 2, 4 rows queued behind a one-row pass → 3, then 3 + 2, then 4 (in arrival order).
        var byRows = await PassesAsync(new ShardBatchingOptions { MaxRows = 5 }, [3, 3, 2, 4], rng);
        Assert.Equal([(1, 1), (1, 3), (2, 5), (1, 4)], byRows);

        // Bytes: room for 4 one-pair rows (4 · w · (rows + pairs) each); a request larger than the bound still runs, alone.
        var byBytes = await PassesAsync(new ShardBatchingOptions { MaxBytes = ShardBatcher.BytesOf(4, 4, w) }, [1, 2, 1, 1, 6, 1], rng);
        Assert.Equal([(1, 1), (3, 4), (1, 1), (1, 6), (1, 1)], byBytes);
    }

    [Fact]
    public async Task An_idle_shard_runs_a_lone_request_at_once_and_a_cancelled_request_leaves_the_queue()
    {
        var rng = new Random(TestInputs.NewSeed());
        using var gated = new GatedCompute(_experts);
        var passes = new List<ShardBatch>();
        var batcher = new ShardBatcher(_experts.Width, gated.Compute, new ShardBatchingOptions(), p => { lock (passes) { passes.Add(p); } });
        var lone = Request(rng, 2);
        var answer = batcher.ComputeAsync(lone.Z, lone.Pairs);

        // Nothing else arrives: the pass starts without waiting for company (no timer).
        Assert.True(gated.Entered.Wait(Patience), "the idle shard did not start the lone request");
        using var cancel = new CancellationTokenSource();
        var queued = Request(rng, 3);
        var cancelled = batcher.ComputeAsync(queued.Z, queued.Pairs, cancel.Token);
        await cancel.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => cancelled.WaitAsync(Patience));
        gated.Open();

        var result = await answer.WaitAsync(Patience);
        Assert.Equal(new ShardBatch(1, 2, lone.Pairs.Count, result.Batch.Microseconds), result.Batch);
        Assert.Equal(_experts.ComputePartials(lone.Z, lone.Pairs), result.Partials);
        Assert.Equal(0, batcher.Queued);
        Assert.Equal(1, gated.Calls);
        Assert.Single(passes);
    }

    [Fact]
    public async Task A_full_queue_refuses_at_once_with_a_retry_after_and_accepts_again_once_drained()
    {
        int seed = TestInputs.NewSeed();
        var rng = new Random(seed);
        using var gated = new GatedCompute(_experts);
        var batcher = new ShardBatcher(_experts.Width, gated.Compute, new ShardBatchingOptions { MaxQueuedRequests = 2 });
        var first = Request(rng, 1);
        var running = batcher.ComputeAsync(first.Z, first.Pairs);
        Assert.True(gated.Entered.Wait(Patience), "the idle shard did not start the lone request");

        // The pass in progress does not count: two wait, the third is refused at once, synchronously.
        var queued = Enumerable.Range(0, 2).Select(_ => Request(rng, 1 + rng.Next(4))).ToList();
        var answers = queued.Select(r => batcher.ComputeAsync(r.Z, r.Pairs)).ToList();
        long bytes = batcher.QueuedBytes;
        Assert.Equal(queued.Sum(r => ShardBatcher.BytesOf(r.Pairs.Rows, r.Pairs.Count, _experts.Width)), bytes);
        var extra = Request(rng, 2);
        using var cancel = new CancellationTokenSource();
        var busy = Assert.Throws<ShardBusyException>(() => { _ = batcher.ComputeAsync(extra.Z, extra.Pairs, cancel.Token); });
        Assert.InRange(busy.RetryAfterSeconds, 1, 60);
        Assert.Contains("MaxQueuedRequests", busy.Message, StringComparison.Ordinal);
        Assert.Throws<ShardBusyException>(batcher.ThrowIfFull);
        Assert.Equal((2, bytes), (batcher.Queued, batcher.QueuedBytes));

        gated.Open();
        await running.WaitAsync(Patience);
        var results = await Task.WhenAll(answers).WaitAsync(Patience);
        for (int i = 0; i < queued.Count; i++)
        {
            Assert.Equal(_experts.ComputePartials(queued[i].Z, queued[i].Pairs), results[i].Partials);
        }

        // Drained: nothing counted, and the refused request goes through now.
        Assert.Equal((0, 0L), (batcher.Queued, batcher.QueuedBytes));
        batcher.ThrowIfFull();
        var again = await batcher.ComputeAsync(extra.Z, extra.Pairs, cancel.Token).WaitAsync(Patience);
        Assert.Equal(_experts.ComputePartials(extra.Z, extra.Pairs), again.Partials);

        // The first pass, the two that waited (merged), and the one refused before.
        Assert.Equal(3, gated.Calls);
    }

    [Fact]
    public async Task The_queue_is_bounded_in_bytes_and_an_empty_queue_takes_one_request_however_large()
    {
        var rng = new Random(TestInputs.NewSeed());
        int w = _experts.Width;
        using var gated = new GatedCompute(_experts);
        var batcher = new ShardBatcher(w, gated.Compute, new ShardBatchingOptions { MaxQueuedBytes = ShardBatcher.BytesOf(4, 4, w) });
        var first = Request(rng, 1, pairsPerRow: 1);
        var all = new List<Task<ShardBatchResult>> { batcher.ComputeAsync(first.Z, first.Pairs) };
        Assert.True(gated.Entered.Wait(Patience));

        // 3 one-pair rows wait; 2 more would pass the 4 rows' bytes: refused; 1 more fits exactly.
        var three = Request(rng, 3, pairsPerRow: 1);
        all.Add(batcher.ComputeAsync(three.Z, three.Pairs));
        var two = Request(rng, 2, pairsPerRow: 1);
        var busy = Assert.Throws<ShardBusyException>(() => { _ = batcher.ComputeAsync(two.Z, two.Pairs); });
        Assert.Contains("MaxQueuedBytes", busy.Message, StringComparison.Ordinal);
        var one = Request(rng, 1, pairsPerRow: 1);
        all.Add(batcher.ComputeAsync(one.Z, one.Pairs));
        Assert.Equal(ShardBatcher.BytesOf(4, 4, w), batcher.QueuedBytes);
        Assert.Throws<ShardBusyException>(batcher.ThrowIfFull);
        gated.Open();
        await Task.WhenAll(all).WaitAsync(Patience);

        // A pass in progress and nothing waiting: a request of 10 rows (beyond the bound) still queues; then nothing more.
        using var gated2 = new GatedCompute(_experts);
        var lone = new ShardBatcher(w, gated2.Compute, new ShardBatchingOptions { MaxQueuedBytes = ShardBatcher.BytesOf(4, 4, w) });
        var head = lone.ComputeAsync(first.Z, first.Pairs);
        Assert.True(gated2.Entered.Wait(Patience));
        var large = Request(rng, 10, pairsPerRow: 1);
        var largeAnswer = lone.ComputeAsync(large.Z, large.Pairs);
        Assert.Throws<ShardBusyException>(() => { _ = lone.ComputeAsync(one.Z, one.Pairs); });
        gated2.Open();
        await head.WaitAsync(Patience);
        Assert.Equal(_experts.ComputePartials(large.Z, large.Pairs), (await largeAnswer.WaitAsync(Patience)).Partials);
    }

    [Fact]
    public async Task A_refused_request_leaves_no_trace_its_rows_are_not_held()
    {
        var rng = new Random(TestInputs.NewSeed());
        using var gated = new GatedCompute(_experts);
        var batcher = new ShardBatcher(_experts.Width, gated.Compute, new ShardBatchingOptions { MaxQueuedRequests = 1 });
        var first = Request(rng, 1);
        var running = batcher.ComputeAsync(first.Z, first.Pairs);
        Assert.True(gated.Entered.Wait(Patience));
        var waiting = Request(rng, 1);
        var answer = batcher.ComputeAsync(waiting.Z, waiting.Pairs);

        // Refused with a cancellable token: neither the queue nor the token's callbacks may keep its rows alive.
        using var cancel = new CancellationTokenSource();
        var rows = RefuseAndForget(batcher, rng, cancel.Token);
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        Assert.False(rows.IsAlive, "the refused request's rows are still referenced");
        Assert.Equal(1, batcher.Queued);

        gated.Open();
        await Task.WhenAll(running, answer).WaitAsync(Patience);
        Assert.Equal(2, gated.Calls);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private WeakReference RefuseAndForget(ShardBatcher batcher, Random rng, CancellationToken cancellationToken)
    {
        var refused = Request(rng, 3);
        Assert.Throws<ShardBusyException>(() => { _ = batcher.ComputeAsync(refused.Z, refused.Pairs, cancellationToken); });
        return new WeakReference(refused.Z);
    }

    /// <summary>(requests, rows) of each pass when requests of <paramref name="rowCounts"/> rows queue behind a one-row pass.</summary>
    private async Task<(int Requests, int Rows)[]> PassesAsync(ShardBatchingOptions bounds, int[] rowCounts, Random rng)
    {
        using var gated = new GatedCompute(_experts);
        var passes = new List<ShardBatch>();
        var batcher = new ShardBatcher(_experts.Width, gated.Compute, bounds, p => { lock (passes) { passes.Add(p); } });
        var first = Request(rng, 1, pairsPerRow: 1);
        var all = new List<Task<ShardBatchResult>> { batcher.ComputeAsync(first.Z, first.Pairs) };
        Assert.True(gated.Entered.Wait(Patience));
        all.AddRange(rowCounts.Select(n => Request(rng, n, pairsPerRow: 1)).Select(r => batcher.ComputeAsync(r.Z, r.Pairs)));
        gated.Open();
        await Task.WhenAll(all).WaitAsync(Patience);
        lock (passes)
        {
            return [.. passes.Select(p => (p.Requests, p.Rows))];
        }
    }

    /// <summary>Rows of standard normal values, each routed to 1..3 distinct experts of the shard (or exactly <paramref name="pairsPerRow"/>).</summary>
    private (float[] Z, RoutedPairs Pairs) Request(Random rng, int rows, int? pairsPerRow = null)
    {
        var offsets = new int[rows + 1];
        var experts = new List<int>();
        var weights = new List<float>();
        for (int r = 0; r < rows; r++)
        {
            int k = pairsPerRow ?? 1 + rng.Next(3);
            foreach (int e in Enumerable.Range(0, Held).OrderBy(_ => rng.Next()).Take(k))
            {
                experts.Add(e);
                weights.Add((float)rng.NextDouble());
            }

            offsets[r + 1] = experts.Count;
        }

        float[] z = TestInputs.Gaussian(rows * _experts.Width, rng.Next());
        return (z, new RoutedPairs(offsets, [.. experts], [.. weights]));
    }

    /// <summary>
    /// The experts' grouped pass behind a gate: the first pass signals <see cref="Entered"/> and waits for <see cref="Open"/>,
    /// so that requests can queue behind it.
    /// </summary>
    private sealed class GatedCompute(GroupedExperts experts) : IDisposable
    {
        private readonly ManualResetEventSlim _open = new();
        private int _calls;

        public ManualResetEventSlim Entered { get; } = new();

        public int Calls => Volatile.Read(ref _calls);

        public float[] Compute(float[] z, RoutedPairs pairs)
        {
            Interlocked.Increment(ref _calls);
            Entered.Set();
            if (!_open.Wait(Patience))
            {
                throw new TimeoutException("the test never opened the gate");
            }

            return experts.ComputePartials(z, pairs);
        }

        public void Open() => _open.Set();

        public void Dispose()
        {
            _open.Dispose();
            Entered.Dispose();
        }
    }
}
