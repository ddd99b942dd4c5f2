using MoECluster.Testing;
using System.Globalization;
using MoECluster.Kernels.Cpu;
using MoECluster.Model.Checkpoints;
using MoECluster.Model.Compute;
using MoECluster.Model.Numerics;

namespace MoECluster.Kernels.Tests.Cpu;

public sealed class ManagedCpuBackendTests
{
    private const double Tolerance = 1e-5;

    private static readonly int[] TokenCounts = [1, 2, 3, 7, 17, 64, 100];
    private static readonly int[] InputSizes = [1, 5, 16, 33, 257, 1024];
    private static readonly int[] OutputSizes = [1, 3, 16, 31, 32, 33, 100, 257];

    public static TheoryData<string, int, int> EveryPathAndShape()
    {
        var data = new TheoryData<string, int, int>();
        foreach (KernelPath path in Enum.GetValues<KernelPath>())
        {
            foreach (int k in InputSizes)
            {
                foreach (int n in OutputSizes)
                {
                    data.Add(path.ToString(), k, n);
                }
            }
        }

        return data;
    }

    public static TheoryData<string, string, int, int> SixteenBitWeights()
    {
        var data = new TheoryData<string, string, int, int>();
        foreach (string dtype in new[] { nameof(DType.BF16), nameof(DType.F16) })
        {
            foreach (KernelPath path in new[] { KernelPath.Vector512, KernelPath.Vector256 })
            {
                foreach ((int k, int n) in new[] { (1, 1), (5, 33), (33, 100), (257, 31), (1024, 257) })
                {
                    data.Add(dtype, path.ToString(), k, n);
                }
            }
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(EveryPathAndShape))]
    public void LinearMatchesFp64ReferenceForF32WeightsWithTailsInEveryDimension(string path, int k, int n) =>
        AssertMatchesReference(DType.F32, Enum.Parse<KernelPath>(path), k, n, TokenCounts);

    [Theory]
    [MemberData(nameof(SixteenBitWeights))]
    public void LinearMatchesFp64ReferenceForSixteenBitWeights(string dtype, string path, int k, int n) =>
        AssertMatchesReference(Enum.Parse<DType>(dtype), Enum.Parse<KernelPath>(path), k, n, TokenCounts);

    [Theory]
    [InlineData("Vector512")]
    [InlineData("Vector256")]
    [InlineData("Scalar")]
    public void LinearMatchesFp64ReferenceAcrossSeveralTokenAndInputBlocks(string path) =>
        // 500 tokens span three token blocks; 2100 inputs span three K blocks, so later blocks add into Y.
        AssertMatchesReference(DType.BF16, Enum.Parse<KernelPath>(path), (2 * ManagedSgemm.KBlock) + 52, 130, [(ManagedSgemm.TokenBlock * 2) + 20]);

    [Fact]
    public void DefaultBackendIsNamedManagedAndUsesTheWidestAcceleratedPath()
    {
        var backend = new ManagedCpuBackend();
        using var weight = new CheckpointWeight(DType.F32, 3, 4, seed: 1);
        var prepared = (PackedMatrix)backend.Prepare(weight.Matrix);

        Assert.Equal("managed", backend.Name);
        Assert.Equal(KernelPaths.Best, prepared.Path);
    }

    [Theory]
    [InlineData("Vector512", 64, "BF16", 2)]
    [InlineData("Vector256", 16, "BF16", 2)]
    [InlineData("Scalar", 16, "BF16", 2)]
    [InlineData("Vector512", 64, "F32", 4)]
    [InlineData("Vector256", 16, "F16", 4)]
    [InlineData("Scalar", 16, "F32", 4)]
    public void PreparedWeightReportsItsShapeAndPaddedPanelBytes(string path, int panelWidth, string dtype, int bytesPerWeight)
    {
        using var weight = new CheckpointWeight(Enum.Parse<DType>(dtype), 33, 5, seed: 2);
        IPreparedLinear prepared = new ManagedCpuBackend(Enum.Parse<KernelPath>(path)).Prepare(weight.Matrix);

        Assert.Equal(33, prepared.Rows);
        Assert.Equal(5, prepared.Cols);
        long panels = (33 + panelWidth - 1) / panelWidth;
        long packedWeights = panels * panelWidth * 5;
        // Up to 64 bytes of slack for the 64-byte alignment.
        Assert.InRange(prepared.PreparedBytes, packedWeights * bytesPerWeight, (packedWeights * bytesPerWeight) + 64);
    }

    [Fact]
    public void RepeatedRunsGiveBitwiseIdenticalResults()
    {
        using var weight = new CheckpointWeight(DType.BF16, 300, 700, seed: 3);
        var backend = new ManagedCpuBackend();
        IPreparedLinear prepared = backend.Prepare(weight.Matrix);
        float[] x = CheckpointWeight.Random(new Random(4), 257 * 700);
        float[] first = new float[257 * 300];
        backend.Linear(prepared, x, 257, first);

        for (int run = 0; run < 5; run++)
        {
            float[] again = new float[257 * 300];
            backend.Linear(prepared, x, 257, again);
            Assert.Equal(first, again);
        }
    }

