using MoECluster.Cluster.Contracts;
using MoECluster.Cluster.Requests;
using MoECluster.Model.Layers;
using MoECluster.Model.Numerics;
using MoECluster.Model.Presets;
using MoECluster.Testing;
using MoECluster.Wire;

namespace MoECluster.Cluster.Tests;

/// <summary>
/// Batching at the front-end, without Orleans: requests that arrive while a forward of their key runs share the next
/// forward, each caller gets exactly its own rows, a forward respects its token bound, a lone request starts at once, a
/// caller that cancels leaves (queued) or gets its cancellation at once (running), a request's own fault fails only it,
/// and a forward of the real model over merged requests equals each request's own forward.
/// </summary>
public sealed class ForwardBatcherTests
{
    private const int Width = 4;
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(10);

    [Fact]
    public async Task Requests_queued_behind_a_forward_share_the_next_one_and_each_gets_exactly_its_own_rows()
    {
        var rng = new Random(TestInputs.NewSeed());
        using var gated = new GatedForward();
        var batches = new List<FrontEndBatch>();
        var batcher = new ForwardBatcher<string, int>(gated.ForwardAsync, _ => false, 1000, (_, b) => { lock (batches) { batches.Add(b); } });

        // The first request holds the key; six of 1..9 tokens queue behind it.
        var first = Hidden(rng, 2);
        var blocker = batcher.ForwardAsync("k", first, 2);
        Assert.True(gated.Entered.Wait(Patience), "the lone request did not start");
        var requests = Enumerable.Range(0, 6).Select(_ => Hidden(rng, 1 + rng.Next(9))).ToList();
        var answers = requests.Select(x => batcher.ForwardAsync("k", x, x.Length / Width)).ToList();
        Assert.Equal(6, batcher.Queued("k"));
        gated.Open();

        Assert.Equal(GatedForward.Expected(first), (await blocker.WaitAsync(Patience)).Hidden);
        var results = await Task.WhenAll(answers).WaitAsync(Patience);
        int total = requests.Sum(x => x.Length / Width);
        for (int i = 0; i < requests.Count; i++)
        {
            Assert.Equal(GatedForward.Expected(requests[i]), results[i].Hidden);
            Assert.Equal(6, results[i].Batch.Requests);
            Assert.Equal(total, results[i].Batch.Tokens);

            // The traffic handed back is the whole forward's (here: its token count), for the caller to share out.
            Assert.Equal(total, results[i].Traffic);
        }

        Assert.Equal([(1, 2), (6, total)], batches.Select(b => (b.Requests, b.Tokens)));
        Assert.Equal(2, gated.Calls);
        Assert.Equal(0, batcher.Queued("k"));
    }

    [Fact]
    public async Task A_lone_request_starts_at_once_and_different_keys_run_at_the_same_time()
    {
        var rng = new Random(TestInputs.NewSeed());
        using var gated = new GatedForward();
        var batcher = new ForwardBatcher<string, int>(gated.ForwardAsync, _ => false, 1000);
        var x = Hidden(rng, 3);
        var a = batcher.ForwardAsync("layer 1", x, 3);

        // Nothing else arrives: the forward starts without waiting for company (no timer), with the caller's own array.
        Assert.True(gated.Entered.Wait(Patience), "the lone request did not start");
        Assert.Same(x, gated.Inputs[0]);

        // Another key does not queue behind it.
        var y = Hidden(rng, 1);
        var b = batcher.ForwardAsync("layer 2", y, 1);
        Assert.True(SpinWait.SpinUntil(() => gated.Calls == 2, Patience), "a forward of another key waited for the first");
        Assert.Equal(0, batcher.Queued("layer 2"));
        gated.Open();
        Assert.Equal(GatedForward.Expected(x), (await a.WaitAsync(Patience)).Hidden);
        Assert.Equal(GatedForward.Expected(y), (await b.WaitAsync(Patience)).Hidden);
        Assert.Equal(new FrontEndBatch(1, 3, (await a).Batch.Microseconds), (await a).Batch);
    }

