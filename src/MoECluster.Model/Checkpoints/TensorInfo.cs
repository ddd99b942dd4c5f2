using System.Globalization;

namespace MoECluster.Model.Checkpoints;

/// <summary>
/// One tensor of a safetensors file: its dtype, shape and byte range relative to the start of the data buffer.
/// </summary>
public sealed record TensorInfo(string Name, DType DType, IReadOnlyList<long> Shape, long Begin, long End)
{
    /// <summary>Product of the shape (1 for a scalar with shape []). Throws <see cref="OverflowException"/> if it overflows.</summary>
    public long ElementCount => ShapeMath.ElementCount(Shape);

    /// <summary>Number of bytes of the tensor's data.</summary>
    public long ByteLength => End - Begin;

    public override string ToString() => string.Create(
        CultureInfo.InvariantCulture,
        $"{Name}: {DTypes.ToSafetensorsName(DType)}[{string.Join(", ", Shape)}] bytes [{Begin}, {End})");
}
