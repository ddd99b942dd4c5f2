using System.Buffers.Binary;
using System.Globalization;
using System.Text;
using System.Text.Json;
using MoECluster.Model.Configuration;
using MoECluster.Model.Layers;
using MoECluster.Model.Numerics;
using MoECluster.Model.Presets;
using MoECluster.Model.Tests.Support;
using MoECluster.Testing;

namespace MoECluster.Model.Tests.Layers;

/// <summary>
/// Numbers stay numbers: a finite input whose forward leaves the float32 range is refused with an error naming the
/// layer and the step (never a NaN or infinity in an answer), an input that normalizes (the stack's RMSNorm) gets its
/// correct finite answer however large it is, and a checkpoint holding a NaN or infinity is refused when loaded.
/// </summary>
public sealed class ForwardRangeTests
{
    private static float[] Gaussian(Random rng, int count, float scale) =>
        [.. Enumerable.Range(0, count).Select(_ => scale * (float)(Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble())))];

    public static TheoryData<string, float> LargeInputs() => new()
    {
        { "tiny", 1e20f },
        { "tiny", 3.4e38f },
        { "tiny-standard", 1e20f },
        { "tiny-standard", 3.4e38f },
    };

    [Theory]
    [MemberData(nameof(LargeInputs))]
    public void A_layer_whose_output_leaves_float32_is_refused_naming_the_layer_the_step_and_the_input_magnitude(string preset, float magnitude)
    {
        using var dir = new TempDirectory();
        var config = ModelPresets.Get(preset).Build(experts: 16);
        SyntheticCheckpoint.Write(dir.Path, config, 5);
        using var model = MoeModel.Open(dir.Path);
        int tokens = 3, d = config.HiddenSize;
        float[] x = Gaussian(new Random(), tokens * d, 1f);
        float peak = x.Max(MathF.Abs);
        for (int i = 0; i < x.Length; i++)
        {
            x[i] = x[i] / peak * magnitude; // the largest |value| is exactly the magnitude
        }

        var e = Assert.Throws<ForwardOverflowException>(() => model.ForwardLayer(1, x, tokens));
        Assert.StartsWith("layer 1: ", e.Message, StringComparison.Ordinal);
        Assert.Contains("the float32 range (|value| ≤ 3.4e38) is exceeded in ", e.Message, StringComparison.Ordinal);
        Assert.Contains($"largest magnitude is {magnitude.ToString("G3", CultureInfo.InvariantCulture)}", e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("tiny", 1e20f)]
    [InlineData("tiny", 3.4e38f)]
    [InlineData("tiny-standard", 3.4e38f)]
    public void The_stack_normalizes_inputs_of_any_finite_size_and_matches_a_float64_reference(string preset, float magnitude)
    {
        using var dir = new TempDirectory();
        var config = ModelPresets.Get(preset).Build(experts: 16);
        SyntheticCheckpoint.Write(dir.Path, config, 9);
        using var model = MoeModel.Open(dir.Path);
        var reference = new Fp64Reference(model.Config, model.Tensors);
        int tokens = 4, d = config.HiddenSize;
        var rng = new Random();
        float[] x = Gaussian(rng, tokens * d, 1f);
        float peak = x.Max(MathF.Abs);
        for (int i = 0; i < x.Length; i++)
        {
            x[i] = x[i] / peak * magnitude;
        }

        float[] y = model.ForwardStack(x, tokens);
        Assert.Equal(-1, FloatRange.FirstNonFinite(y));
        double stackError = Metrics.RelativeError(y, reference.Stack([.. x.Select(v => (double)v)], tokens));
        Assert.True(stackError <= 1e-6, $"stack at {magnitude:G3}: relative error {stackError:E2}");

        // At this scale the residual hides the mixers' contribution in float32 (x + δ rounds to x): check that
        // contribution itself — the first MoE layer's mixer on RMSNorm(x) — against float64 on the same normed rows.
        int layer = config.MoeLayers[0];
        var normWeight = model.Mixer(layer).Weights.NormWeight;
        var normed = new float[x.Length];
        RmsNorm.Apply(x, normWeight, config.LayerNormEpsilon, normed);
        double[] normed64 = Norm64(x, normWeight, config.LayerNormEpsilon);
        Assert.True(Metrics.RelativeError(normed, normed64) <= 1e-6);
        float[] mixer = model.ForwardLayer(layer, normed, tokens);
        double mixerError = Metrics.RelativeError(mixer, reference.Mixer(layer, normed64, tokens));
        Assert.True(mixerError <= 1e-5, $"first mixer on RMSNorm(x) at {magnitude:G3}: relative error {mixerError:E2}");
    }

    private static double[] Norm64(float[] x, float[] weight, double epsilon)
    {
        int d = weight.Length;
        var y = new double[x.Length];
        for (int r = 0; r < x.Length / d; r++)
        {
            double ms = 0;
            for (int i = 0; i < d; i++)
            {
                ms += (double)x[(r * d) + i] * x[(r * d) + i];
            }

            double inv = 1 / Math.Sqrt((ms / d) + epsilon);
            for (int i = 0; i < d; i++)
            {
                y[(r * d) + i] = x[(r * d) + i] * inv * weight[i];
            }
        }

        return y;
    }

    [Fact]
    public void RmsNorm_of_rows_near_the_float32_limit_matches_float64()
    {
        var rng = new Random();
        const int d = 48;
        foreach (float magnitude in new[] { 1e-30f, 1f, 1e20f, 3.4e38f })
        {
            float[] x = Gaussian(rng, 2 * d, 1f);
            float peak = x.Max(MathF.Abs);
            for (int i = 0; i < x.Length; i++)
            {
                x[i] = x[i] / peak * magnitude;
            }

            float[] weight = Gaussian(rng, d, 1f);
            var y = new float[x.Length];
            y.AsSpan().Fill(float.NaN);
            RmsNorm.Apply(x, weight, 1e-5, y);
            double[] expected = Norm64(x, weight, 1e-5);
            double error = Metrics.RelativeError(y, expected);
            Assert.True(error <= 1e-6, $"RMSNorm at {magnitude:G3}: relative error {error:E2}");
        }
    }

    [Theory]
    [InlineData("backbone.layers.1.mixer.experts.3.up_proj.weight", 0x7FC0)]   // NaN
    [InlineData("backbone.layers.1.mixer.gate.weight", 0xFF80)]                 // -Inf
    [InlineData("backbone.layers.1.mixer.fc2_latent_proj.weight", 0x7F80)]      // +Inf
    public void A_checkpoint_with_a_non_finite_weight_is_refused_naming_the_tensor(string tensor, ushort bf16)
    {
        using var dir = new TempDirectory();
        var config = ModelPresets.Get("tiny").Build(experts: 8);
        SyntheticCheckpoint.Write(dir.Path, config, 3);
        Poke(Path.Combine(dir.Path, "model.safetensors"), tensor, element: 5, bf16);
        using var model = MoeModel.Open(dir.Path);
        var e = Assert.Throws<InvalidDataException>(() => model.Mixer(1));
        Assert.Contains($"{tensor} has a NaN or infinity at [0, 5]", e.Message, StringComparison.Ordinal);
        Assert.Contains("non-finite weights", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void FirstNonFinite_finds_the_first_nan_or_infinity_at_every_position()
    {
        for (int length = 0; length < 70; length++)
        {
            var values = new float[length];
            Array.Fill(values, 3.4e38f);
            Assert.Equal(-1, FloatRange.FirstNonFinite(values));
            for (int at = 0; at < length; at++)
            {
                foreach (float bad in new[] { float.NaN, float.PositiveInfinity, float.NegativeInfinity })
                {
                    values[at] = bad;
                    Assert.Equal(at, FloatRange.FirstNonFinite(values));
                    if (at + 1 < length)
                    {
                        values[length - 1] = float.NaN;
                        Assert.Equal(at, FloatRange.FirstNonFinite(values));
                        values[length - 1] = 3.4e38f;
                    }

                    values[at] = -3.4e38f;
                }
            }
        }
    }

    /// <summary>Overwrites element <paramref name="element"/> of a BF16 tensor in a safetensors file.</summary>
    private static void Poke(string file, string tensor, int element, ushort bf16)
    {
        using var stream = new FileStream(file, FileMode.Open, FileAccess.ReadWrite);
        var prefix = new byte[8];
        stream.ReadExactly(prefix);
        long headerLength = BinaryPrimitives.ReadInt64LittleEndian(prefix);
        var header = new byte[headerLength];
        stream.ReadExactly(header);
        using var json = JsonDocument.Parse(Encoding.UTF8.GetString(header));
        var entry = json.RootElement.GetProperty(tensor);
        Assert.Equal("BF16", entry.GetProperty("dtype").GetString());
        long begin = entry.GetProperty("data_offsets")[0].GetInt64();
        stream.Position = 8 + headerLength + begin + (2L * element);
        var bytes = new byte[2];
        BinaryPrimitives.WriteUInt16LittleEndian(bytes, bf16);
        stream.Write(bytes);
    }
}