    [Fact]
    public async Task With_two_forwards_in_flight_a_second_starts_at_once_and_later_requests_queue_behind_both()
    {
        var rng = new Random(TestInputs.NewSeed());
        using var gated = new GatedForward(holdEvery: true);
        var batches = new List<FrontEndBatch>();
        var batcher = new ForwardBatcher<string, int>(gated.ForwardAsync, _ => false, 1000, (_, b) => { lock (batches) { batches.Add(b); } }, maxInFlight: 2);
        var inputs = new[] { 1, 2, 3, 4 }.Select(t => Hidden(rng, t)).ToList();
        var a = batcher.ForwardAsync("k", inputs[0], 1);
        Assert.True(gated.Entered.Wait(Patience));
        var b = batcher.ForwardAsync("k", inputs[1], 2);
        Assert.True(SpinWait.SpinUntil(() => gated.Calls == 2, Patience), "the second request waited although one forward ran of two allowed");

        // Both forwards run: the next requests queue, and share the forward that starts when one of them ends.
        var c = batcher.ForwardAsync("k", inputs[2], 3);
        var d = batcher.ForwardAsync("k", inputs[3], 4);
        Assert.Equal(2, batcher.Queued("k"));
        gated.Release();
        Assert.Equal(GatedForward.Expected(inputs[1]), (await b.WaitAsync(Patience)).Hidden);
        Assert.Equal(GatedForward.Expected(inputs[2]), (await c.WaitAsync(Patience)).Hidden);
        Assert.Equal(GatedForward.Expected(inputs[3]), (await d.WaitAsync(Patience)).Hidden);
        gated.Open();
        Assert.Equal(GatedForward.Expected(inputs[0]), (await a.WaitAsync(Patience)).Hidden);
        Assert.Equal([(1, 2), (2, 7), (1, 1)], batches.Select(x => (x.Requests, x.Tokens)));
        Assert.Throws<ArgumentOutOfRangeException>(() => new ForwardBatcher<string, int>(gated.ForwardAsync, _ => false, 10, maxInFlight: 0));
    }

    [Fact]
    public async Task A_forward_never_exceeds_its_token_bound_and_a_larger_request_runs_alone()
    {
        var rng = new Random(TestInputs.NewSeed());
        using var gated = new GatedForward();
        var batches = new List<FrontEndBatch>();
        var batcher = new ForwardBatcher<string, int>(gated.ForwardAsync, _ => false, 10, (_, b) => { lock (batches) { batches.Add(b); } });
        var all = new List<Task<ForwardBatchResult<int>>> { batcher.ForwardAsync("k", Hidden(rng, 1), 1) };
        Assert.True(gated.Entered.Wait(Patience));

        // 4, 4, 4, 12, 3, 3 tokens queued behind a one-token forward (bound 10): 4 + 4, then 4, then 12 alone, then 3 + 3.
        var inputs = new[] { 4, 4, 4, 12, 3, 3 }.Select(t => Hidden(rng, t)).ToList();
        all.AddRange(inputs.Select(x => batcher.ForwardAsync("k", x, x.Length / Width)));
        gated.Open();
        var results = await Task.WhenAll(all).WaitAsync(Patience);
        for (int i = 0; i < inputs.Count; i++)
        {
            Assert.Equal(GatedForward.Expected(inputs[i]), results[i + 1].Hidden);
        }

        Assert.Equal([(1, 1), (2, 8), (1, 4), (1, 12), (2, 6)], batches.Select(b => (b.Requests, b.Tokens)));
        Assert.Throws<ArgumentOutOfRangeException>(() => new ForwardBatcher<string, int>(gated.ForwardAsync, _ => false, 0));
    }

    [Fact]
    public async Task A_caller_that_cancels_while_queued_leaves_the_queue_and_one_in_a_running_forward_gets_its_cancellation_at_once()
    {
        var rng = new Random(TestInputs.NewSeed());
        using var gated = new GatedForward();
        var batches = new List<FrontEndBatch>();
        var batcher = new ForwardBatcher<string, int>(gated.ForwardAsync, _ => false, 1000, (_, b) => { lock (batches) { batches.Add(b); } });

        // Queued: cancelled before its forward, its rows never reach one.
        using var running = new CancellationTokenSource();
        var first = batcher.ForwardAsync("k", Hidden(rng, 2), 2, running.Token);
        Assert.True(gated.Entered.Wait(Patience));
        using var queued = new CancellationTokenSource();
        var leaving = batcher.ForwardAsync("k", Hidden(rng, 5), 5, queued.Token);
        var staying = Hidden(rng, 3);
        var stays = batcher.ForwardAsync("k", staying, 3);
        await queued.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => leaving.WaitAsync(Patience));

