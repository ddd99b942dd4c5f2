using ILGPU;
using ILGPU.Runtime;
using MoECluster.Kernels.Gpu.Kernels;
using MoECluster.Model.Compute;
using MoECluster.Model.Numerics;

namespace MoECluster.Kernels.Gpu;

/// <summary>
/// The ILGPU backend: weights uploaded once (<see cref="DeviceLinear"/>), Linears run as device kernels —
/// <see cref="LinearKernels.GemvKernel{TFormat}"/> up to <see cref="MaxGemvTokens"/> tokens (memory-bound decode:
/// each weight byte streamed once), <see cref="LinearKernels.TiledKernel{TFormat}"/> above. The host-span entry
/// points copy x in and y out around the kernel; <see cref="LinearOnDevice"/> chains on device views.
/// Calls are serialised on one lock (one accelerator stream); the backend owns the weights it prepared.
/// </summary>
public sealed class IlgpuBackend : IComputeBackend, IDisposable
{
    private readonly Lock _gate = new();
    private readonly List<DeviceLinear> _prepared = [];
    private readonly LinearLaunch _gemvBf16;
    private readonly LinearLaunch _gemvF32;
    private readonly LinearLaunch _tiledBf16;
    private readonly LinearLaunch _tiledF32;
    private readonly GroupedLaunch _groupedBf16;
    private readonly GroupedLaunch _groupedF32;
    private readonly Action<Index1D, ArrayView<float>> _relu2;
    private readonly DeviceScratch<float> _x;
    private readonly DeviceScratch<float> _hidden;
    private readonly DeviceScratch<float> _y;
    private float[] _staging = [];
    private bool _disposed;

    /// <param name="accelerator">The device (not owned: the caller disposes it after the backend).</param>
    /// <param name="gemvWarpsPerGroup">Warps (= output rows) per GEMV group; clipped to the device's group limit.</param>
    /// <param name="maxGemvTokens">Batches up to this many tokens use the GEMV kernel, larger ones the tiled kernel.</param>
    public IlgpuBackend(Accelerator accelerator, int gemvWarpsPerGroup = 8, int maxGemvTokens = LinearKernels.GemvTokenBlock)
    {
        ArgumentNullException.ThrowIfNull(accelerator);
        ArgumentOutOfRangeException.ThrowIfLessThan(gemvWarpsPerGroup, 1);
        ArgumentOutOfRangeException.ThrowIfNegative(maxGemvTokens);
        if (accelerator.MaxNumThreadsPerGroup < LinearKernels.TiledGroupSize || accelerator.WarpSize != 32)
        {
            throw new NotSupportedException(
                $"{accelerator.Name} allows {accelerator.MaxNumThreadsPerGroup} threads a group in warps of {accelerator.WarpSize}; " +
                $"the kernels need {LinearKernels.TiledGroupSize} and warps of 32");
        }

        Accelerator = accelerator;
        GemvWarpsPerGroup = Math.Min(gemvWarpsPerGroup, accelerator.MaxNumThreadsPerGroup / accelerator.WarpSize);
        MaxGemvTokens = maxGemvTokens;
        _gemvBf16 = new(accelerator.LoadStreamKernel<ArrayView<ulong>, ArrayView<float>, ArrayView<float>, int, int, int, int, int>(
            LinearKernels.GemvKernel<Bf16Format>));
        _gemvF32 = new(accelerator.LoadStreamKernel<ArrayView<ulong>, ArrayView<float>, ArrayView<float>, int, int, int, int, int>(
            LinearKernels.GemvKernel<F32Format>));
        _tiledBf16 = new(accelerator.LoadStreamKernel<ArrayView<ulong>, ArrayView<float>, ArrayView<float>, int, int, int, int, int>(
            LinearKernels.TiledKernel<Bf16Format>));
        _tiledF32 = new(accelerator.LoadStreamKernel<ArrayView<ulong>, ArrayView<float>, ArrayView<float>, int, int, int, int, int>(
            LinearKernels.TiledKernel<F32Format>));
        _groupedBf16 = new(accelerator.LoadStreamKernel<ArrayView<ulong>, ArrayView<int>, ArrayView<int>, ArrayView<float>, ArrayView<float>, int, int, int, int>(
            LinearKernels.GroupedGemvKernel<Bf16Format>));
        _groupedF32 = new(accelerator.LoadStreamKernel<ArrayView<ulong>, ArrayView<int>, ArrayView<int>, ArrayView<float>, ArrayView<float>, int, int, int, int>(
            LinearKernels.GroupedGemvKernel<F32Format>));
        _relu2 = accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>>(ElementwiseKernels.Relu2Kernel);
        _x = new(accelerator);
        _hidden = new(accelerator);
        _y = new(accelerator);
    }

