using MoECluster.Model.Compute;
using MoECluster.Model.Dispatch;
using MoECluster.Model.Layers;
using MoECluster.Model.Presets;
using MoECluster.Model.Numerics;
using MoECluster.Model.Routing;
using MoECluster.Testing;

namespace MoECluster.Model.Tests.Layers;

/// <summary>The mixer runs Prepare → dispatcher → Finish once, and the one stack runs it per MoE layer, whatever the dispatcher.</summary>
public sealed class ExpertDispatchSeamTests
{
    private sealed class RecordingDispatcher(IExpertDispatcher inner) : IExpertDispatcher
    {
        public List<ExpertDispatchRequest> Requests { get; } = [];

        public Func<float[], float[]> Answer { get; init; } = u => u;

        public async ValueTask<float[]> DispatchAsync(ExpertDispatchRequest request, CancellationToken cancellationToken = default)
        {
            Requests.Add(request);
            await Task.Yield();
            return Answer(await inner.DispatchAsync(request, cancellationToken));
        }
    }

    private static float[] Input(int count, Random rng) => [.. Enumerable.Range(0, count).Select(_ => (float)((rng.NextDouble() * 2) - 1))];

    [Theory]
    [InlineData("tiny")]
    [InlineData("tiny-standard")]
    public async Task The_stack_with_a_dispatcher_calls_it_once_per_MoE_layer_and_equals_the_in_process_stack(string preset)
    {
        using var dir = new TempDirectory();
        var config = ModelPresets.Get(preset).Build();
        SyntheticCheckpoint.Write(dir.Path, config, (ulong)Random.Shared.Next());
        using var model = MoeModel.Open(dir.Path);
        int tokens = 11;
        float[] x = Input(tokens * config.HiddenSize, new Random());
        var recorder = new RecordingDispatcher(new LocalExpertDispatcher(layer => model.Mixer(layer).Experts));

        float[] stack = await model.ForwardStackAsync(x, tokens, recorder);

        Assert.Equal(model.ForwardStack(x, tokens), stack);
        Assert.Equal(config.MoeLayers, recorder.Requests.Select(r => r.Layer));
        Assert.All(recorder.Requests, r =>
        {
            Assert.Equal(tokens, r.Tokens);
            Assert.Equal(config.RoutedWidth, r.Width);
            Assert.Equal(tokens * config.RoutedWidth, r.Rows.Length);
            Assert.Equal(tokens * config.HiddenSize, r.Input.Length);
        });
    }

    [Fact]
    public async Task A_layer_forward_through_a_dispatcher_equals_the_in_process_layer_forward()
    {
        using var dir = new TempDirectory();
        var config = ModelPresets.Get("tiny").Build();
        SyntheticCheckpoint.Write(dir.Path, config, (ulong)Random.Shared.Next());
        using var model = MoeModel.Open(dir.Path);
        int layer = config.MoeLayers[^1], tokens = 5;
        float[] x = Input(tokens * config.HiddenSize, new Random());
        var recorder = new RecordingDispatcher(new LocalExpertDispatcher(l => model.Mixer(l).Experts));

        float[] y = await model.ForwardLayerAsync(layer, x, tokens, recorder);

        Assert.Equal(model.ForwardLayer(layer, x, tokens), y);
        var request = Assert.Single(recorder.Requests);
        RoutingPlan expected = model.Mixer(layer).Route(x, tokens);
        Assert.Equal(expected.Experts, request.Plan.Experts);
        Assert.Equal(expected.Weights, request.Plan.Weights);
    }

