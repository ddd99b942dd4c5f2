using System.Buffers;
using System.Globalization;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using MoECluster.Model.Checkpoints;
using MoECluster.Model.Compute;
using MoECluster.Model.Numerics;

namespace MoECluster.Kernels.Cpu;

/// <summary>
/// A Linear weight W [rows = out, cols = in] packed once into panels for the managed SGEMM micro-kernel:
/// panel p holds outputs p·NR … p·NR + NR − 1, stored k-major (for each input k, NR consecutive weights
/// W[p·NR + j, k]), so a kernel step loads NR weights as whole vectors and any K range of a panel is contiguous.
/// The last panel is zero-padded to NR. The buffer is pinned and 64-byte aligned (2 MiB-aligned, on huge pages, from 2 MiB up).
/// <para>
/// BF16 checkpoint weights stay BF16: their bits are copied into 16-bit panels (<see cref="PanelElement.BFloat16"/>,
/// outputs interleaved in pairs within a step) and the micro-kernel widens them to fp32 in registers, so the
/// packed copy is as large as the checkpoint's tensor, not twice it. F32, F16 and F64 weights are packed as fp32.
/// </para>
/// </summary>
public sealed unsafe class PackedMatrix : IPreparedLinear
{
    private const int AlignmentBytes = 64;

    /// <summary>
    /// Panels of at least one huge page (2 MiB) live in native memory on huge pages (<see cref="HugePageBuffer"/>): the
    /// kernels stream them end to end, and 4 KiB pages cost a TLB miss every 4 KiB. Smaller ones stay in a pinned array.
    /// </summary>
    private readonly HugePageBuffer? _native;

    /// <summary>float[] or ushort[], pinned (pinned object heap), so its address is fixed and can be read through pointers; empty with <see cref="_native"/>.</summary>
    private readonly Array _buffer;
    private readonly int _offsetBytes;

    private PackedMatrix(int rows, int cols, KernelPath path, PanelElement element)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(rows);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(cols);
        Rows = rows;
        Cols = cols;
        Path = path;
        Element = element;
        ElementBytes = element == PanelElement.BFloat16 ? sizeof(ushort) : sizeof(float);
        PanelWidth = KernelPaths.PanelWidth(path);
        Panels = (rows + PanelWidth - 1) / PanelWidth;
        long length = (long)Panels * PanelWidth * cols;
        int alignment = AlignmentBytes / ElementBytes;
        if (length + alignment > Array.MaxLength)
        {
            throw new ArgumentException(string.Create(
                CultureInfo.InvariantCulture, $"A [{rows}, {cols}] weight is too large to pack into one buffer."));
        }

        long bytes = length * ElementBytes;
        if (bytes >= HugePageBuffer.PageBytes)
        {
            _native = HugePageBuffer.Allocate(bytes);
            _buffer = Array.Empty<float>();
            PreparedBytes = bytes;
            return;
        }

