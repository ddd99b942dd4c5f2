using System.Buffers;
using System.Globalization;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using MoECluster.Model.Compute;
using MoECluster.Model.Numerics;

namespace MoECluster.Kernels.Cpu;

/// <summary>
/// A Linear weight W [rows = out, cols = in] packed once into fp32 panels for the managed SGEMM micro-kernel:
/// panel p holds outputs p·NR … p·NR + NR − 1, stored k-major (for each input k, NR consecutive weights
/// W[p·NR + j, k]), so a kernel step loads NR weights as whole vectors and any K range of a panel is contiguous.
/// The last panel is zero-padded to NR. The buffer is pinned and 64-byte aligned.
/// </summary>
public sealed unsafe class PackedMatrix : IPreparedLinear
{
    private const int AlignmentFloats = 16;

    /// <summary>Pinned (pinned object heap), so its address is fixed and can be read through pointers.</summary>
    private readonly float[] _buffer;
    private readonly int _offset;

    private PackedMatrix(int rows, int cols, KernelPath path)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(rows);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(cols);
        Rows = rows;
        Cols = cols;
        Path = path;
        PanelWidth = KernelPaths.PanelWidth(path);
        Panels = (rows + PanelWidth - 1) / PanelWidth;
        long length = (long)Panels * PanelWidth * cols;
        if (length + AlignmentFloats > Array.MaxLength)
        {
            throw new ArgumentException(string.Create(
                CultureInfo.InvariantCulture, $"A [{rows}, {cols}] weight is too large to pack into one buffer."));
        }

        _buffer = GC.AllocateUninitializedArray<float>((int)length + AlignmentFloats, pinned: true);
        nint address = (nint)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(_buffer));
        _offset = (int)((((address + 63) & ~(nint)63) - address) / sizeof(float));
    }

    /// <summary>Reads one weight row, widened to fp32, into a destination of length Cols.</summary>
    private delegate void RowReader(int row, Span<float> destination);

    /// <summary>Output features (W's rows, N).</summary>
    public int Rows { get; }

    /// <summary>Input features (W's columns, K).</summary>
    public int Cols { get; }

    /// <summary>Bytes of the packed copy (the checkpoint's mapping is not counted).</summary>
    public long PreparedBytes => (long)_buffer.Length * sizeof(float);

    /// <summary>The micro-kernel the panels are laid out for.</summary>
    internal KernelPath Path { get; }

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

    /// <summary>Packs a checkpoint weight (BF16, F16, F32 or F64; widened to fp32 while packing).</summary>
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

        var packed = new PackedMatrix(rows, cols, path);
        packed.Pack((row, destination) => w.AsSpan(row * cols, cols).CopyTo(destination));
        return packed;
    }

    internal static PackedMatrix FromWeight(WeightMatrix weight, KernelPath path)
    {
        var packed = new PackedMatrix(weight.Rows, weight.Cols, path);
        packed.Pack(weight.ReadRow);
        return packed;
    }

    /// <summary>Start of panel <paramref name="panel"/> (valid while this object is reachable).</summary>
    internal float* Panel(int panel) =>
        (float*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(_buffer)) + _offset + ((long)panel * PanelWidth * Cols);

    private void Pack(RowReader readRow)
    {
        int panels = Panels;
        if (panels == 1 || (long)Rows * Cols < 1 << 16)
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

    private void PackPanel(RowReader readRow, int panel, float[] rowBuffer)
    {
        int nr = PanelWidth;
        int cols = Cols;
        float* dst = Panel(panel);
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
}