    [Fact]
    public async Task A_dispatcher_answer_of_the_wrong_shape_is_refused_naming_the_layer()
    {
        using var dir = new TempDirectory();
        var config = ModelPresets.Get("tiny").Build();
        SyntheticCheckpoint.Write(dir.Path, config, 5);
        using var model = MoeModel.Open(dir.Path);
        int layer = config.MoeLayers[0];
        var shortAnswer = new RecordingDispatcher(new LocalExpertDispatcher(l => model.Mixer(l).Experts)) { Answer = u => u[..^1] };
        var e = await Assert.ThrowsAsync<InvalidOperationException>(() => model.ForwardLayerAsync(layer, new float[3 * config.HiddenSize], 3, shortAnswer));
        Assert.Contains($"layer {layer}", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_local_dispatcher_for_one_layer_refuses_another_layer()
    {
        using var dir = new TempDirectory();
        var config = ModelPresets.Get("tiny").Build();
        SyntheticCheckpoint.Write(dir.Path, config, 7);
        using var model = MoeModel.Open(dir.Path);
        var dispatcher = model.Mixer(config.MoeLayers[0]).LocalDispatcher;
        var plan = new RoutingPlan(1, config.NumExpertsPerTok);
        var request = new ExpertDispatchRequest(config.MoeLayers[^1], plan, new float[config.RoutedWidth], config.RoutedWidth, new float[config.HiddenSize], 0);
        Assert.Throws<ArgumentException>(() => dispatcher.Dispatch(request));
    }
    /// <summary>A dispatcher that answers only when the test releases it (a cluster's shards, still computing).</summary>
    private sealed class GatedDispatcher(IExpertDispatcher? inner) : IExpertDispatcher
    {
        public TaskCompletionSource Release { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public TaskCompletionSource Sent { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public Exception? Failure { get; init; }

        public async ValueTask<float[]> DispatchAsync(ExpertDispatchRequest request, CancellationToken cancellationToken = default)
        {
            // Without experts behind it the answer is u = 0 (the layer is then W_up 0 + the shared expert).
            float[] u = inner is null ? new float[request.Rows.Length] : await inner.DispatchAsync(request, cancellationToken);
            Sent.SetResult();
            await Release.Task;
            return Failure is null ? u : throw Failure;
        }
    }

    /// <summary>The reference backend, counting the FFNs of the shared expert's width ([d → ms → d]) it runs.</summary>
    private sealed class SharedCountingBackend(int hiddenSize, int sharedWidth) : IComputeBackend
    {
        private readonly ReferenceBackend _inner = new();
        private int _shared;

        public int SharedFfns => Volatile.Read(ref _shared);

        public string Name => "counting";

        public IPreparedLinear Prepare(WeightMatrix weight) => _inner.Prepare(weight);

        public void Linear(IPreparedLinear weight, ReadOnlySpan<float> x, int tokens, Span<float> y) => _inner.Linear(weight, x, tokens, y);

        public void ExpertFfn(IPreparedLinear up, IPreparedLinear down, ReadOnlySpan<float> z, int tokens, Span<float> output)
        {
            if (up.Cols == hiddenSize && up.Rows == sharedWidth)
            {
                Interlocked.Increment(ref _shared);
            }

            ((IComputeBackend)_inner).ExpertFfn(up, down, z, tokens, output);
        }
    }

    [Fact]
    public async Task The_shared_expert_runs_while_the_dispatch_is_out_and_the_layer_equals_the_in_process_one()
    {
        using var dir = new TempDirectory();
        var config = ModelPresets.Get("tiny").Build();
        SyntheticCheckpoint.Write(dir.Path, config, (ulong)Random.Shared.Next());
        var backend = new SharedCountingBackend(config.HiddenSize, config.MoeSharedExpertIntermediateSize);
        using var model = MoeModel.Open(dir.Path, backend);
        int layer = config.MoeLayers[0], tokens = 6;
        float[] x = Input(tokens * config.HiddenSize, new Random());
        float[] expected = model.ForwardLayer(layer, x, tokens);
        int before = backend.SharedFfns;
        var gated = new GatedDispatcher(new LocalExpertDispatcher(l => model.Mixer(l).Experts));

        var forward = model.ForwardLayerAsync(layer, x, tokens, gated);
        await gated.Sent.Task.WaitAsync(TimeSpan.FromSeconds(30));
        await WaitUntil(() => backend.SharedFfns > before);

        // The shards have not answered: the shared expert is done, the layer is not.
        Assert.Equal(before + 1, backend.SharedFfns);
        Assert.False(forward.IsCompleted);
        gated.Release.SetResult();
        Assert.Equal(expected, await forward);
        Assert.Equal(before + 1, backend.SharedFfns);
    }

    [Fact]
    public async Task When_the_shared_expert_and_the_dispatch_both_fail_the_dispatch_error_wins()
    {
        // An input of 1e20: gate logits and W_down x stay in the float32 range, relu(S1 x)² does not. The dispatch fails
        // too, after the shared expert has failed: its error is the one reported, as when the shared expert ran after the
        // combine. Without the dispatch failure, the shared expert's overflow is.
        using var dir = new TempDirectory();
        var config = ModelPresets.Get("tiny").Build();
        SyntheticCheckpoint.Write(dir.Path, config, 17);
        var backend = new SharedCountingBackend(config.HiddenSize, config.MoeSharedExpertIntermediateSize);
        using var model = MoeModel.Open(dir.Path, backend);
        int layer = config.MoeLayers[0], tokens = 2;
        float[] x = [.. Input(tokens * config.HiddenSize, new Random(18)).Select(v => v * 1e20f)];
        var shardFailure = new InvalidOperationException("shard 3 went away");
        foreach (var failure in new Exception?[] { shardFailure, null })
        {
            int before = backend.SharedFfns;
            var gated = new GatedDispatcher(null) { Failure = failure };
            var forward = model.ForwardLayerAsync(layer, x, tokens, gated);
            await WaitUntil(() => backend.SharedFfns > before);
            Assert.False(forward.IsCompleted);
            gated.Release.SetResult();
            if (failure is not null)
            {
                Assert.Same(shardFailure, await Assert.ThrowsAsync<InvalidOperationException>(() => forward));
            }
            else
            {
                var overflow = await Assert.ThrowsAsync<ForwardOverflowException>(() => forward);
                Assert.Contains("the shared expert", overflow.Message, StringComparison.Ordinal);
            }
        }
    }

    private static async Task WaitUntil(Func<bool> condition)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        while (!condition())
        {
            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(30), "timed out");
            await Task.Delay(5);
        }
    }
}