    [Theory]
    [InlineData(700, 300, 33)] // one panel: the tokens are split between threads
    [InlineData(257, 700, 300)] // several panels: the outputs are split between threads
    public void ResultsDoNotDependOnTheThreadCount(int tokens, int k, int n)
    {
        float[] w = CheckpointWeight.Random(new Random(5), n * k);
        float[] x = CheckpointWeight.Random(new Random(6), tokens * k);
        PackedMatrix packed = PackedMatrix.FromFloat32(w, n, k);
        float[] single = new float[tokens * n];
        ManagedSgemm.Multiply(packed, x, tokens, single, maxThreads: 1);
        double error = Metrics.RelativeError(single, CheckpointWeight.Reference(w, n, k, x, tokens));
        Assert.True(error <= Tolerance, $"relative error {error}");

        foreach (int threads in new[] { 2, 3, 4, 7 })
        {
            float[] y = new float[tokens * n];
            y.AsSpan().Fill(float.NaN);
            ManagedSgemm.Multiply(packed, x, tokens, y, threads);
            Assert.Equal(single, y);
        }
    }

    [Fact]
    public void PackingFromFloat32ArrayAndFromCheckpointGiveIdenticalResults()
    {
        using var weight = new CheckpointWeight(DType.F32, 100, 257, seed: 7);
        float[] x = CheckpointWeight.Random(new Random(8), 17 * 257);
        float[] fromCheckpoint = new float[17 * 100];
        float[] fromArray = new float[17 * 100];

        ManagedSgemm.Multiply(PackedMatrix.FromWeight(weight.Matrix), x, 17, fromCheckpoint);
        ManagedSgemm.Multiply(PackedMatrix.FromFloat32(weight.Values, 100, 257), x, 17, fromArray);

        Assert.Equal(fromCheckpoint, fromArray);
    }

    [Fact]
    public void ExpertFfnMatchesUpProjectionThenRelu2ThenDownProjection()
    {
        using var up = new CheckpointWeight(DType.BF16, 96, 40, seed: 9);
        using var down = new CheckpointWeight(DType.BF16, 40, 96, seed: 10);
        const int tokens = 9;
        float[] z = CheckpointWeight.Random(new Random(11), tokens * 40);
        IComputeBackend backend = new ManagedCpuBackend();
        float[] output = new float[tokens * 40];
        output.AsSpan().Fill(float.NaN);

        backend.ExpertFfn(backend.Prepare(up.Matrix), backend.Prepare(down.Matrix), z, tokens, output);

        double[] hidden = CheckpointWeight.Reference(up.Values, 96, 40, z, tokens);
        float[] activated = [.. hidden.Select(h => (float)(Math.Max(h, 0) * Math.Max(h, 0)))];
        double[] expected = CheckpointWeight.Reference(down.Values, 40, 96, activated, tokens);
        double error = Metrics.RelativeError(output, expected);
        Assert.True(error <= Tolerance, $"relative error {error}");
    }

    [Fact]
    public void ZeroTokensIsANoOp()
    {
        using var weight = new CheckpointWeight(DType.F32, 8, 8, seed: 12);
        var backend = new ManagedCpuBackend();

        backend.Linear(backend.Prepare(weight.Matrix), [], 0, []);
    }

    [Fact]
    public void MismatchedInputOrOutputLengthsAreRejected()
    {
        using var weight = new CheckpointWeight(DType.F32, 8, 4, seed: 13);
        var backend = new ManagedCpuBackend();
        IPreparedLinear prepared = backend.Prepare(weight.Matrix);

        Assert.Throws<ArgumentException>(() => backend.Linear(prepared, new float[2 * 4 - 1], 2, new float[2 * 8]));
        Assert.Throws<ArgumentException>(() => backend.Linear(prepared, new float[2 * 4], 2, new float[2 * 8 + 1]));
    }

    [Fact]
    public void WeightsPreparedByAnotherBackendAreRejected()
    {
        using var weight = new CheckpointWeight(DType.F32, 8, 4, seed: 14);
        IPreparedLinear foreign = new ReferenceBackend().Prepare(weight.Matrix);

        Assert.Throws<ArgumentException>(() => new ManagedCpuBackend().Linear(foreign, new float[4], 1, new float[8]));
    }

    private static void AssertMatchesReference(DType dtype, KernelPath path, int k, int n, int[] tokenCounts)
    {
        using var weight = new CheckpointWeight(dtype, n, k, seed: (k * 1000) + n);
        var backend = new ManagedCpuBackend(path);
        IPreparedLinear prepared = backend.Prepare(weight.Matrix);
        weight.AssertLinearMatchesReference(backend, prepared, tokenCounts, new Random((k * 7919) + n), $"{dtype} {path}", Tolerance);
    }
}
