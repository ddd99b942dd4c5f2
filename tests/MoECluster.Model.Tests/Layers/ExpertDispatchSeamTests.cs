using MoECluster.Model.Dispatch;
using MoECluster.Model.Layers;
using MoECluster.Model.Presets;
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
}
