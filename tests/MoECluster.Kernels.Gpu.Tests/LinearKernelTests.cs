using MoECluster.Testing;
using ILGPU;
using ILGPU.Runtime;
using MoECluster.Model.Checkpoints;
using MoECluster.Model.Compute;

namespace MoECluster.Kernels.Gpu.Tests;

[Collection(CpuAcceleratorGroup.Name)]
public sealed class LinearKernelTests(CpuAcceleratorFixture fixture)
{
    /// <summary>
    /// (rows, cols, tokens): column tails (cols not a multiple of 4 or 8), partly filled groups, token blocks
    /// (GEMV: 16 tokens a pass; tiled: 32 tokens × 64 rows a tile, 32 columns a step).
    /// </summary>
    private static readonly (int Rows, int Cols, int Tokens)[] GemvShapes = [(5, 13, 1), (13, 70, 3), (9, 8, 16), (11, 33, 19), (1, 1, 2), (6, 40, 7)];

    private static readonly (int Rows, int Cols, int Tokens)[] TiledShapes = [(5, 13, 17), (70, 33, 40), (65, 100, 33), (3, 8, 1)];

    public static TheoryData<DType, int, int, int> GemvCases() => Cases(GemvShapes);

    public static TheoryData<DType, int, int, int> TiledCases() => Cases(TiledShapes);

    [Theory]
    [MemberData(nameof(GemvCases))]
    public void Gemv_kernel_matches_the_fp64_reference_and_writes_exactly_the_output_columns(DType dtype, int rows, int cols, int tokens) =>
        CheckOnDevice(fixture.GemvBackend, dtype, rows, cols, tokens);

    [Theory]
    [MemberData(nameof(TiledCases))]
    public void Tiled_kernel_matches_the_fp64_reference_and_writes_exactly_the_output_columns(DType dtype, int rows, int cols, int tokens) =>
        CheckOnDevice(fixture.TiledBackend, dtype, rows, cols, tokens);

    [Theory]
    [InlineData(DType.BF16, 2, 2)]
    [InlineData(DType.BF16, 8, 2)]
    [InlineData(DType.F32, 3, 4)]
    [InlineData(DType.F16, 5, 4)]
    [InlineData(DType.F64, 9, 4)]
    public void Prepare_uploads_bf16_as_bf16_and_other_dtypes_as_fp32_with_rows_padded_to_the_column_alignment(DType dtype, int cols, int deviceBytesPerValue)
    {
        using var weights = new TestWeights();
        weights.Add("w", dtype, 3, cols, new Random(1));
        var prepared = (DeviceLinear)fixture.Backend.Prepare(weights.Get("w"));

        Assert.Equal(dtype == DType.BF16 ? DeviceWeightFormat.BFloat16 : DeviceWeightFormat.Float32, prepared.Format);
        Assert.Equal((3, cols), (prepared.Rows, prepared.Cols));
        Assert.Equal(0, prepared.PaddedCols % DeviceLinear.ColumnAlignment);
        Assert.InRange(prepared.PaddedCols - cols, 0, DeviceLinear.ColumnAlignment - 1);
        Assert.Equal(3L * prepared.PaddedCols * deviceBytesPerValue, prepared.PreparedBytes);
    }

    [Theory]
    [InlineData(DType.BF16, 4)]
    [InlineData(DType.F32, 21)]
    public void Linear_through_the_interface_matches_the_reference_backend(DType dtype, int tokens)
    {
        int seed = Fp64.NewSeed();
        var rng = new Random(seed);
        using var weights = new TestWeights();
        weights.Add("w", dtype, 23, 45, rng);
        float[] x = Fp64.RandomVector(rng, tokens * 45);
        IComputeBackend gpu = fixture.Backend;
        IComputeBackend reference = new ReferenceBackend();
        var y = new float[tokens * 23];
        var expected = new float[tokens * 23];
        Array.Fill(y, float.NaN);

        gpu.Linear(gpu.Prepare(weights.Get("w")), x, tokens, y);
        reference.Linear(reference.Prepare(weights.Get("w")), x, tokens, expected);

        Assert.True(Metrics.RelativeError(y, [.. expected.Select(v => (double)v)]) <= 1e-5, $"seed {seed}");
        Assert.Equal("ilgpu", gpu.Name);
    }

