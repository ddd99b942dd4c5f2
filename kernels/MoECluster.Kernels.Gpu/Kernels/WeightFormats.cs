using ILGPU;

namespace MoECluster.Kernels.Gpu.Kernels;

/// <summary>
/// How a prepared weight is laid out on the device. Rows are padded to <see cref="DeviceLinear.ColumnAlignment"/>
/// columns with zeros and stored as 64-bit words, so a chunk of four consecutive columns is one aligned 8-byte
/// load (BF16) or two (F32), and a chunk of eight one 16-byte load (BF16) or two (F32). Kernels are generic over
/// the format; the format is a stateless struct, so the call compiles to straight-line loads and bit shifts.
/// </summary>
public interface IWeightFormat
{
    /// <summary>Widens chunk <paramref name="chunk"/> (columns 4·chunk .. 4·chunk+3 of the flattened rows) to fp32.</summary>
    void Load4(ArrayView<ulong> data, long chunk, out float w0, out float w1, out float w2, out float w3);

    /// <summary>
    /// Widens eight-column chunk <paramref name="chunk8"/> (columns 8·chunk8 .. 8·chunk8+7) with 16-byte vector
    /// loads (one for BF16, two for fp32).
    /// </summary>
    void Load8(
        ArrayView<ULong2> data, long chunk8, out float w0, out float w1, out float w2, out float w3, out float w4, out float w5, out float w6, out float w7);
}

/// <summary>Two 64-bit words, loaded as one 16-byte vector.</summary>
public readonly record struct ULong2(ulong Lo, ulong Hi);

/// <summary>bfloat16 bits, four per word (little-endian: column 4q in the low 16 bits). Widening is exact: bits &lt;&lt; 16.</summary>
public readonly struct Bf16Format : IWeightFormat
{
    public void Load4(ArrayView<ulong> data, long chunk, out float w0, out float w1, out float w2, out float w3)
    {
        ulong bits = data[chunk];
        uint lo = (uint)bits;
        uint hi = (uint)(bits >> 32);
        w0 = Interop.IntAsFloat(lo << 16);
        w1 = Interop.IntAsFloat(lo & 0xFFFF_0000u);
        w2 = Interop.IntAsFloat(hi << 16);
        w3 = Interop.IntAsFloat(hi & 0xFFFF_0000u);
    }

    public void Load8(
        ArrayView<ULong2> data, long chunk8, out float w0, out float w1, out float w2, out float w3, out float w4, out float w5, out float w6, out float w7)
    {
        ULong2 v = data[chunk8];
        Unpack(v.Lo, out w0, out w1, out w2, out w3);
        Unpack(v.Hi, out w4, out w5, out w6, out w7);
    }

    private static void Unpack(ulong bits, out float w0, out float w1, out float w2, out float w3)
    {
        uint lo = (uint)bits;
        uint hi = (uint)(bits >> 32);
        w0 = Interop.IntAsFloat(lo << 16);
        w1 = Interop.IntAsFloat(lo & 0xFFFF_0000u);
        w2 = Interop.IntAsFloat(hi << 16);
        w3 = Interop.IntAsFloat(hi & 0xFFFF_0000u);
    }
}

/// <summary>fp32 values, two per word.</summary>
public readonly struct F32Format : IWeightFormat
{
    public void Load4(ArrayView<ulong> data, long chunk, out float w0, out float w1, out float w2, out float w3)
    {
        ulong a = data[2 * chunk];
        ulong b = data[(2 * chunk) + 1];
        w0 = Interop.IntAsFloat((uint)a);
        w1 = Interop.IntAsFloat((uint)(a >> 32));
        w2 = Interop.IntAsFloat((uint)b);
        w3 = Interop.IntAsFloat((uint)(b >> 32));
    }

    public void Load8(
        ArrayView<ULong2> data, long chunk8, out float w0, out float w1, out float w2, out float w3, out float w4, out float w5, out float w6, out float w7)
    {
        ULong2 a = data[2 * chunk8];
        ULong2 b = data[(2 * chunk8) + 1];
        w0 = Interop.IntAsFloat((uint)a.Lo);
        w1 = Interop.IntAsFloat((uint)(a.Lo >> 32));
        w2 = Interop.IntAsFloat((uint)a.Hi);
        w3 = Interop.IntAsFloat((uint)(a.Hi >> 32));
        w4 = Interop.IntAsFloat((uint)b.Lo);
        w5 = Interop.IntAsFloat((uint)(b.Lo >> 32));
        w6 = Interop.IntAsFloat((uint)b.Hi);
        w7 = Interop.IntAsFloat((uint)(b.Hi >> 32));
    }
}
