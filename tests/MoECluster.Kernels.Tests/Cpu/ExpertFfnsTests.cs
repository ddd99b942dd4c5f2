using System.Globalization;
using MoECluster.Kernels.Cpu;
using MoECluster.Model.Checkpoints;
using MoECluster.Model.Compute;
using MoECluster.Model.Numerics;
using MoECluster.Testing;

namespace MoECluster.Kernels.Tests.Cpu;

/// <summary>
/// The managed backend's grouped expert FFN: relu² applied in the up projection's store equals a separate pass, and
/// experts run side by side on separate cores give the same bits as experts run one after another.
/// </summary>
public sealed class ExpertFfnsTests
{
    private const double Tolerance = 1e-5;

    public static TheoryData<string, int, int, int> FusedShapes()
    {
        var data = new TheoryData<string, int, int, int>();
        foreach (KernelPath path in Enum.GetValues<KernelPath>())
        {
            // Tokens across MR tiles and token blocks, N with and without a partial panel, K in one and in two K blocks.
            foreach ((int tokens, int k, int n) in new[] { (1, 33, 100), (7, 257, 64), (250, 40, 31), (13, ManagedSgemm.KBlock + 300, 130) })
            {
                data.Add(path.ToString(), tokens, k, n);
            }
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(FusedShapes))]
    public void SquaredReluInTheStoreEqualsTheProductThenRelu2BitForBitAndWritesEveryElement(string path, int tokens, int k, int n)
    {
        var kernel = Enum.Parse<KernelPath>(path);
        float[] w = CheckpointWeight.Random(new Random(k + n), n * k);
        var packed = PackedMatrix.FromFloat32(w, n, k, kernel);
        float[] x = CheckpointWeight.Random(new Random(tokens), tokens * k);
        float[] separate = new float[tokens * n];
        ManagedSgemm.Multiply(packed, x, tokens, separate, 1);
        Activations.Relu2(separate);
        Assert.Contains(separate, v => v == 0f);
        Assert.Contains(separate, v => v > 0f);

        foreach (int threads in new[] { 1, 2, 3 })
        {
            float[] fused = new float[tokens * n];
            fused.AsSpan().Fill(float.NaN);

            ManagedSgemm.Multiply(packed, x, tokens, fused, threads, squaredRelu: true);

            string shape = string.Create(CultureInfo.InvariantCulture, $"{path} T={tokens} K={k} N={n} threads={threads}");
            Assert.True(Array.TrueForAll(fused, float.IsFinite), $"{shape}: an output element was not written");
            Assert.True(separate.AsSpan().SequenceEqual(fused), $"{shape}: fused relu² differs from the separate pass");
        }
    }

