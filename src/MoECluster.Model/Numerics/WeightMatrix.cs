using MoECluster.Model.Checkpoints;

namespace MoECluster.Model.Numerics;

/// <summary>
/// A Linear weight [rows = out, cols = in] read in place from a memory-mapped checkpoint, in its stored dtype
/// (BF16, F16, F32 or F64). Rows are widened to fp32 on demand; nothing is copied at load, so the weights
/// are held once (by the page cache), not twice.
/// </summary>
public sealed unsafe class WeightMatrix
{
    private readonly byte* _data;
    private readonly int _rowBytes;

    public WeightMatrix(TensorRef tensor, int rows, int cols)
    {
        if (!DTypes.IsFloatingPoint(tensor.DType))
        {
            throw new InvalidDataException($"{tensor.Info.Name} has dtype {DTypes.ToSafetensorsName(tensor.DType)}; weights must be F32, BF16, F16 or F64");
        }

        if (tensor.Shape.Count != 2 || tensor.Shape[0] != rows || tensor.Shape[1] != cols)
        {
            throw new InvalidDataException($"{tensor.Info.Name} has shape {TensorShapes.Format(tensor.Shape)}, expected [{rows}, {cols}]");
        }

        Name = tensor.Info.Name;
        Rows = rows;
        Cols = cols;
        DType = tensor.DType;
        _rowBytes = checked(cols * DTypes.SizeOf(tensor.DType));
        _data = tensor.Pointer;
        Tensor = tensor;
    }

    public string Name { get; }

    public int Rows { get; }

    public int Cols { get; }

    public DType DType { get; }

    /// <summary>The checkpoint tensor (keeps its file, and so the mapping, reachable).</summary>
    public TensorRef Tensor { get; }

    public long ByteLength => (long)Rows * _rowBytes;

    /// <summary>The stored bytes of one row.</summary>
    public ReadOnlySpan<byte> RowBytes(int row)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(row);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(row, Rows);
        return new ReadOnlySpan<byte>(_data + ((long)row * _rowBytes), _rowBytes);
    }

    /// <summary>The first (row, column) that holds a NaN or an infinity, or null when every weight is finite.</summary>
    public (int Row, int Col)? FindNonFinite()
    {
        for (int r = 0; r < Rows; r++)
        {
            long c = FloatRange.FirstNonFinite(DType, RowBytes(r));
            if (c >= 0)
            {
                return (r, (int)c);
            }
        }

        return null;
    }

    /// <summary>
    /// Drops this weight's mapped pages from the process's resident set (Linux; a no-op elsewhere): for a backend
    /// that has packed its own copy, so the checkpoint's bytes are not held twice. The pages stay in the page
    /// cache; reading the weight again afterwards is correct and maps them back in.
    /// </summary>
    public void ReleaseResidentPages() => MappedPages.Release(_data, ByteLength);

    /// <summary>Widens row <paramref name="row"/> to fp32 into <paramref name="destination"/> (length Cols).</summary>
    public void ReadRow(int row, Span<float> destination) =>
        ElementConversions.ToSingle(DType, RowBytes(row), destination[..Cols]);
}
