using ILGPU;
using ILGPU.Runtime;
using MoECluster.Model.Numerics;

namespace MoECluster.Kernels.Gpu;

/// <summary>
/// Same-shaped Linear weights (one projection of every expert a process holds) in one device buffer,
/// [slots, rows, padded cols], with a map expert → slot (-1 where the expert is not held), so one
/// <see cref="Kernels.LinearKernels.GroupedGemvKernel{TFormat}"/> launch runs the projection for all experts.
/// Layout and formats as <see cref="DeviceLinear"/>; every held weight must have the same shape and dtype class.
/// </summary>
public sealed class StackedLinear : IDisposable
{
    private readonly MemoryBuffer1D<ulong, Stride1D.Dense> _data;
    private readonly MemoryBuffer1D<int, Stride1D.Dense> _slotOf;

    /// <param name="weights">Indexed by expert id; null where the expert is not held. At least one must be held.</param>
    public StackedLinear(Accelerator accelerator, IReadOnlyList<WeightMatrix?> weights)
    {
        ArgumentNullException.ThrowIfNull(accelerator);
        ArgumentNullException.ThrowIfNull(weights);
        WeightMatrix first = weights.FirstOrDefault(w => w is not null)
            ?? throw new ArgumentException("no weight is held", nameof(weights));
        Rows = first.Rows;
        Cols = first.Cols;
        Format = DeviceLinear.FormatOf(first);
        var slotOf = new int[weights.Count];
        int slots = 0;
        for (int e = 0; e < weights.Count; e++)
        {
            WeightMatrix? w = weights[e];
            slotOf[e] = w is null ? -1 : slots++;
            if (w is not null && (w.Rows != Rows || w.Cols != Cols || DeviceLinear.FormatOf(w) != Format))
            {
                throw new ArgumentException(
                    $"{w.Name} is [{w.Rows}, {w.Cols}] {w.DType}; the stack holds [{Rows}, {Cols}] {Format} weights", nameof(weights));
            }
        }

        Slots = slots;
        long words = DeviceLinear.WordsOf(Format, Rows, Cols);
        _data = accelerator.Allocate1D<ulong>(Math.Max(words * slots, 1));
        try
        {
            _slotOf = accelerator.Allocate1D(slotOf);
            ArrayView<ulong> all = _data.View;
            for (int e = 0; e < weights.Count; e++)
            {
                if (weights[e] is { } w)
                {
                    DeviceLinear.CopyRows(w, Format, all.SubView(slotOf[e] * words, words));
                }
            }
        }
        catch
        {
            _data.Dispose();
            _slotOf?.Dispose();
            throw;
        }
    }

    /// <summary>Experts indexed (held or not).</summary>
    public int Experts => (int)_slotOf.Length;

    /// <summary>Weights held.</summary>
    public int Slots { get; }

    public int Rows { get; }

    public int Cols { get; }

    public int PaddedCols => DeviceLinear.PadColumns(Cols);

    public int ChunksPerRow => PaddedCols / 4;

    public DeviceWeightFormat Format { get; }

    public long PreparedBytes => _data.LengthInBytes + _slotOf.LengthInBytes;

    public ArrayView<ulong> Data => _data.View;

    /// <summary>expert → slot, -1 where not held.</summary>
    public ArrayView<int> SlotOf => _slotOf.View;

    public void Dispose()
    {
        _data.Dispose();
        _slotOf.Dispose();
    }
}
