using System.Globalization;
using System.Text.RegularExpressions;
using MoECluster.Kernels.Cpu;
using MoECluster.Model.Checkpoints;
using MoECluster.Model.Compute;
using MoECluster.Testing;

namespace MoECluster.Kernels.Tests.Cpu;

/// <summary>BF16 weights packed as bfloat16 panels and widened inside the micro-kernels (issue 12 item 3).</summary>
public sealed partial class BFloat16PanelTests
{
    private const double Tolerance = 1e-5;

    /// <summary>1..13 tokens (every MR remainder, one and two tiles) and more than a token block.</summary>
    private static readonly int[] TokenCounts = [.. Enumerable.Range(1, 13), ManagedSgemm.TokenBlock + 10];

    public static TheoryData<string, int, int> EveryPathAndRaggedShape()
    {
        var data = new TheoryData<string, int, int>();
        foreach (KernelPath path in Enum.GetValues<KernelPath>())
        {
            // Rows not a multiple of any panel width (and 65, 100, 130 reach the second 32-output pair group
            // of a 64-wide panel); K not a multiple of the K block (1027 and 2100 take two and three blocks).
            foreach ((int k, int n) in new[] { (1, 1), (5, 17), (33, 100), (257, 31), (ManagedSgemm.KBlock + 3, 65), ((2 * ManagedSgemm.KBlock) + 52, 130) })
            {
                data.Add(path.ToString(), k, n);
            }
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(EveryPathAndRaggedShape))]
    public void BFloat16PanelsMatchFp64ReferenceOfTheSameBFloat16Weights(string pathName, int k, int n)
    {
        KernelPath path = Enum.Parse<KernelPath>(pathName);
        using var weight = new CheckpointWeight(DType.BF16, n, k, seed: (k * 31) + n);
        var backend = new ManagedCpuBackend(path);
        var prepared = (PackedMatrix)backend.Prepare(weight.Matrix);
        Assert.Equal(PanelElement.BFloat16, prepared.Element);
        weight.AssertLinearMatchesReference(backend, prepared, TokenCounts, new Random((k * 7) + n), path.ToString(), Tolerance);
    }

    [Theory]
    [InlineData("Vector512")]
    [InlineData("Vector256")]
    [InlineData("Scalar")]
    public void BFloat16PanelsGiveTheSameBitsAsFloat32PanelsOfTheWidenedWeights(string pathName)
    {
        // Widening is exact and the summation order is the same, so the two formats must agree bit for bit.
        KernelPath path = Enum.Parse<KernelPath>(pathName);
        const int k = ManagedSgemm.KBlock + 3;
        const int n = 130;
        using var weight = new CheckpointWeight(DType.BF16, n, k, seed: 21);
        PackedMatrix bf16 = PackedMatrix.FromWeight(weight.Matrix, path);
        PackedMatrix fp32 = PackedMatrix.FromFloat32(weight.Values, n, k, path);
        var rng = new Random(22);
        foreach (int tokens in new[] { 1, 7, ManagedSgemm.TokenBlock + 10 })
        {
            float[] x = CheckpointWeight.Random(rng, tokens * k);
            float[] fromBf16 = new float[tokens * n];
            float[] fromFp32 = new float[tokens * n];

            ManagedSgemm.Multiply(bf16, x, tokens, fromBf16);
            ManagedSgemm.Multiply(fp32, x, tokens, fromFp32);

            Assert.Equal(fromFp32, fromBf16);
        }
    }

    [Theory]
    [InlineData(700, 300, 33)] // one panel: the tokens are split between threads
    [InlineData(257, 700, 300)] // several panels: the outputs are split between threads
    public void BFloat16ResultsDoNotDependOnTheThreadCount(int tokens, int k, int n)
    {
        using var weight = new CheckpointWeight(DType.BF16, n, k, seed: 23);
        float[] x = CheckpointWeight.Random(new Random(24), tokens * k);
        PackedMatrix packed = PackedMatrix.FromWeight(weight.Matrix);
        Assert.Equal(PanelElement.BFloat16, packed.Element);
        float[] single = new float[tokens * n];
        single.AsSpan().Fill(float.NaN);
        ManagedSgemm.Multiply(packed, x, tokens, single, maxThreads: 1);
        double error = Metrics.RelativeError(single, CheckpointWeight.Reference(weight.Values, n, k, x, tokens));
        Assert.True(error <= Tolerance, $"relative error {error}");

        foreach (int threads in new[] { 2, 3, 4, 7 })
        {
            float[] y = new float[tokens * n];
            y.AsSpan().Fill(float.NaN);
            ManagedSgemm.Multiply(packed, x, tokens, y, threads);
            Assert.Equal(single, y);
        }
    }

