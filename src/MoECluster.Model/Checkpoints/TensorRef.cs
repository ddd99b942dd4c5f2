using System.Globalization;
using MoECluster.Model.Numerics;

namespace MoECluster.Model.Checkpoints;

/// <summary>A tensor together with the open file that holds its data.</summary>
public readonly record struct TensorRef(SafetensorsFile File, TensorInfo Info)
{
    /// <summary>Elements converted per call to <see cref="ElementConversions.ToSingle"/>; keeps each span far below 2 GiB.</summary>
    private const int ChunkElements = 1 << 20;

    public DType DType => Info.DType;

    public IReadOnlyList<long> Shape => Info.Shape;

    public long ElementCount => Info.ElementCount;

    public long ByteLength => Info.ByteLength;

    /// <summary>Pointer to the tensor's data in the mapping; valid until the file is disposed.</summary>
    public unsafe byte* Pointer => File.GetPointer(Info);

    /// <summary>The tensor's raw bytes (throws if over <see cref="int.MaxValue"/> bytes).</summary>
    public ReadOnlySpan<byte> GetBytes() => File.GetBytes(Info);

    /// <summary>Reads the whole tensor as float32, converting from F32, BF16, F16 or F64.</summary>
    public float[] ReadAllAsFloat32()
    {
        EnsureFloatingPoint();
        long count = Info.ElementCount;
        if (count > Array.MaxLength)
        {
            throw new NotSupportedException(string.Create(
                CultureInfo.InvariantCulture,
                $"Tensor '{Info.Name}' in '{File.Path}' has {count} elements, more than one float array can hold."));
        }

        var result = new float[count];
        ReadAsFloat32(result);
        return result;
    }

    /// <summary>
    /// Reads the tensor as float32 into <paramref name="destination"/>, which must hold exactly
    /// <see cref="TensorInfo.ElementCount"/> elements.
    /// </summary>
    public unsafe void ReadAsFloat32(Span<float> destination)
    {
        EnsureFloatingPoint();
        long count = Info.ElementCount;
        if (destination.Length != count)
        {
            throw new ArgumentException(
                string.Create(
                    CultureInfo.InvariantCulture,
                    $"Destination has {destination.Length} elements, but tensor '{Info.Name}' has {count}."),
                nameof(destination));
        }

        int size = DTypes.SizeOf(Info.DType);
        byte* source = File.GetPointer(Info);
        for (int offset = 0; offset < destination.Length; offset += ChunkElements)
        {
            int length = Math.Min(ChunkElements, destination.Length - offset);
            var bytes = new ReadOnlySpan<byte>(source + ((long)offset * size), length * size);
            ElementConversions.ToSingle(Info.DType, bytes, destination.Slice(offset, length));
        }
    }

    public override string ToString() => $"{Info} in '{File?.Path}'";

    private void EnsureFloatingPoint()
    {
        if (!DTypes.IsFloatingPoint(Info.DType))
        {
            throw new NotSupportedException(
                $"Tensor '{Info.Name}' in '{File.Path}' has dtype {DTypes.ToSafetensorsName(Info.DType)}, which cannot be read as float32 (supported: F32, BF16, F16, F64).");
        }
    }
}