    public string Name => "ilgpu";

    public Accelerator Accelerator { get; }

    public int GemvWarpsPerGroup { get; }

    public int MaxGemvTokens { get; }

    /// <summary>Bytes of device memory the prepared weights hold.</summary>
    public long PreparedBytes
    {
        get
        {
            lock (_gate)
            {
                return _prepared.Sum(p => p.PreparedBytes);
            }
        }
    }

    /// <summary>The lock every device operation of this backend (and its helpers) runs under.</summary>
    internal Lock Gate => _gate;

    public IPreparedLinear Prepare(WeightMatrix weight) => PrepareOnDevice(weight);

    /// <summary>Uploads <paramref name="weight"/>; the backend disposes it with itself.</summary>
    public DeviceLinear PrepareOnDevice(WeightMatrix weight)
    {
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            DeviceLinear prepared = DeviceLinear.Upload(Accelerator, weight);
            _prepared.Add(prepared);
            return prepared;
        }
    }

    public void Linear(IPreparedLinear weight, ReadOnlySpan<float> x, int tokens, Span<float> y)
    {
        DeviceLinear w = Device(weight);
        CheckShapes(w, x.Length, tokens, y.Length, w.Rows);
        if (tokens == 0)
        {
            return;
        }

        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            ArrayView<float> dx = UploadPadded(_x, x, tokens, w.Cols);
            ArrayView<float> dy = _y.View((long)tokens * w.Rows);
            LinearOnDevice(w, dx, w.PaddedCols, tokens, dy, w.Rows);
            Download(dy, y);
        }
    }

    /// <summary>The expert FFN with its hidden activations kept on the device: down(relu(up(z))²).</summary>
    public void ExpertFfn(IPreparedLinear up, IPreparedLinear down, ReadOnlySpan<float> z, int tokens, Span<float> output)
    {
        DeviceLinear u = Device(up);
        DeviceLinear d = Device(down);
        if (d.Cols != u.Rows)
        {
            throw new ArgumentException($"{d.Name} takes {d.Cols} inputs but {u.Name} gives {u.Rows}", nameof(down));
        }

        CheckShapes(u, z.Length, tokens, output.Length, d.Rows);
        if (tokens == 0)
        {
            return;
        }

        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            ArrayView<float> dz = UploadPadded(_x, z, tokens, u.Cols);
            int hiddenStride = d.PaddedCols;
            ArrayView<float> hidden = _hidden.Zeroed((long)tokens * hiddenStride);
            LinearOnDevice(u, dz, u.PaddedCols, tokens, hidden, hiddenStride);
            Relu2OnDevice(hidden);
            ArrayView<float> dy = _y.View((long)tokens * d.Rows);
            LinearOnDevice(d, hidden, hiddenStride, tokens, dy, d.Rows);
            Download(dy, output);
        }
    }

    /// <summary>
    /// Enqueues y[t·yStride + o] = Σ_i W[o, i] · x[t·xStride + i] on the default stream. x's columns
    /// Cols..PaddedCols-1 must be zero (or finite: they meet zero weights), x must start 16-byte aligned with
    /// xStride a multiple of 4 (the kernels load x as 4-float vectors); y's other columns are not written.
    /// </summary>
    public void LinearOnDevice(DeviceLinear weight, ArrayView<float> x, int xStride, int tokens, ArrayView<float> y, int yStride)
    {
        ArgumentNullException.ThrowIfNull(weight);
        ArgumentOutOfRangeException.ThrowIfLessThan(xStride, weight.PaddedCols);
        ArgumentOutOfRangeException.ThrowIfLessThan(yStride, weight.Rows);
        ArgumentOutOfRangeException.ThrowIfNegative(tokens);
        if (tokens == 0 || weight.Rows == 0)
        {
            return;
        }

        if (x.Length < ((long)(tokens - 1) * xStride) + weight.PaddedCols || y.Length < ((long)(tokens - 1) * yStride) + weight.Rows)
        {
            throw new ArgumentException($"device views too short for {tokens} tokens of {weight}");
        }

        long xOffset = ((IContiguousArrayView)x).IndexInBytes;
        if (xOffset % 16 != 0 || xStride % 4 != 0)
        {
            throw new ArgumentException($"x must start on a 16-byte boundary with a stride of whole 4-float vectors (offset {xOffset} bytes, stride {xStride})", nameof(x));
        }

        bool bf16 = weight.Format == DeviceWeightFormat.BFloat16;
        if (tokens <= MaxGemvTokens)
        {
            int rowsPerGroup = GemvWarpsPerGroup;
            var config = new KernelConfig(
                new Index2D(Blocks(weight.Rows, rowsPerGroup), Blocks(tokens, LinearKernels.GemvTokenBlock)),
                new Index2D(rowsPerGroup * Accelerator.WarpSize, 1));
            (bf16 ? _gemvBf16 : _gemvF32).Launch(config, weight, x, xStride, tokens, y, yStride);
        }
        else
        {
            var config = new KernelConfig(
                new Index2D(Blocks(weight.Rows, LinearKernels.TileRows), Blocks(tokens, LinearKernels.TileTokens)),
                new Index2D(LinearKernels.TiledGroupSize, 1));
            (bf16 ? _tiledBf16 : _tiledF32).Launch(config, weight, x, xStride, tokens, y, yStride);
        }
    }

    /// <summary>
    /// Enqueues one projection for a whole expert group: expert e's rows x[offsets[e] .. offsets[e+1]) (stride
    /// xStride, pads zero, 16-byte aligned) times its weight in <paramref name="weights"/>, written to the same
    /// rows of y (stride yStride). Experts not held are skipped (their rows of y are not written).
    /// <paramref name="offsets"/> has weights.Experts + 1 entries and stays on the device: no synchronisation.
    /// </summary>
    public void GroupedLinearOnDevice(StackedLinear weights, ArrayView<int> offsets, ArrayView<float> x, int xStride, ArrayView<float> y, int yStride)
    {
        ArgumentNullException.ThrowIfNull(weights);
        ArgumentOutOfRangeException.ThrowIfLessThan(xStride, weights.PaddedCols);
        ArgumentOutOfRangeException.ThrowIfLessThan(yStride, weights.Rows);
        ArgumentOutOfRangeException.ThrowIfLessThan(offsets.Length, weights.Experts + 1L);
        long xOffset = ((IContiguousArrayView)x).IndexInBytes;
        if (xOffset % 16 != 0 || xStride % 4 != 0)
        {
            throw new ArgumentException($"x must start on a 16-byte boundary with a stride of whole 4-float vectors (offset {xOffset} bytes, stride {xStride})", nameof(x));
        }

        if (weights.Rows == 0 || weights.Experts == 0 || x.Length == 0)
        {
            return;
        }

        int rowsPerGroup = GemvWarpsPerGroup;
        var config = new KernelConfig(
            new Index2D(Blocks(weights.Rows, rowsPerGroup), weights.Experts),
            new Index2D(rowsPerGroup * Accelerator.WarpSize, 1));
        (weights.Format == DeviceWeightFormat.BFloat16 ? _groupedBf16 : _groupedF32).Launch(config, weights, offsets, x, xStride, y, yStride);
    }

    /// <summary>Enqueues relu(v)² over <paramref name="values"/>.</summary>
    public void Relu2OnDevice(ArrayView<float> values)
    {
        if (values.Length > 0)
        {
            _relu2(checked((int)values.Length), values);
        }
    }

    public void Dispose()
    {
        lock (_gate)
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
            Accelerator.Synchronize();
            foreach (DeviceLinear p in _prepared)
            {
                p.Dispose();
            }

            _prepared.Clear();
            _x.Dispose();
            _hidden.Dispose();
            _y.Dispose();
        }
    }

    internal static int Blocks(long count, int per) => checked((int)((count + per - 1) / per));

    internal static DeviceLinear Device(IPreparedLinear weight) =>
        weight as DeviceLinear ?? throw new ArgumentException(
            $"{weight?.GetType().Name ?? "null"} was not prepared by the ilgpu backend", nameof(weight));

    /// <summary>Copies [tokens, cols] host rows into a device view of stride PadColumns(cols), pads zero.</summary>
    internal ArrayView<float> UploadPadded(DeviceScratch<float> scratch, ReadOnlySpan<float> x, int tokens, int cols)
    {
        int stride = DeviceLinear.PadColumns(cols);
        long length = (long)tokens * stride;
        ArrayView<float> view = scratch.View(length);
        if (stride == cols)
        {
            view.CopyFromCPU(x[..checked((int)length)]);
            return view;
        }

        if (_staging.Length < length)
        {
            _staging = new float[length];
        }

        Span<float> staging = _staging.AsSpan(0, checked((int)length));
        for (int t = 0; t < tokens; t++)
        {
            x.Slice(t * cols, cols).CopyTo(staging.Slice(t * stride, cols));
            staging.Slice((t * stride) + cols, stride - cols).Clear();
        }

        view.CopyFromCPU((ReadOnlySpan<float>)staging);
        return view;
    }

    internal void Download<T>(ArrayView<T> view, Span<T> destination)
        where T : unmanaged
    {
        Accelerator.DefaultStream.Synchronize();
        view.CopyToCPU(destination[..checked((int)view.Length)]);
        Accelerator.DefaultStream.Synchronize();
    }

    private static void CheckShapes(DeviceLinear w, int xLength, int tokens, int yLength, int outCols)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(tokens);
        if (xLength != (long)tokens * w.Cols)
        {
            throw new ArgumentException($"input has {xLength} values, expected {tokens} x {w.Cols} for {w.Name}", nameof(xLength));
        }

        if (yLength != (long)tokens * outCols)
        {
            throw new ArgumentException($"output has {yLength} values, expected {tokens} x {outCols}", nameof(yLength));
        }
    }

    /// <summary>The loaded grouped GEMV kernel and how to launch it.</summary>
    private sealed class GroupedLaunch(
        Action<KernelConfig, ArrayView<ulong>, ArrayView<int>, ArrayView<int>, ArrayView<float>, ArrayView<float>, int, int, int, int> kernel)
    {
        public void Launch(KernelConfig config, StackedLinear w, ArrayView<int> offsets, ArrayView<float> x, int xStride, ArrayView<float> y, int yStride) =>
            kernel(config, w.Data, w.SlotOf, offsets, x, y, w.Rows, w.ChunksPerRow, xStride, yStride);
    }

    /// <summary>A loaded Linear kernel and how to launch it.</summary>
    private sealed class LinearLaunch(Action<KernelConfig, ArrayView<ulong>, ArrayView<float>, ArrayView<float>, int, int, int, int, int> kernel)
    {
        public void Launch(KernelConfig config, DeviceLinear w, ArrayView<float> x, int xStride, int tokens, ArrayView<float> y, int yStride) =>
            kernel(config, w.Data, x, y, w.Rows, w.ChunksPerRow, xStride, tokens, yStride);
    }
}
