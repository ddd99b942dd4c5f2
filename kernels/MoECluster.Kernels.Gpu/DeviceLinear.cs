using System.Runtime.InteropServices;
using ILGPU;
using ILGPU.Runtime;
using MoECluster.Model.Checkpoints;
using MoECluster.Model.Compute;
using MoECluster.Model.Numerics;

namespace MoECluster.Kernels.Gpu;

/// <summary>How a weight is held on the device.</summary>
public enum DeviceWeightFormat
{
    /// <summary>bfloat16 bits as stored in the checkpoint (2 bytes a value): the weights stream at half the bytes of fp32.</summary>
    BFloat16,

    /// <summary>fp32: F32 checkpoints as stored, F16 widened exactly, F64 rounded once (the reference's own widening).</summary>
    Float32,
}

/// <summary>
/// A Linear weight uploaded once to device memory. BF16 checkpoints stay BF16 bits; F32/F16/F64 are held as
/// fp32 (not narrowed to BF16: the router's gate is usually F32, and narrowing it would change routing). Every
/// row is padded with zeros to a multiple of <see cref="ColumnAlignment"/> columns, so rows start 32-byte
/// aligned, the GEMV kernel's 16-column chunks never straddle rows, and the kernels need no column tails.
/// </summary>
public sealed class DeviceLinear : IPreparedLinear, IDisposable
{
    /// <summary>Rows (and activation rows) are padded to a multiple of this many columns.</summary>
    public const int ColumnAlignment = 16;

    private const long StagingBytes = 8 << 20;

    private readonly MemoryBuffer1D<ulong, Stride1D.Dense> _data;

    private DeviceLinear(string name, int rows, int cols, DeviceWeightFormat format, MemoryBuffer1D<ulong, Stride1D.Dense> data)
    {
        Name = name;
        Rows = rows;
        Cols = cols;
        Format = format;
        _data = data;
    }

    public string Name { get; }

    public int Rows { get; }

    public int Cols { get; }

    /// <summary>Columns per stored row (a multiple of <see cref="ColumnAlignment"/>); the pad is zero.</summary>
    public int PaddedCols => PadColumns(Cols);

    /// <summary>Four-column chunks per row, the kernels' unit of loading.</summary>
    public int ChunksPerRow => PaddedCols / 4;

    public DeviceWeightFormat Format { get; }

    public long PreparedBytes => _data.LengthInBytes;

    /// <summary>The rows as 64-bit words (four BF16 or two fp32 values each).</summary>
    public ArrayView<ulong> Data => _data.View;

    /// <summary>The device address of the first row (for cuBLAS).</summary>
    internal IntPtr DevicePointer => _data.NativePtr;

    /// <summary>Rounds a column count up to <see cref="ColumnAlignment"/>.</summary>
    public static int PadColumns(int cols) => checked(cols + ColumnAlignment - 1) / ColumnAlignment * ColumnAlignment;

    /// <summary>Uploads <paramref name="weight"/> (staged through a bounded host buffer, a block of rows at a time).</summary>
    public static DeviceLinear Upload(Accelerator accelerator, WeightMatrix weight)
    {
        ArgumentNullException.ThrowIfNull(accelerator);
        ArgumentNullException.ThrowIfNull(weight);
        DeviceWeightFormat format = FormatOf(weight);
        MemoryBuffer1D<ulong, Stride1D.Dense> data = accelerator.Allocate1D<ulong>(Math.Max(WordsOf(format, weight.Rows, weight.Cols), 1));
        try
        {
            CopyRows(weight, format, data.View);
            return new DeviceLinear(weight.Name, weight.Rows, weight.Cols, format, data);
        }
        catch
        {
            data.Dispose();
            throw;
        }
    }

    /// <summary>How <paramref name="weight"/> is held on the device: BF16 as BF16, everything else as fp32.</summary>
    internal static DeviceWeightFormat FormatOf(WeightMatrix weight) =>
        weight.DType == DType.BF16 ? DeviceWeightFormat.BFloat16 : DeviceWeightFormat.Float32;

    /// <summary>64-bit words of a [rows, cols] weight held as <paramref name="format"/>, rows padded.</summary>
    internal static long WordsOf(DeviceWeightFormat format, int rows, int cols) =>
        (long)rows * WordsPerRow(format, PadColumns(cols));

    /// <summary>Writes <paramref name="weight"/>'s rows, padded and converted, to <paramref name="destination"/>.</summary>
    internal static void CopyRows(WeightMatrix weight, DeviceWeightFormat format, ArrayView<ulong> destination)
    {
        int wordsPerRow = WordsPerRow(format, PadColumns(weight.Cols));
        int blockRows = (int)Math.Clamp(StagingBytes / 8 / wordsPerRow, 1, Math.Max(weight.Rows, 1));
        var staging = new ulong[(long)blockRows * wordsPerRow];
        for (int first = 0; first < weight.Rows; first += blockRows)
        {
            int count = Math.Min(blockRows, weight.Rows - first);
            Array.Clear(staging);
            for (int i = 0; i < count; i++)
            {
                Span<ulong> row = staging.AsSpan(i * wordsPerRow, wordsPerRow);
                if (format == DeviceWeightFormat.BFloat16)
                {
                    weight.RowBytes(first + i).CopyTo(MemoryMarshal.AsBytes(row));
                }
                else
                {
                    weight.ReadRow(first + i, MemoryMarshal.Cast<ulong, float>(row));
                }
            }

            destination.SubView((long)first * wordsPerRow, (long)count * wordsPerRow)
                .CopyFromCPU(new ReadOnlySpan<ulong>(staging, 0, count * wordsPerRow));
        }
    }

    private static int WordsPerRow(DeviceWeightFormat format, int paddedCols) =>
        format == DeviceWeightFormat.BFloat16 ? paddedCols / 4 : paddedCols / 2;

    public void Dispose() => _data.Dispose();

    public override string ToString() => $"{Name} [{Rows}, {Cols}] {Format} on device";
}