    [Theory]
    [InlineData(0)]
    [InlineData(int.MaxValue)]
    public void ExpertsSideBySideEqualExpertsOneAfterAnotherBitForBit(int expertParallelMaxRows)
    {
        const int width = 40, hidden = 96;
        int[] rows = [3, 0, 1, 7, 6, 2, 9, 1, 5, 4];
        var weights = Enumerable.Range(0, rows.Length)
            .Select(e => (Up: new CheckpointWeight(DType.BF16, hidden, width, seed: 100 + e), Down: new CheckpointWeight(DType.BF16, width, hidden, seed: 200 + e)))
            .ToArray();
        try
        {
            var grouped = new ManagedCpuBackend(KernelPaths.Best, threads: 3, expertParallelMaxRows);
            IComputeBackend oneByOne = new ManagedCpuBackend(KernelPaths.Best, threads: 1, int.MaxValue);
            var groups = new ExpertFfnGroup[rows.Length];
            for (int e = 0, first = 0; e < rows.Length; first += rows[e], e++)
            {
                groups[e] = new ExpertFfnGroup(grouped.Prepare(weights[e].Up.Matrix), grouped.Prepare(weights[e].Down.Matrix), first, rows[e]);
            }

            Assert.Equal(expertParallelMaxRows > 0, grouped.SideBySide(groups));
            int total = rows.Sum();
            int seed = Random.Shared.Next();
            float[] z = CheckpointWeight.Random(new Random(seed), total * width);
            float[] output = new float[total * width];
            output.AsSpan().Fill(float.NaN);

            ((IComputeBackend)grouped).ExpertFfns(groups, z, output);

            Assert.True(Array.TrueForAll(output, float.IsFinite), $"seed {seed}: an output element was not written");
            foreach (var g in groups)
            {
                float[] alone = new float[g.Rows * width];
                oneByOne.ExpertFfn(g.Up, g.Down, z.AsSpan(g.FirstRow * width, g.Rows * width), g.Rows, alone);
                Assert.True(alone.AsSpan().SequenceEqual(output.AsSpan(g.FirstRow * width, g.Rows * width)), $"seed {seed}: rows [{g.FirstRow}, +{g.Rows}) differ");

                double[] h = CheckpointWeight.Reference(weights[Array.IndexOf(groups, g)].Up.Values, hidden, width, z[(g.FirstRow * width)..((g.FirstRow + g.Rows) * width)], g.Rows);
                float[] activated = [.. h.Select(v => (float)(Math.Max(v, 0) * Math.Max(v, 0)))];
                double[] expected = CheckpointWeight.Reference(weights[Array.IndexOf(groups, g)].Down.Values, width, hidden, activated, g.Rows);
                double error = g.Rows == 0 ? 0 : Metrics.RelativeError(alone, expected);
                Assert.True(error <= Tolerance, $"seed {seed}: rows [{g.FirstRow}, +{g.Rows}): relative error {error} vs the fp64 reference");
            }
        }
        finally
        {
            foreach (var (up, down) in weights)
            {
                up.Dispose();
                down.Dispose();
            }
        }
    }

    [Fact]
    public void ExpertsRunSideBySideOnlyWhenTheCoresCanBeKeptEvenlyBusy()
    {
        using var up = new CheckpointWeight(DType.F32, 8, 4, seed: 1);
        using var down = new CheckpointWeight(DType.F32, 4, 8, seed: 2);
        var two = new ManagedCpuBackend(KernelPaths.Best, threads: 2, expertParallelMaxRows: 64);
        var sixteen = new ManagedCpuBackend(KernelPaths.Best, threads: 16, expertParallelMaxRows: 64);
        ExpertFfnGroup[] Groups(params int[] rows)
        {
            int first = 0;
            return [.. rows.Select(r => new ExpertFfnGroup(two.Prepare(up.Matrix), two.Prepare(down.Matrix), (first += r) - r, r))];
        }

        Assert.True(two.SideBySide(Groups([.. Enumerable.Repeat(1, 22)])));    // decode: 22 one-row experts, 11 a core
        Assert.True(two.SideBySide(Groups(30, 20, 10)));                       // 30 | 20 + 10
        Assert.False(two.SideBySide(Groups(40, 5, 5)));                        // one expert holds most rows
        Assert.False(two.SideBySide(Groups(65, 64, 64)));                      // above the row limit: each GEMM over all cores
        Assert.False(two.SideBySide(Groups(1)));                               // one expert
        Assert.False(sixteen.SideBySide(Groups([.. Enumerable.Repeat(1, 22)]))); // 2 rounds where 1.4 would be even
        Assert.True(sixteen.SideBySide(Groups([.. Enumerable.Repeat(3, 64)])));  // 4 a core
        Assert.False(new ManagedCpuBackend(KernelPaths.Best, threads: 1, 64).SideBySide(Groups(1, 1)));
    }

    [Fact]
    public void AGroupOutsideTheBuffersIsRejectedBeforeAnyWork()
    {
        using var up = new CheckpointWeight(DType.F32, 8, 4, seed: 1);
        using var down = new CheckpointWeight(DType.F32, 4, 8, seed: 2);
        IComputeBackend backend = new ManagedCpuBackend();
        var group = new ExpertFfnGroup(backend.Prepare(up.Matrix), backend.Prepare(down.Matrix), 2, 2);

        Assert.Throws<ArgumentException>(() => backend.ExpertFfns([group], new float[3 * 4], new float[4 * 4]));
        Assert.Throws<ArgumentException>(() => backend.ExpertFfns([group with { Down = group.Up }], new float[4 * 4], new float[4 * 4]));
    }
}
