using ILGPU;
using ILGPU.Runtime;
using MoECluster.Kernels.Gpu.Kernels;

namespace MoECluster.Kernels.Gpu;

/// <summary>
/// The permutation of a batch's slots by expert, as <see cref="Model.Dispatch.TokenPermutation"/> computes it:
/// <see cref="Slots"/>[<see cref="Offsets"/>[e] .. <see cref="Offsets"/>[e+1]) are expert e's slots in slot order;
/// <see cref="Positions"/>[s] is slot s's index in that order (-1 for a slot naming no expert in range).
/// </summary>
public sealed record PermutationResult(int[] Offsets, int[] Slots, int[] Positions);

/// <summary>Device views of one permutation (valid until the next use of the buffers that hold them).</summary>
public readonly record struct DevicePermutation(ArrayView<int> Offsets, ArrayView<int> Slots, ArrayView<int> Positions);

/// <summary>Runs <see cref="PermutationKernels"/>: mark, count, scan (ILGPU.Algorithms), scatter.</summary>
public sealed class IlgpuPermutation : IDisposable
{
    private const int ScanGroupSize = 256;

    private readonly Accelerator _accelerator;
    private readonly Lock _gate = new();
    private readonly Action<Index1D, ArrayView<int>, ArrayView<int>, int, int> _mark;
    private readonly Action<Index1D, ArrayView<int>, ArrayView<int>, int, int> _count;
    private readonly Action<KernelConfig, ArrayView<int>, ArrayView<int>, int> _scan;
    private readonly Action<Index1D, ArrayView<int>, ArrayView<int>, ArrayView<int>, ArrayView<int>, int, int> _scatter;
    private readonly Action<Index1D, ArrayView<int>, int> _fill;
    private readonly DeviceScratch<int> _slotExperts;
    private readonly DeviceScratch<int> _marks;
    private readonly DeviceScratch<int> _counts;
    private readonly DeviceScratch<int> _offsets;
    private readonly DeviceScratch<int> _slots;
    private readonly DeviceScratch<int> _positions;

    public IlgpuPermutation(Accelerator accelerator)
    {
        ArgumentNullException.ThrowIfNull(accelerator);
        _accelerator = accelerator;
        _mark = accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<int>, ArrayView<int>, int, int>(PermutationKernels.MarkSlotsKernel);
        _count = accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<int>, ArrayView<int>, int, int>(PermutationKernels.CountKernel);
        _scan = accelerator.LoadStreamKernel<ArrayView<int>, ArrayView<int>, int>(PermutationKernels.ExclusiveScanKernel);
        _scatter = accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<int>, ArrayView<int>, ArrayView<int>, ArrayView<int>, int, int>(
            PermutationKernels.ScatterSlotsKernel);
        _fill = accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<int>, int>(ElementwiseKernels.FillKernel);
        _slotExperts = new(accelerator);
        _marks = new(accelerator);
        _counts = new(accelerator);
        _offsets = new(accelerator);
        _slots = new(accelerator);
        _positions = new(accelerator);
    }

    /// <summary>Permutes a routing plan's slots (t·K + k → expert) on the device; the result comes back to the host.</summary>
    public PermutationResult Permute(ReadOnlySpan<int> slotExperts, int topK, int experts)
    {
        lock (_gate)
        {
            ArrayView<int> device = _slotExperts.View(slotExperts.Length);
            device.CopyFromCPU(slotExperts);
            DevicePermutation p = PermuteOnDevice(device, topK, experts);
            var result = new PermutationResult(new int[experts + 1], new int[slotExperts.Length], new int[slotExperts.Length]);
            _accelerator.DefaultStream.Synchronize();
            p.Offsets.CopyToCPU(result.Offsets.AsSpan());
            p.Slots.CopyToCPU(result.Slots.AsSpan());
            p.Positions.CopyToCPU(result.Positions.AsSpan());
            return result;
        }
    }

    /// <summary>
    /// Enqueues the permutation of device slot experts [rows · topK]. Each row must name an expert at most once
    /// (top-K routing guarantees it). The views returned live in this instance's buffers until its next call.
    /// </summary>
    public DevicePermutation PermuteOnDevice(ArrayView<int> slotExperts, int topK, int experts)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(topK, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(experts, 1);
        int slotCount = checked((int)slotExperts.Length);
        if (slotCount % topK != 0)
        {
            throw new ArgumentException($"{slotCount} slots is not a whole number of rows of {topK}", nameof(slotExperts));
        }

        int rows = slotCount / topK;
        ArrayView<int> marks = _marks.Zeroed((long)rows * experts);
        ArrayView<int> counts = _counts.View(experts);
        ArrayView<int> offsets = _offsets.View(experts + 1);
        ArrayView<int> slots = _slots.View(slotCount);
        ArrayView<int> positions = _positions.View(slotCount);
        if (slotCount > 0)
        {
            _fill(slotCount, positions, -1);
            _mark(slotCount, slotExperts, marks, topK, experts);
        }

        _count(experts, marks, counts, rows, experts);
        _scan(new KernelConfig(1, Math.Min(ScanGroupSize, _accelerator.MaxNumThreadsPerGroup)), counts, offsets, experts);
        _scatter(experts, marks, offsets, slots, positions, rows, experts);
        return new DevicePermutation(offsets, slots, positions);
    }

    public void Dispose()
    {
        _accelerator.Synchronize();
        _slotExperts.Dispose();
        _marks.Dispose();
        _counts.Dispose();
        _offsets.Dispose();
        _slots.Dispose();
        _positions.Dispose();
    }
}
