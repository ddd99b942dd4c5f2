using ILGPU;
using ILGPU.Runtime;
using MoECluster.Kernels.Gpu.Kernels;
using MoECluster.Model.Experts;

namespace MoECluster.Kernels.Gpu;

/// <summary>
/// A group of routed experts run on the device: permute the batch's slots by expert, gather each slot's row,
/// up projection → relu² → down projection for all experts at once (<see cref="StackedLinear"/> weights, one
/// <see cref="LinearKernels.GroupedGemvKernel{TFormat}"/> launch each, reading the per-expert row ranges on the
/// device), then the weighted combine back to tokens. The device counterpart of <see cref="GroupedExperts"/>
/// followed by <see cref="WeightedSum"/>; nothing comes back to the host between the steps.
/// </summary>
public sealed class IlgpuExperts : IDisposable
{
    private readonly IlgpuBackend _backend;
    private readonly bool[] _held;
    private readonly StackedLinear _up;
    private readonly StackedLinear _down;
    private readonly IlgpuPermutation _permutation;
    private readonly Action<Index1D, ArrayView<float>, ArrayView<int>, ArrayView<float>, int, int, int> _gather;
    private readonly Action<Index1D, ArrayView<int>, ArrayView<int>, ArrayView<int>> _dropUnheld;
    private readonly Action<Index1D, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>, int, int, int> _combine;
    private readonly DeviceScratch<float> _z;
    private readonly DeviceScratch<int> _slotExperts;
    private readonly DeviceScratch<float> _slotWeights;
    private readonly DeviceScratch<float> _gathered;
    private readonly DeviceScratch<float> _hidden;
    private readonly DeviceScratch<float> _slotOutputs;
    private readonly DeviceScratch<float> _u;

    /// <param name="backend">The backend whose accelerator and kernels run the experts (the weights are uploaded to its accelerator, owned by this group).</param>
    /// <param name="experts">Expert weights indexed by expert id; null where this process does not hold the expert.</param>
    public IlgpuExperts(IlgpuBackend backend, IReadOnlyList<ExpertWeights?> experts, int width, int intermediate)
    {
        ArgumentNullException.ThrowIfNull(backend);
        ArgumentNullException.ThrowIfNull(experts);
        ArgumentOutOfRangeException.ThrowIfLessThan(width, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(intermediate, 1);
        ArgumentOutOfRangeException.ThrowIfZero(experts.Count);
        _backend = backend;
        Width = width;
        Intermediate = intermediate;
        _held = [.. experts.Select(e => e is not null)];
        for (int e = 0; e < experts.Count; e++)
        {
            if (experts[e] is { } w &&
                (w.Up.Rows != intermediate || w.Up.Cols != width || w.Down.Rows != width || w.Down.Cols != intermediate))
            {
                throw new ArgumentException(
                    $"expert {e}: up [{w.Up.Rows}, {w.Up.Cols}] and down [{w.Down.Rows}, {w.Down.Cols}] do not match width {width}, intermediate {intermediate}",
                    nameof(experts));
            }
        }

        Accelerator accelerator = backend.Accelerator;
        _up = new StackedLinear(accelerator, [.. experts.Select(e => e?.Up)]);
        try
        {
            _down = new StackedLinear(accelerator, [.. experts.Select(e => e?.Down)]);
        }
        catch
        {
            _up.Dispose();
            throw;
        }

        _permutation = new IlgpuPermutation(accelerator);
        _gather = accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<int>, ArrayView<float>, int, int, int>(
            ElementwiseKernels.GatherRowsKernel);
        _dropUnheld = accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<int>, ArrayView<int>, ArrayView<int>>(
            ElementwiseKernels.DropUnheldSlotsKernel);
        _combine = accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>, int, int, int>(
            ElementwiseKernels.CombineKernel);
        _z = new(accelerator);
        _slotExperts = new(accelerator);
        _slotWeights = new(accelerator);
        _gathered = new(accelerator);
        _hidden = new(accelerator);
        _slotOutputs = new(accelerator);
        _u = new(accelerator);
    }

    public int Width { get; }

    public int Intermediate { get; }

    public int ExpertCount => _held.Length;

    /// <summary>Device bytes of the held experts' weights.</summary>
    public long WeightBytes => _up.PreparedBytes + _down.PreparedBytes;

    /// <summary>
    /// u[t] = Σ_k weights[t·K+k] · E_{experts[t·K+k]}(z[t]) for z [tokens, width] and a routing plan's
    /// [tokens, K] experts and weights; u is [tokens, width].
    /// </summary>
    public void Compute(ReadOnlySpan<float> z, int tokens, ReadOnlySpan<int> experts, ReadOnlySpan<float> weights, int topK, Span<float> u)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(tokens);
        ArgumentOutOfRangeException.ThrowIfLessThan(topK, 1);
        int slots = checked(tokens * topK);
        if (z.Length != (long)tokens * Width || u.Length != (long)tokens * Width)
        {
            throw new ArgumentException($"z and u must be {tokens} x {Width} (got {z.Length} and {u.Length} values)", nameof(z));
        }

        if (experts.Length != slots || weights.Length != slots)
        {
            throw new ArgumentException($"experts and weights must have {tokens} x {topK} entries (got {experts.Length} and {weights.Length})", nameof(experts));
        }

        CheckRouting(experts, topK);
        if (tokens == 0)
        {
            return;
        }

        lock (_backend.Gate)
        {
            ArrayView<float> dz = _backend.UploadPadded(_z, z, tokens, Width);
            ArrayView<int> de = _slotExperts.View(slots);
            de.CopyFromCPU(experts);
            ArrayView<float> dw = _slotWeights.View(slots);
            dw.CopyFromCPU(weights);
            ArrayView<float> du = _u.View(u.Length);
            Run(dz, tokens, de, dw, topK, du);
            _backend.Download(du, u);
        }
    }