        _buffer = element == PanelElement.BFloat16
            ? GC.AllocateUninitializedArray<ushort>((int)length + alignment, pinned: true)
            : GC.AllocateUninitializedArray<float>((int)length + alignment, pinned: true);
        nint address = (nint)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(_buffer));
        _offsetBytes = (int)(((address + AlignmentBytes - 1) & ~(nint)(AlignmentBytes - 1)) - address);
        PreparedBytes = (long)_buffer.Length * ElementBytes;
    }

    /// <summary>Reads one weight row, widened to fp32, into a destination of length Cols.</summary>
    private delegate void RowReader(int row, Span<float> destination);

    /// <summary>One weight row's bfloat16 bits (length Cols).</summary>
    private delegate ReadOnlySpan<ushort> BFloat16RowSource(int row);

    /// <summary>Output features (W's rows, N).</summary>
    public int Rows { get; }

    /// <summary>Input features (W's columns, K).</summary>
    public int Cols { get; }

    /// <summary>Bytes of the packed copy, alignment slack included (the checkpoint's mapping is not counted).</summary>
    public long PreparedBytes { get; }

    /// <summary>The micro-kernel the panels are laid out for.</summary>
    internal KernelPath Path { get; }

    /// <summary>What each packed weight is stored as.</summary>
    internal PanelElement Element { get; }

    /// <summary>Bytes per packed weight (4 for fp32 panels, 2 for bfloat16).</summary>
    internal int ElementBytes { get; }

    /// <summary>Outputs per panel (NR).</summary>
    internal int PanelWidth { get; }

    /// <summary>Number of panels, ⌈Rows / NR⌉.</summary>
    internal int Panels { get; }

    /// <summary>Packs a row-major fp32 W [rows, cols] for this machine's widest micro-kernel.</summary>
    public static PackedMatrix FromFloat32(float[] w, int rows, int cols)
    {
        ArgumentNullException.ThrowIfNull(w);
        return FromFloat32(w, rows, cols, KernelPaths.Best);
    }

    /// <summary>
    /// Packs a checkpoint weight: BF16 into bfloat16 panels (bits copied, no fp32 copy made); F16, F32 and F64
    /// widened to fp32 while packing.
    /// </summary>
    public static PackedMatrix FromWeight(WeightMatrix weight)
    {
        ArgumentNullException.ThrowIfNull(weight);
        return FromWeight(weight, KernelPaths.Best);
    }

    internal static PackedMatrix FromFloat32(float[] w, int rows, int cols, KernelPath path)
    {
        if (w.Length != (long)rows * cols)
        {
            throw new ArgumentException(string.Create(
                CultureInfo.InvariantCulture, $"The weight has {w.Length} values, expected {rows} x {cols}."), nameof(w));
        }

        var packed = new PackedMatrix(rows, cols, path, PanelElement.Float32);
        packed.Pack((row, destination) => w.AsSpan(row * cols, cols).CopyTo(destination));
        return packed;
    }

    /// <summary>Packs row-major bfloat16 bits W [rows, cols] into bfloat16 panels.</summary>
    internal static PackedMatrix FromBFloat16(ushort[] w, int rows, int cols, KernelPath path)
    {
        ArgumentNullException.ThrowIfNull(w);
        if (w.Length != (long)rows * cols)
        {
            throw new ArgumentException(string.Create(
                CultureInfo.InvariantCulture, $"The weight has {w.Length} values, expected {rows} x {cols}."), nameof(w));
        }

        var packed = new PackedMatrix(rows, cols, path, PanelElement.BFloat16);
        packed.Pack(row => w.AsSpan(row * cols, cols));
        return packed;
    }

    internal static PackedMatrix FromWeight(WeightMatrix weight, KernelPath path)
    {
        if (weight.DType == DType.BF16)
        {
            var bf16 = new PackedMatrix(weight.Rows, weight.Cols, path, PanelElement.BFloat16);
            bf16.Pack(row => MemoryMarshal.Cast<byte, ushort>(weight.RowBytes(row)));
            return bf16;
        }

        var packed = new PackedMatrix(weight.Rows, weight.Cols, path, PanelElement.Float32);
        packed.Pack(weight.ReadRow);
        return packed;
    }

    /// <summary>Start of panel <paramref name="panel"/> (valid while this object is reachable).</summary>
    internal byte* Panel(int panel) =>
        (_native is { } native ? native.Pointer : (byte*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(_buffer)) + _offsetBytes)
        + ((long)panel * PanelWidth * Cols * ElementBytes);

    /// <summary>Whether the panels are in native memory advised as huge pages (tests and diagnostics).</summary>
    internal bool OnHugePages => _native?.HugePagesAdvised == true;

    private void Pack(RowReader readRow)
    {
        int panels = Panels;
        if (!PackInParallel)
        {
            float[] row = ArrayPool<float>.Shared.Rent(Cols);
            for (int p = 0; p < panels; p++)
            {
                PackPanel(readRow, p, row);
            }

            ArrayPool<float>.Shared.Return(row);
            return;
        }

        Parallel.For(
            0,
            panels,
            () => ArrayPool<float>.Shared.Rent(Cols),
            (p, _, row) =>
            {
                PackPanel(readRow, p, row);
                return row;
            },
            row => ArrayPool<float>.Shared.Return(row));
    }

    private void Pack(BFloat16RowSource readRow)
    {
        if (!PackInParallel)
        {
            for (int p = 0; p < Panels; p++)
            {
                PackPanel(readRow, p);
            }

            return;
        }

        Parallel.For(0, Panels, p => PackPanel(readRow, p));
    }

    private bool PackInParallel => Panels > 1 && (long)Rows * Cols >= 1 << 16;

    private void PackPanel(RowReader readRow, int panel, float[] rowBuffer)
    {
        int nr = PanelWidth;
        int cols = Cols;
        float* dst = (float*)Panel(panel);
        int first = panel * nr;
        int count = Math.Min(nr, Rows - first);
        Span<float> row = rowBuffer.AsSpan(0, cols);
        for (int j = 0; j < count; j++)
        {
            readRow(first + j, row);
            float* d = dst + j;
            for (int k = 0; k < cols; k++)
            {
                d[(long)k * nr] = row[k];
            }
        }

        for (int j = count; j < nr; j++)
        {
            float* d = dst + j;
            for (int k = 0; k < cols; k++)
            {
                d[(long)k * nr] = 0f;
            }
        }
    }

    /// <summary>Copies a panel's bfloat16 bits, each output to its interleaved slot (<see cref="BFloat16Panels.Slot"/>).</summary>
    private void PackPanel(BFloat16RowSource readRow, int panel)
    {
        int nr = PanelWidth;
        int cols = Cols;
        int group = BFloat16Panels.Group(Path);
        ushort* dst = (ushort*)Panel(panel);
        int first = panel * nr;
        int count = Math.Min(nr, Rows - first);
        for (int j = 0; j < nr; j++)
        {
            ushort* d = dst + BFloat16Panels.Slot(j, group);
            if (j < count)
            {
                ReadOnlySpan<ushort> row = readRow(first + j);
                for (int k = 0; k < cols; k++)
                {
                    d[(long)k * nr] = row[k];
                }
            }
            else
            {
                for (int k = 0; k < cols; k++)
                {
                    d[(long)k * nr] = 0;
                }
            }
        }
    }
}
