using System.Buffers.Binary;
using System.Text;
using MoECluster.Model.Checkpoints;

namespace MoECluster.Model.Tests.Checkpoints;

/// <summary>Hand-written safetensors bytes, for corrupt-file tests.</summary>
internal static class RawSafetensors
{
    /// <summary>Writes the 8-byte length of <paramref name="headerJson"/>, the header, then <paramref name="data"/>.</summary>
    public static string Write(string path, string headerJson, byte[]? data = null) =>
        WriteBytes(path, Encoding.UTF8.GetBytes(headerJson), data);

    public static string WriteBytes(string path, byte[] header, byte[]? data = null, ulong? declaredHeaderLength = null)
    {
        using var stream = new FileStream(path, FileMode.Create, FileAccess.Write);
        Span<byte> prefix = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(prefix, declaredHeaderLength ?? (ulong)header.Length);
        stream.Write(prefix);
        stream.Write(header);
        stream.Write(data ?? []);
        return path;
    }

    /// <summary>Asserts that opening <paramref name="path"/> fails with a message naming the file and <paramref name="problem"/>.</summary>
    public static SafetensorsFormatException AssertRejected(string path, string problem)
    {
        var ex = Assert.Throws<SafetensorsFormatException>(() => SafetensorsFile.Open(path).Dispose());
        Assert.Contains(path, ex.Message, StringComparison.Ordinal);
        Assert.Contains(problem, ex.Message, StringComparison.OrdinalIgnoreCase);
        Assert.Equal(path, ex.FilePath);
        return ex;
    }
}

/// <summary>Encodes float values as little-endian bytes of a float dtype.</summary>
internal static class FloatEncoding
{
    public static byte[] Encode(DType dtype, ReadOnlySpan<float> values)
    {
        int size = DTypes.SizeOf(dtype);
        byte[] bytes = new byte[values.Length * size];
        for (int i = 0; i < values.Length; i++)
        {
            Span<byte> slot = bytes.AsSpan(i * size, size);
            switch (dtype)
            {
                case DType.F32:
                    BinaryPrimitives.WriteSingleLittleEndian(slot, values[i]);
                    break;
                case DType.F64:
                    BinaryPrimitives.WriteDoubleLittleEndian(slot, values[i]);
                    break;
                case DType.F16:
                    BinaryPrimitives.WriteHalfLittleEndian(slot, (Half)values[i]);
                    break;
                case DType.BF16:
                    uint bits = BitConverter.SingleToUInt32Bits(values[i]);
                    Assert.Equal(0u, bits & 0xFFFF); // test values must be exact in bfloat16
                    BinaryPrimitives.WriteUInt16LittleEndian(slot, (ushort)(bits >> 16));
                    break;
                default:
                    throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "not a float dtype");
            }
        }

        return bytes;
    }
}