    /// <summary>
    /// Enqueues the expert group on device data: z [tokens, PadColumns(width)] (pad columns zero, 16-byte
    /// aligned), experts and weights [tokens · topK] (a row names an expert at most once), u [tokens, width].
    /// Slots naming an expert this group does not hold add nothing (an expert shard's partial sum); the
    /// host-span <see cref="Compute"/> rejects them instead, as <see cref="GroupedExperts"/> does.
    /// </summary>
    public void ComputeOnDevice(ArrayView<float> z, int tokens, ArrayView<int> experts, ArrayView<float> weights, int topK, ArrayView<float> u)
    {
        lock (_backend.Gate)
        {
            Run(z, tokens, experts, weights, topK, u);
        }
    }

    public void Dispose()
    {
        _backend.Accelerator.Synchronize();
        _up.Dispose();
        _down.Dispose();
        _permutation.Dispose();
        _z.Dispose();
        _slotExperts.Dispose();
        _slotWeights.Dispose();
        _gathered.Dispose();
        _hidden.Dispose();
        _slotOutputs.Dispose();
        _u.Dispose();
    }

    private void Run(ArrayView<float> z, int tokens, ArrayView<int> experts, ArrayView<float> weights, int topK, ArrayView<float> u)
    {
        if (tokens == 0)
        {
            return;
        }

        int slots = checked(tokens * topK);
        int wp = DeviceLinear.PadColumns(Width);
        int mp = DeviceLinear.PadColumns(Intermediate);
        DevicePermutation p = _permutation.PermuteOnDevice(experts, topK, ExpertCount);
        _dropUnheld(slots, experts, _up.SlotOf, p.Positions);
        ArrayView<float> gathered = _gathered.View((long)slots * wp);
        ArrayView<float> hidden = _hidden.Zeroed((long)slots * mp);
        ArrayView<float> outputs = _slotOutputs.View((long)slots * wp);
        _gather(checked(slots * wp), z, p.Slots, gathered, wp, topK, slots);
        _backend.GroupedLinearOnDevice(_up, p.Offsets, gathered, wp, hidden, mp);
        _backend.Relu2OnDevice(hidden);
        _backend.GroupedLinearOnDevice(_down, p.Offsets, hidden, mp, outputs, wp);
        _combine(checked(tokens * Width), outputs, p.Positions, weights, u, Width, wp, topK);
    }

    /// <summary>Every expert in range and held, and no row naming one twice (the permutation's precondition).</summary>
    private void CheckRouting(ReadOnlySpan<int> experts, int topK)
    {
        for (int s = 0; s < experts.Length; s++)
        {
            int e = experts[s];
            if ((uint)e >= (uint)ExpertCount)
            {
                throw new ArgumentException($"slot {s} names expert {e}, outside 0..{ExpertCount - 1}", nameof(experts));
            }

            if (!_held[e])
            {
                throw new InvalidOperationException($"expert {e} is routed to but not held by this process");
            }

            for (int j = s - (s % topK); j < s; j++)
            {
                if (experts[j] == e)
                {
                    throw new ArgumentException($"row {s / topK} names expert {e} twice", nameof(experts));
                }
            }
        }
    }

}