    [Theory]
    [InlineData(DType.BF16, 3)]
    [InlineData(DType.F32, 18)]
    public void ExpertFfn_on_the_device_matches_the_fp64_reference(DType dtype, int tokens)
    {
        int seed = Fp64.NewSeed();
        var rng = new Random(seed);
        const int width = 20, inter = 27;
        using var weights = new TestWeights();
        float[] up = weights.Add("up", dtype, inter, width, rng);
        float[] down = weights.Add("down", dtype, width, inter, rng);
        float[] z = Fp64.RandomVector(rng, tokens * width);
        IComputeBackend gpu = fixture.Backend;
        var output = new float[tokens * width];
        Array.Fill(output, float.NaN);

        gpu.ExpertFfn(gpu.Prepare(weights.Get("up")), gpu.Prepare(weights.Get("down")), z, tokens, output);

        double[] hidden = Fp64.Relu2(Fp64.Linear(up, inter, width, z, tokens));
        double[] expected = Fp64.Linear(down, width, inter, Fp64.ToFloat(hidden), tokens);
        Assert.True(Metrics.RelativeError(output, expected) <= 1e-5, $"seed {seed}");
    }

    [Fact]
    public void Linear_rejects_a_weight_prepared_by_another_backend()
    {
        using var weights = new TestWeights();
        weights.Add("w", DType.F32, 2, 2, new Random(2));
        IPreparedLinear foreign = new ReferenceBackend().Prepare(weights.Get("w"));

        var ex = Assert.Throws<ArgumentException>(() => fixture.Backend.Linear(foreign, new float[2], 1, new float[2]));
        Assert.Contains("not prepared by the ilgpu backend", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Linear_rejects_inputs_of_the_wrong_length()
    {
        using var weights = new TestWeights();
        weights.Add("w", DType.BF16, 4, 6, new Random(3));
        IPreparedLinear w = fixture.Backend.Prepare(weights.Get("w"));

        Assert.Throws<ArgumentException>(() => fixture.Backend.Linear(w, new float[11], 2, new float[8]));
        Assert.Throws<ArgumentException>(() => fixture.Backend.Linear(w, new float[12], 2, new float[7]));
    }

    [Theory]
    [InlineData(DType.BF16)]
    [InlineData(DType.F32)]
    public void Grouped_gemv_runs_each_held_expert_on_its_row_range_and_leaves_unheld_rows_and_pads_unwritten(DType dtype)
    {
        int seed = Fp64.NewSeed();
        var rng = new Random(seed);
        const int rows = 10, cols = 21;
        int[] offsets = [0, 3, 5, 22]; // expert 0: 3 rows; expert 1 (not held): 2; expert 2: 17 (two 16-row blocks)
        using var weights = new TestWeights();
        float[] w0 = weights.Add("w0", dtype, rows, cols, rng);
        float[] w2 = weights.Add("w2", dtype, rows, cols, rng);
        Accelerator accelerator = fixture.Device.Accelerator;
        using var stack = new StackedLinear(accelerator, [weights.Get("w0"), null, weights.Get("w2")]);
        int xStride = stack.PaddedCols, yStride = rows + 2, total = offsets[^1];
        float[] x = Fp64.RandomVector(rng, total * cols);
        var xPadded = new float[total * xStride];
        for (int r = 0; r < total; r++)
        {
            x.AsSpan(r * cols, cols).CopyTo(xPadded.AsSpan(r * xStride));
        }

        var yHost = new float[total * yStride];
        Array.Fill(yHost, float.NaN);
        using var dx = accelerator.Allocate1D(xPadded);
        using var dy = accelerator.Allocate1D(yHost);
        using var dOffsets = accelerator.Allocate1D(offsets);

        fixture.Backend.GroupedLinearOnDevice(stack, dOffsets.View, dx.View, xStride, dy.View, yStride);
        accelerator.Synchronize();
        dy.View.CopyToCPU(yHost);

        Assert.Equal((3, 2), (stack.Experts, stack.Slots));
        foreach (var (first, count, w) in new[] { (0, 3, w0), (5, 17, w2) })
        {
            double[] expected = Fp64.Linear(w, rows, cols, x[(first * cols)..((first + count) * cols)], count);
            float[] actual = [.. Enumerable.Range(first, count).SelectMany(r => yHost.AsSpan(r * yStride, rows).ToArray())];
            Assert.True(Metrics.RelativeError(actual, expected) <= 1e-5, $"seed {seed}");
        }

        for (int r = 0; r < total; r++)
        {
            int firstUnwritten = r is >= 3 and < 5 ? 0 : rows;
            Assert.All(yHost[((r * yStride) + firstUnwritten)..((r + 1) * yStride)], v => Assert.True(float.IsNaN(v)));
        }
    }

    [Fact]
    public void Linear_on_device_rejects_an_input_view_that_is_not_16_byte_aligned()
    {
        using var weights = new TestWeights();
        weights.Add("w", DType.BF16, 2, 16, new Random(4));
        DeviceLinear w = fixture.Backend.PrepareOnDevice(weights.Get("w"));
        using MemoryBuffer1D<float, Stride1D.Dense> x = fixture.Device.Accelerator.Allocate1D<float>(20);
        using MemoryBuffer1D<float, Stride1D.Dense> y = fixture.Device.Accelerator.Allocate1D<float>(2);
        ArrayView<float> all = x.View;

        var ex = Assert.Throws<ArgumentException>(() => fixture.Backend.LinearOnDevice(w, all.SubView(1, 16), 16, 1, y.View, 2));
        Assert.Contains("16-byte boundary", ex.Message, StringComparison.Ordinal);
    }

    private static TheoryData<DType, int, int, int> Cases((int Rows, int Cols, int Tokens)[] shapes)
    {
        // The kernels see two formats: BF16 words, and fp32 words (F32, F16 and F64 checkpoints alike).
        var data = new TheoryData<DType, int, int, int>();
        foreach (var (rows, cols, tokens) in shapes)
        {
            data.Add(DType.BF16, rows, cols, tokens);
            data.Add(DType.F32, rows, cols, tokens);
        }

        data.Add(DType.F16, shapes[0].Rows, shapes[0].Cols, shapes[0].Tokens);
        data.Add(DType.F64, shapes[1].Rows, shapes[1].Cols, shapes[1].Tokens);
        return data;
    }

    /// <summary>
    /// Runs <see cref="IlgpuBackend.LinearOnDevice"/> with y prefilled with NaN and a row stride wider than the
    /// output: every output element must be written and match fp64, every pad column must stay NaN.
    /// </summary>
    private static void CheckOnDevice(IlgpuBackend backend, DType dtype, int rows, int cols, int tokens)
    {
        int seed = Fp64.NewSeed();
        var rng = new Random(seed);
        using var weights = new TestWeights();
        float[] w = weights.Add("w", dtype, rows, cols, rng);
        float[] x = Fp64.RandomVector(rng, tokens * cols);
        DeviceLinear prepared = backend.PrepareOnDevice(weights.Get("w"));
        int xStride = prepared.PaddedCols;
        int yStride = rows + 3;
        var xPadded = new float[tokens * xStride];
        for (int t = 0; t < tokens; t++)
        {
            x.AsSpan(t * cols, cols).CopyTo(xPadded.AsSpan(t * xStride));
        }

        var yHost = new float[tokens * yStride];
        Array.Fill(yHost, float.NaN);
        Accelerator accelerator = backend.Accelerator;
        using MemoryBuffer1D<float, Stride1D.Dense> dx = accelerator.Allocate1D(xPadded);
        using MemoryBuffer1D<float, Stride1D.Dense> dy = accelerator.Allocate1D(yHost);

        backend.LinearOnDevice(prepared, dx.View, xStride, tokens, dy.View, yStride);
        accelerator.Synchronize();
        dy.View.CopyToCPU(yHost);

        double[] expected = Fp64.Linear(w, rows, cols, x, tokens);
        var actual = new float[tokens * rows];
        for (int t = 0; t < tokens; t++)
        {
            yHost.AsSpan(t * yStride, rows).CopyTo(actual.AsSpan(t * rows));
            for (int o = rows; o < yStride; o++)
            {
                Assert.True(float.IsNaN(yHost[(t * yStride) + o]), $"pad column {o} of token {t} was written");
            }
        }

        double error = Metrics.RelativeError(actual, expected);
        Assert.True(error <= 1e-5, $"relative error {error:E2} (seed {seed})");
    }
}