        // Running: the caller's task ends now, while the forward it is in still runs (for the others it may hold).
        await running.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => first.WaitAsync(Patience));

        // Its forward had no other caller: it was cancelled too.
        // (The gate is never opened: the next forward does not wait at it.)
        Assert.True(gated.Tokens[0].IsCancellationRequested, "a forward whose every caller cancelled went on");
        Assert.Equal(GatedForward.Expected(staying), (await stays.WaitAsync(Patience)).Hidden);
        Assert.Equal(2, gated.Calls);
        Assert.Equal(3, gated.Inputs[1].Length / Width);
        Assert.Equal([(1, 3)], batches.Select(b => (b.Requests, b.Tokens)));
    }

    [Fact]
    public async Task A_forward_goes_on_for_its_other_callers_when_one_cancels()
    {
        var rng = new Random(TestInputs.NewSeed());
        using var gated = new GatedForward(holdEvery: true);
        var batcher = new ForwardBatcher<string, int>(gated.ForwardAsync, _ => false, 1000);
        var first = batcher.ForwardAsync("k", Hidden(rng, 1), 1);
        Assert.True(gated.Entered.Wait(Patience));
        using var cancel = new CancellationTokenSource();
        var a = Hidden(rng, 2);
        var b = Hidden(rng, 3);
        var ta = batcher.ForwardAsync("k", a, 2, cancel.Token);
        var tb = batcher.ForwardAsync("k", b, 3);

        // The second forward (a + b) starts and holds; a's caller cancels; b's gets its rows when it ends.
        gated.Open();
        await first.WaitAsync(Patience);
        Assert.True(SpinWait.SpinUntil(() => gated.Calls == 2, Patience));
        await cancel.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => ta.WaitAsync(Patience));
        Assert.False(gated.Tokens[1].IsCancellationRequested, "the forward was cancelled while one of its callers still waited");
        gated.Release();
        Assert.Equal(GatedForward.Expected(b), (await tb.WaitAsync(Patience)).Hidden);
    }

    [Fact]
    public async Task A_request_fault_in_a_merged_forward_fails_only_its_caller_and_any_other_failure_fails_them_all()
    {
        var rng = new Random(TestInputs.NewSeed());

        // A forward fails with ForwardOverflowException when any of its rows holds a value beyond 1e30 (the input's fault).
        using var gated = new GatedForward(overflowAbove: 1e30f);
        var batches = new List<FrontEndBatch>();
        var batcher = new ForwardBatcher<string, int>(gated.ForwardAsync, e => e is ForwardOverflowException, 1000, (_, b) => { lock (batches) { batches.Add(b); } });
        var blocker = batcher.ForwardAsync("k", Hidden(rng, 1), 1);
        Assert.True(gated.Entered.Wait(Patience));
        var good1 = Hidden(rng, 3);
        var bad = Hidden(rng, 2);
        bad[5] = 3e38f;
        var good2 = Hidden(rng, 4);
        var t1 = batcher.ForwardAsync("k", good1, 3);
        var tb = batcher.ForwardAsync("k", bad, 2);
        var t2 = batcher.ForwardAsync("k", good2, 4);
        gated.Open();

        await Assert.ThrowsAsync<ForwardOverflowException>(() => tb.WaitAsync(Patience));
        Assert.Equal(GatedForward.Expected(good1), (await t1.WaitAsync(Patience)).Hidden);
        Assert.Equal(GatedForward.Expected(good2), (await t2.WaitAsync(Patience)).Hidden);
        await blocker.WaitAsync(Patience);

        // Blocker, the merged forward (failed), then each of the three alone.
        Assert.Equal(5, gated.Calls);
        Assert.Equal([(1, 1), (1, 3), (1, 4)], batches.Select(b => (b.Requests, b.Tokens)));

        // Any other failure (a shard that failed) is every caller's, with the same exception, and the forward is not repeated.
        using var failing = new GatedForward(failWith: () => new TimeoutException("shard overdue"));
        var other = new ForwardBatcher<string, int>(failing.ForwardAsync, e => e is ForwardOverflowException, 1000);
        var holder = other.ForwardAsync("k", Hidden(rng, 1), 1);
        Assert.True(failing.Entered.Wait(Patience));
        var merged = Enumerable.Range(0, 3).Select(_ => other.ForwardAsync("k", Hidden(rng, 2), 2)).ToList();
        failing.Open();
        await Assert.ThrowsAsync<TimeoutException>(() => holder.WaitAsync(Patience));
        foreach (var t in merged)
        {
            Assert.Equal("shard overdue", (await Assert.ThrowsAsync<TimeoutException>(() => t.WaitAsync(Patience))).Message);
        }

        Assert.Equal(2, failing.Calls);

        // A request of the wrong shape never reaches a forward.
        Assert.Throws<ArgumentException>(() => { _ = batcher.ForwardAsync("k", new float[7], 2); });
    }

    [Fact]
    public async Task Merged_forwards_of_the_model_equal_each_requests_own_forward_exactly()
    {
        // The real pipeline in process (tiny model, local experts): layer and stack, several requests per forward.
        using var dir = new TempDirectory("moecluster-frontbatch-");
        SyntheticCheckpoint.Write(dir.Path, ModelPresets.Get("tiny").Build(experts: 16), 37);
        using var model = MoeModel.Open(dir.Path);
        int d = model.Config.HiddenSize;
        int layer = model.FirstMoeLayer;
        int seed = TestInputs.NewSeed();
        var rng = new Random(seed);
        using var gate = new SemaphoreSlim(0);
        using var entered = new SemaphoreSlim(0);
        var batches = new List<FrontEndBatch>();
        var batcher = new ForwardBatcher<ForwardBatchKey, int>(
            async (key, x, tokens, c) =>
            {
                entered.Release();
                await gate.WaitAsync(c);
                float[] y = key.Layer is int l ? await model.ForwardLayerAsync(l, x, tokens, cancellationToken: c) : await model.ForwardStackAsync(x, tokens, cancellationToken: c);
                return new ForwardBatchOutput<int>(y, tokens);
            },
            e => e is ForwardOverflowException,
            4096,
            (_, b) => { lock (batches) { batches.Add(b); } });

        foreach (var key in new ForwardBatchKey[] { new("tiny", layer, WireDType.F32, WireDType.F32), new("tiny", null, WireDType.F32, WireDType.F32) })
        {
            while (entered.CurrentCount > 0)
            {
                await entered.WaitAsync();
            }

            // One request holds the key; five queue behind it and share the next forward.
            var inputs = Enumerable.Range(0, 6).Select(_ => TestInputs.Gaussian((1 + rng.Next(12)) * d, rng.Next())).ToList();
            var answers = new List<Task<ForwardBatchResult<int>>> { batcher.ForwardAsync(key, inputs[0], inputs[0].Length / d) };
            Assert.True(await entered.WaitAsync(Patience));
            answers.AddRange(inputs.Skip(1).Select(x => batcher.ForwardAsync(key, x, x.Length / d)));
            gate.Release(2);
            var results = await Task.WhenAll(answers).WaitAsync(Patience);
            for (int i = 0; i < inputs.Count; i++)
            {
                float[] alone = key.Layer is int l ? model.ForwardLayer(l, inputs[i], inputs[i].Length / d) : model.ForwardStack(inputs[i], inputs[i].Length / d);
                Assert.True(alone.AsSpan().SequenceEqual(results[i].Hidden), $"seed {seed} {key.Target} request {i}: the merged forward's rows differ from its own forward");
            }
        }

        Assert.Equal([1, 5, 1, 5], batches.Select(b => b.Requests));
    }

    [Fact]
    public void A_merged_forwards_traffic_is_shared_out_per_token_and_a_lone_requests_is_its_own()
    {
        // 61 routed rows of 16 fp32 values (64 bytes a row each way); messages carry headers besides.
        var layer = new LayerTraffic(1, "latent", "fp32/fp32", 30, 16, 61, 3904, 3904, 4300, 4310, 7808, 4, 12.5, BatchRequests: 1, BatchTokens: 30, WireDispatch: "fp32", WireCombine: "fp32");
        IReadOnlyList<LayerTraffic> batch = [layer, layer with { Layer = 3 }];

        // Alone: the very same records.
        Assert.Same(batch, FrontEndBatcher.Share(batch, 30, new FrontEndBatch(1, 30, 100)));

        // 10 of the forward's 30 tokens: a third of the routed rows (rounded), the payload of those rows, a third of the
        // message bytes, the batch's messages and time.
        var part = FrontEndBatcher.Share(batch, 10, new FrontEndBatch(3, 30, 100));
        Assert.Equal(
            [new LayerTraffic(1, "latent", "fp32/fp32", 10, 16, 20, 1280, 1280, 1433, 1437, 2560, 4, 12.5, BatchRequests: 3, BatchTokens: 30, WireDispatch: "fp32", WireCombine: "fp32"), new LayerTraffic(3, "latent", "fp32/fp32", 10, 16, 20, 1280, 1280, 1433, 1437, 2560, 4, 12.5, BatchRequests: 3, BatchTokens: 30, WireDispatch: "fp32", WireCombine: "fp32")],
            part);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(7)]
    [InlineData(11)]
    [InlineData(29)]
    public void A_share_keeps_the_batchs_payload_bytes_per_routed_row_exactly(int tokens)
    {
        // Shares rounded apart (rows by tokens, bytes by tokens) would give 7 of 30 tokens 14 rows and 911 bytes, not 14 × 64.
        var layer = new LayerTraffic(1, "latent", "fp32/fp32", 30, 16, 61, 3904, 3904, 4300, 4310, 7808, 4, 12.5, BatchRequests: 1, BatchTokens: 30, WireDispatch: "fp32", WireCombine: "fp32");
        var part = Assert.Single(FrontEndBatcher.Share([layer], tokens, new FrontEndBatch(2, 30, 100)));
        Assert.Equal(Math.Round(61.0 * tokens / 30, MidpointRounding.AwayFromZero), part.RoutedRows);
        Assert.Equal(64L * part.RoutedRows, part.DispatchPayloadBytes);
        Assert.Equal(64L * part.RoutedRows, part.CombinePayloadBytes);
        Assert.Equal(128L * part.RoutedRows, part.PredictedPayloadBytes);
    }

    /// <summary>Rows [tokens, Width] of standard normal values.</summary>
    private static float[] Hidden(Random rng, int tokens) => TestInputs.Gaussian(tokens * Width, rng.Next());

    /// <summary>
    /// A forward y = 2x + 1 row by row, behind a gate: the first forward (every forward with <c>holdEvery</c>) signals
    /// <see cref="Entered"/> and waits for <see cref="Open"/> (then <see cref="Release"/>); it answers the tokens it saw as traffic.
    /// </summary>
    private sealed class GatedForward(bool holdEvery = false, float overflowAbove = float.PositiveInfinity, Func<Exception>? failWith = null) : IDisposable
    {
        private readonly SemaphoreSlim _open = new(0);
        private readonly SemaphoreSlim _release = new(0);
        private readonly object _lock = new();
        private readonly List<float[]> _inputs = [];
        private readonly List<CancellationToken> _tokens = [];
        private int _calls;

        public ManualResetEventSlim Entered { get; } = new();

        public int Calls => Volatile.Read(ref _calls);

        public IReadOnlyList<float[]> Inputs
        {
            get
            {
                lock (_lock)
                {
                    return [.. _inputs];
                }
            }
        }

        public IReadOnlyList<CancellationToken> Tokens
        {
            get
            {
                lock (_lock)
                {
                    return [.. _tokens];
                }
            }
        }

        public static float[] Expected(float[] x) => [.. x.Select(v => (2 * v) + 1)];

        public async Task<ForwardBatchOutput<int>> ForwardAsync(string key, float[] x, int tokens, CancellationToken cancellationToken)
        {
            int call;
            lock (_lock)
            {
                _inputs.Add(x);
                _tokens.Add(cancellationToken);
                call = Interlocked.Increment(ref _calls);
            }

            Entered.Set();
            if (call == 1)
            {
                await _open.WaitAsync(cancellationToken);
            }
            else if (holdEvery)
            {
                await _release.WaitAsync(cancellationToken);
            }

            if (failWith is not null)
            {
                throw failWith();
            }

            if (x.Any(v => Math.Abs(v) > overflowAbove))
            {
                throw new ForwardOverflowException("beyond float32");
            }

            return new ForwardBatchOutput<int>(Expected(x), tokens);
        }

        public void Open() => _open.Release();

        public void Release() => _release.Release(100);

        public void Dispose()
        {
            _open.Dispose();
            _release.Dispose();
            Entered.Dispose();
        }
    }
}