    [Theory]
    [InlineData("Vector512")]
    [InlineData("Vector256")]
    [InlineData("Scalar")]
    public void BFloat16WeightIsHeldInAtMostFiftyFivePercentOfItsFloat32Packing(string pathName)
    {
        // The memory claim of issue 12 item 3: no fp32 copy of a BF16 weight.
        KernelPath path = Enum.Parse<KernelPath>(pathName);
        using var weight = new CheckpointWeight(DType.BF16, 1000, 300, seed: 25);
        IPreparedLinear prepared = new ManagedCpuBackend(path).Prepare(weight.Matrix);
        long fp32Bytes = PackedMatrix.FromFloat32(weight.Values, 1000, 300, path).PreparedBytes;

        Assert.True(prepared.PreparedBytes <= 0.55 * fp32Bytes, $"{prepared.PreparedBytes} bytes prepared, fp32 panels take {fp32Bytes}");
        Assert.InRange(prepared.PreparedBytes, weight.Matrix.ByteLength, (fp32Bytes / 2) + 64);
    }

    [Theory]
    [InlineData("F32")]
    [InlineData("F16")]
    public void NonBFloat16WeightsKeepFloat32Panels(string dtype)
    {
        using var weight = new CheckpointWeight(Enum.Parse<DType>(dtype), 40, 24, seed: 26);

        var prepared = (PackedMatrix)new ManagedCpuBackend().Prepare(weight.Matrix);

        Assert.Equal(PanelElement.Float32, prepared.Element);
    }

    [Fact]
    public void PreparingAWeightDropsItsMappedCheckpointPagesFromTheResidentSetAndTheWeightStaysReadable()
    {
        if (!OperatingSystem.IsLinux())
        {
            return;
        }

        // 2 MiB of BF16 weights, every page read by CheckpointWeight's constructor.
        using var weight = new CheckpointWeight(DType.BF16, 1024, 1024, seed: 30);
        string file = weight.Matrix.Tensor.File.Path;
        long pageKiB = Environment.SystemPageSize / 1024;
        long before = MappedResidentKiB(file);

        IPreparedLinear prepared = new ManagedCpuBackend().Prepare(weight.Matrix);
        long after = MappedResidentKiB(file);

        Assert.True(before >= 1024, $"{before} KiB of the checkpoint resident before packing");
        // What may stay: the pages the tensor shares with the header and the file's end.
        Assert.True(after <= 2 * pageKiB, $"{after} KiB of the checkpoint still resident after packing");
        float[] row = new float[1024];
        weight.Matrix.ReadRow(700, row);
        Assert.Equal(weight.Values.AsSpan(700 * 1024, 1024).ToArray(), row);
        Assert.Equal(1024, prepared.Rows);
    }

    [Fact]
    public void PanelsOfAtLeastOneHugePageLiveOnAdvisedHugePagesAndStillMatchTheFp64Reference()
    {
        // 1088 × 1027 BF16 = 2.13 MiB of panels (one whole 2 MiB page and a tail): native memory, huge pages advised on
        // Linux; two K blocks, a partial last panel. A 33 × 100 weight stays in a pinned array.
        using var large = new CheckpointWeight(DType.BF16, 1088, ManagedSgemm.KBlock + 3, seed: 40);
        var backend = new ManagedCpuBackend();
        var prepared = (PackedMatrix)backend.Prepare(large.Matrix);
        Assert.True(prepared.PreparedBytes >= Model.Numerics.HugePageBuffer.PageBytes, $"{prepared.PreparedBytes} bytes");
        Assert.Equal(OperatingSystem.IsLinux() && File.Exists("/sys/kernel/mm/transparent_hugepage/enabled"), prepared.OnHugePages);
        large.AssertLinearMatchesReference(backend, prepared, [1, 3, 8, ManagedSgemm.TokenBlock + 10], new Random(41), "huge pages", Tolerance);

        using var small = new CheckpointWeight(DType.BF16, 100, 33, seed: 42);
        var smallPrepared = (PackedMatrix)backend.Prepare(small.Matrix);
        Assert.False(smallPrepared.OnHugePages);
        small.AssertLinearMatchesReference(backend, smallPrepared, [1, 7], new Random(43), "pinned array", Tolerance);
    }

    /// <summary>Sum of the Rss lines of this process's mappings of <paramref name="path"/> (/proc/self/smaps).</summary>
    private static long MappedResidentKiB(string path)
    {
        string fullPath = Path.GetFullPath(path);
        long total = 0;
        bool inFile = false;
        foreach (string line in File.ReadLines("/proc/self/smaps"))
        {
            if (MappingHeader().IsMatch(line))
            {
                inFile = line.EndsWith(" " + fullPath, StringComparison.Ordinal);
            }
            else if (inFile && line.StartsWith("Rss:", StringComparison.Ordinal))
            {
                total += long.Parse(line.AsSpan(4).Trim().TrimEnd("kB").Trim(), CultureInfo.InvariantCulture);
            }
        }

        return total;
    }

    /// <summary>The first line of a mapping's entry: "start-end perms offset dev inode [path]".</summary>
    [GeneratedRegex("^[0-9a-f]+-[0-9a-f]+ ")]
    private static partial Regex MappingHeader();
}
