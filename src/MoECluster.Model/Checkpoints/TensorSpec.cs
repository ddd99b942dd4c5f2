using System.Globalization;

namespace MoECluster.Model.Checkpoints;

/// <summary>A tensor to be written: name, dtype and shape.</summary>
public sealed record TensorSpec(string Name, DType DType, IReadOnlyList<long> Shape)
{
    /// <summary>Product of the shape (1 for a scalar with shape []).</summary>
    public long ElementCount => ShapeMath.ElementCount(Shape);

    /// <summary>Number of bytes the tensor's data occupies: element count times the dtype size.</summary>
    public long ByteLength => checked(ElementCount * DTypes.SizeOf(DType));

    public override string ToString() => string.Create(
        CultureInfo.InvariantCulture,
        $"{Name}: {DTypes.ToSafetensorsName(DType)}[{string.Join(", ", Shape)}]");
}
