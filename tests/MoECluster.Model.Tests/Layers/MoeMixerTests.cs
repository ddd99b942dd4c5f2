using MoECluster.Model.Checkpoints;
using MoECluster.Testing;
using MoECluster.Model.Configuration;
using MoECluster.Model.Layers;
using MoECluster.Model.Presets;
using MoECluster.Model.Tests.Support;

namespace MoECluster.Model.Tests.Layers;

public sealed class MoeMixerTests
{
    private const double Tolerance = 1e-5;

    private static MoeModelConfig RandomConfig(Random rng, bool latent, bool norm, int groups, ScoringFunction scoring = ScoringFunction.Sigmoid)
    {
        int d = rng.Next(16, 97);
        int perGroup = rng.Next(2, 6);
        int n = groups > 1 ? groups * perGroup : rng.Next(4, 25);
        int keep = groups > 1 ? rng.Next(1, groups) : 1;
        int reachable = keep * (n / groups);
        return new MoeModelConfig
        {
            HiddenSize = d,
            MoeLatentSize = latent ? rng.Next(4, d + 8) : null,
            NRoutedExperts = n,
            NumExpertsPerTok = rng.Next(1, Math.Min(reachable, 8) + 1),
            MoeIntermediateSize = rng.Next(8, 49),
            MoeSharedExpertIntermediateSize = rng.Next(8, 49),
            NGroup = groups,
            TopkGroup = keep,
            NormTopkProb = norm,
            RoutedScalingFactor = 1 + (rng.NextDouble() * 4),
            ScoringFunc = scoring,
            NumHiddenLayers = 5,
            HybridOverridePattern = "ME*-E",
        }.Validate();
    }

    private static float[] Gaussian(Random rng, int count) =>
        [.. Enumerable.Range(0, count).Select(_ => (float)(Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble())))];

    public static TheoryData<bool, bool, int, ScoringFunction> Cases() => new()
    {
        { true, true, 1, ScoringFunction.Sigmoid },
        { true, false, 1, ScoringFunction.Sigmoid },
        { false, true, 1, ScoringFunction.Sigmoid },
        { false, false, 1, ScoringFunction.Sigmoid },
        { true, true, 4, ScoringFunction.Sigmoid },
        { false, true, 3, ScoringFunction.Sigmoid },
        { false, true, 1, ScoringFunction.Softmax },
        { true, false, 1, ScoringFunction.Softmax },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void Layer_and_stack_match_a_float64_reference_on_fresh_random_checkpoints(bool latent, bool norm, int groups, ScoringFunction scoring)
    {
        int seed = Random.Shared.Next();
        var rng = new Random(seed);
        var config = RandomConfig(rng, latent, norm, groups, scoring);
        using var dir = new TempDirectory();
        SyntheticCheckpoint.Write(dir.Path, config, (ulong)seed);
        using var model = MoeModel.Open(dir.Path);
        var reference = new Fp64Reference(model.Config, model.Tensors);
        int tokens = rng.Next(1, 24);
        int d = config.HiddenSize;

        for (int attempt = 0; ; attempt++)
        {
            float[] x = Gaussian(rng, tokens * d);
            double[] x64 = [.. x.Select(v => (double)v)];
            double[] expectedLayer = reference.Mixer(4, x64, tokens);
            double[] expectedStack = reference.Stack(x64, tokens);
            if (reference.MinSelectionGap < 1e-5 && attempt < 20)
            {
                continue; // a near-tie at the top-K boundary is decided by rounding: draw another input
            }

            var y = new float[tokens * d];
            y.AsSpan().Fill(float.NaN);
            model.Mixer(4).Forward(x, tokens, y);
            Assert.All(y, v => Assert.True(float.IsFinite(v)));
            double layerError = Metrics.RelativeError(y, expectedLayer);
            Assert.True(layerError <= Tolerance, $"seed {seed} {config}: layer error {layerError:E2}");

            float[] stack = model.ForwardStack(x, tokens);
            double stackError = Metrics.RelativeError(stack, expectedStack);
            Assert.True(stackError <= Tolerance, $"seed {seed}: stack error {stackError:E2}");
            return;
        }
    }

    [Fact]
    public void Asking_for_a_non_moe_layer_names_the_moe_layers()
    {
        using var dir = new TempDirectory();
        var config = ModelPresets.Get("tiny").Build();
        SyntheticCheckpoint.Write(dir.Path, config, 7);
        using var model = MoeModel.Open(dir.Path);
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => model.Mixer(0));
        Assert.Contains("MoE layers: 1, 3", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Missing_and_misshapen_tensors_are_named()
    {
        // Refused where the model is opened (MoeModel.Open checks every declared MoE layer), not on first use of the layer.
        using var dir = new TempDirectory();
        var config = ModelPresets.Get("tiny").Build();
        SyntheticCheckpoint.Write(dir.Path, config, 7);
        var wider = config with { HiddenSize = 72 };
        File.WriteAllText(Path.Combine(dir.Path, "config.json"), wider.ToJson());
        var e = Assert.Throws<InvalidDataException>(() => MoeModel.Open(dir.Path));
        Assert.Contains("backbone.layers.1.mixer.gate.weight has shape [8, 64], expected [8, 72]", e.Message, StringComparison.Ordinal);

        var more = config with { NRoutedExperts = 9 };
        File.WriteAllText(Path.Combine(dir.Path, "config.json"), more.ToJson());
        var e2 = Assert.Throws<InvalidDataException>(() => MoeModel.Open(dir.Path));
        Assert.Contains("backbone.layers.1.mixer.experts.8.up_proj.weight", e2.Message, StringComparison.Ordinal);
        Assert.Contains("lacks", e2.Message, StringComparison.Ordinal);

        // The layer-level check stays where a layer is loaded (a checkpoint opened before its config changed).
        File.WriteAllText(Path.Combine(dir.Path, "config.json"), config.ToJson());
        using var tensors = CheckpointTensors.OpenDirectory(dir.Path);
        var e3 = Assert.Throws<InvalidDataException>(() => MoeLayerWeights.Load(tensors, wider, 1));
        Assert.Contains("backbone.layers.1.mixer.gate.weight has shape [8, 64], expected [8, 72]", e3.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Output_does_not_depend_on_thread_schedule()
    {
        using var dir = new TempDirectory();
        var config = ModelPresets.Get("tiny").Build(experts: 16);
        SyntheticCheckpoint.Write(dir.Path, config, 11);
        using var model = MoeModel.Open(dir.Path);
        float[] x = Gaussian(new Random(), 33 * config.HiddenSize);
        float[] first = model.ForwardLayer(1, x, 33);
        for (int i = 0; i < 5; i++)
        {
            Assert.Equal(first, model.ForwardLayer(1, x, 33));
        }
    }
}
