using MoECluster.Testing;
using ILGPU.Runtime;
using MoECluster.Model.Checkpoints;
using MoECluster.Model.Experts;

namespace MoECluster.Kernels.Gpu.Tests;

[Collection(CpuAcceleratorGroup.Name)]
public sealed class ExpertGroupTests(CpuAcceleratorFixture fixture)
{
    private const int Width = 12;
    private const int Intermediate = 19;

    [Theory]
    [InlineData(DType.BF16, 5, 3, 6)] // a few rows an expert: one 16-row block
    [InlineData(DType.F32, 18, 2, 3)] // 18 rows an expert: two blocks
    public void Expert_group_on_the_device_matches_the_fp64_reference(DType dtype, int tokens, int topK, int experts)
    {
        // Expert 1 is not held (and not routed to): the stacked weights skip it.
        int seed = Fp64.NewSeed();
        var rng = new Random(seed);
        using var weights = new TestWeights();
        var up = new float[experts][];
        var down = new float[experts][];
        for (int e = 0; e < experts; e++)
        {
            up[e] = weights.Add($"up{e}", dtype, Intermediate, Width, rng);
            down[e] = weights.Add($"down{e}", dtype, Width, Intermediate, rng);
        }

        ExpertWeights?[] held = [.. Enumerable.Range(0, experts).Select(e => e == 1 ? null : new ExpertWeights(e, weights.Get($"up{e}"), weights.Get($"down{e}")))];
        int[] plan = RandomPlan(rng, tokens, topK, [.. Enumerable.Range(0, experts).Where(e => e != 1)]);
        float[] gates = Fp64.RandomVector(rng, tokens * topK);
        float[] z = Fp64.RandomVector(rng, tokens * Width);
        using var group = new IlgpuExperts(fixture.Backend, held, Width, Intermediate);
        var u = new float[tokens * Width];
        Array.Fill(u, float.NaN);

        group.Compute(z, tokens, plan, gates, topK, u);

        var expected = new double[tokens * Width];
        for (int t = 0; t < tokens; t++)
        {
            float[] zt = z[(t * Width)..((t + 1) * Width)];
            for (int k = 0; k < topK; k++)
            {
                int e = plan[(t * topK) + k];
                double[] hidden = Fp64.Relu2(Fp64.Linear(up[e], Intermediate, Width, zt, 1));
                double[] o = Fp64.Linear(down[e], Width, Intermediate, Fp64.ToFloat(hidden), 1);
                for (int i = 0; i < Width; i++)
                {
                    expected[(t * Width) + i] += gates[(t * topK) + k] * o[i];
                }
            }
        }

        double error = Metrics.RelativeError(u, expected);
        Assert.True(error <= 1e-5, $"relative error {error:E2} (seed {seed})");
    }

    [Fact]
    public void Routing_to_an_expert_this_process_does_not_hold_is_an_error()
    {
        using var weights = new TestWeights();
        weights.Add("up", DType.BF16, Intermediate, Width, new Random(5));
        weights.Add("down", DType.BF16, Width, Intermediate, new Random(6));
        ExpertWeights?[] held = [new ExpertWeights(0, weights.Get("up"), weights.Get("down")), null];
        using var group = new IlgpuExperts(fixture.Backend, held, Width, Intermediate);

        var ex = Assert.Throws<InvalidOperationException>(() => group.Compute(new float[Width], 1, [1], [1f], 1, new float[Width]));
        Assert.Contains("expert 1", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void On_the_device_path_slots_routed_to_experts_not_held_add_nothing()
    {
        var rng = new Random(Fp64.NewSeed());
        using var weights = new TestWeights();
        float[] up = weights.Add("up", DType.BF16, Intermediate, Width, rng);
        float[] down = weights.Add("down", DType.BF16, Width, Intermediate, rng);
        ExpertWeights?[] held = [null, new ExpertWeights(1, weights.Get("up"), weights.Get("down")), null];
        using var group = new IlgpuExperts(fixture.Backend, held, Width, Intermediate);
        const int tokens = 2, topK = 2;
        int[] plan = [0, 1, 2, 1]; // each token: one held expert (1), one not
        float[] gates = [0.25f, 0.5f, 2f, 1.5f];
        float[] z = Fp64.RandomVector(rng, tokens * Width);
        int wp = DeviceLinear.PadColumns(Width);
        var zPadded = new float[tokens * wp];
        for (int t = 0; t < tokens; t++)
        {
            z.AsSpan(t * Width, Width).CopyTo(zPadded.AsSpan(t * wp));
        }

        var accelerator = fixture.Device.Accelerator;
        using var dz = accelerator.Allocate1D(zPadded);
        using var de = accelerator.Allocate1D(plan);
        using var dw = accelerator.Allocate1D(gates);
        using var du = accelerator.Allocate1D(Enumerable.Repeat(float.NaN, tokens * Width).ToArray());

        group.ComputeOnDevice(dz.View, tokens, de.View, dw.View, topK, du.View);
        accelerator.Synchronize();

        var expected = new double[tokens * Width];
        for (int t = 0; t < tokens; t++)
        {
            double[] o = Fp64.Linear(down, Width, Intermediate, Fp64.ToFloat(Fp64.Relu2(Fp64.Linear(up, Intermediate, Width, z[(t * Width)..((t + 1) * Width)], 1))), 1);
            for (int i = 0; i < Width; i++)
            {
                expected[(t * Width) + i] = gates[(t * topK) + 1] * o[i];
            }
        }

        Assert.True(Metrics.RelativeError(du.GetAsArray1D(), expected) <= 1e-5);
    }

    [Fact]
    public void A_row_naming_an_expert_twice_is_rejected()
    {
        using var weights = new TestWeights();
        weights.Add("up", DType.BF16, Intermediate, Width, new Random(7));
        weights.Add("down", DType.BF16, Width, Intermediate, new Random(8));
        ExpertWeights?[] held = [new ExpertWeights(0, weights.Get("up"), weights.Get("down"))];
        using var group = new IlgpuExperts(fixture.Backend, held, Width, Intermediate);

        var ex = Assert.Throws<ArgumentException>(() => group.Compute(new float[Width], 1, [0, 0], [0.5f, 0.5f], 2, new float[Width]));
        Assert.Contains("twice", ex.Message, StringComparison.Ordinal);
    }

    private static int[] RandomPlan(Random rng, int tokens, int topK, int[] experts) =>
        [.. Enumerable.Range(0, tokens).SelectMany(_ => experts.OrderBy(_ => rng.Next()).Take(topK))];
}
