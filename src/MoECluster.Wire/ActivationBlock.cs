using System.Buffers.Binary;
using System.Runtime.InteropServices;
using MessagePack;
using MoECluster.Model.Numerics;
using ModelDType = MoECluster.Model.Checkpoints.DType;

namespace MoECluster.Wire;

/// <summary>
/// A dense [<see cref="Rows"/>, <see cref="Width"/>] matrix encoded as raw little-endian elements of one dtype.
/// On the wire <see cref="Data"/> is a single MessagePack bin, never an array of numbers.
/// </summary>
[MessagePackObject]
public sealed class ActivationBlock
{
    [Key(0)]
    public WireDType DType { get; set; }

    [Key(1)]
    public int Rows { get; set; }

    [Key(2)]
    public int Width { get; set; }

    /// <summary>Rows*Width elements of <see cref="DType"/>, little-endian, row-major.</summary>
    [Key(3)]
    public byte[] Data { get; set; } = [];

    /// <summary>Bytes of the element block (what the activations cost on the wire, headers aside).</summary>
    [IgnoreMember]
    public long PayloadBytes => Data?.LongLength ?? 0;

    /// <summary>
    /// Encodes <paramref name="values"/> (row-major, exactly rows*width of them) in <paramref name="dtype"/>:
    /// fp32 is copied, bf16 and fp16 are rounded to nearest, ties to even.
    /// </summary>
    public static ActivationBlock Encode(ReadOnlySpan<float> values, int rows, int width, WireDType dtype)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(rows, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(width, 1);
        if (!WireDTypes.IsDefined(dtype))
        {
            throw new ArgumentOutOfRangeException(nameof(dtype), dtype, $"Unknown wire dtype {(byte)dtype}.");
        }

        long count = (long)rows * width;
        if (count != values.Length)
        {
            throw new ArgumentException($"Expected rows*width = {rows}*{width} = {count} values, got {values.Length}.", nameof(values));
        }

        long bytes = count * WireDTypes.SizeOf(dtype);
        if (bytes > Array.MaxLength)
        {
            throw new ArgumentException($"{count} {WireDTypes.Name(dtype)} elements need {bytes} bytes, more than one array can hold.", nameof(values));
        }

        var data = new byte[bytes];
        switch (dtype)
        {
            case WireDType.F32:
                if (BitConverter.IsLittleEndian)
                {
                    MemoryMarshal.AsBytes(values).CopyTo(data);
                }
                else
                {
                    for (int i = 0; i < values.Length; i++)
                    {
                        BinaryPrimitives.WriteSingleLittleEndian(data.AsSpan(i * 4), values[i]);
                    }
                }

                break;
            case WireDType.BF16:
                ElementConversions.SingleToBFloat16(values, MemoryMarshal.Cast<byte, ushort>(data.AsSpan()));
                ToLittleEndian(data);
                break;
            default:
                ElementConversions.SingleToHalf(values, MemoryMarshal.Cast<byte, ushort>(data.AsSpan()));
                ToLittleEndian(data);
                break;
        }

        return new ActivationBlock { DType = dtype, Rows = rows, Width = width, Data = data };
    }

    /// <summary>Widens the block to float32 into <paramref name="destination"/>, which must hold exactly Rows*Width values.</summary>
    /// <exception cref="WireFormatException">The block is inconsistent (undefined dtype, negative sizes, wrong data length).</exception>
    public void DecodeInto(Span<float> destination)
    {
        int count = CheckedElementCount();
        if (destination.Length != count)
        {
            throw new ArgumentException($"Destination holds {destination.Length} values; the block has {Rows}x{Width} = {count}.", nameof(destination));
        }

        ElementConversions.ToSingle(ToModelDType(DType), Data, destination);
    }

    /// <summary>The block widened to a new float32 array of Rows*Width values.</summary>
    public float[] Decode()
    {
        var values = new float[CheckedElementCount()];
        DecodeInto(values);
        return values;
    }

    /// <summary>Index of the first element that is NaN or infinite, or -1 when every element is finite.</summary>
    public int FindNonFinite()
    {
        int count = CheckedElementCount();
        ReadOnlySpan<byte> data = Data;
        switch (DType)
        {
            case WireDType.F32:
                for (int i = 0; i < count; i++)
                {
                    if ((BinaryPrimitives.ReadUInt32LittleEndian(data[(i * 4)..]) & 0x7F80_0000u) == 0x7F80_0000u)
                    {
                        return i;
                    }
                }

                break;
            default:
                // bf16: exponent bits 0x7F80; fp16: 0x7C00. All ones means infinity or NaN.
                ushort mask = DType == WireDType.BF16 ? (ushort)0x7F80 : (ushort)0x7C00;
                for (int i = 0; i < count; i++)
                {
                    if ((BinaryPrimitives.ReadUInt16LittleEndian(data[(i * 2)..]) & mask) == mask)
                    {
                        return i;
                    }
                }

                break;
        }

        return -1;
    }

    /// <summary>
    /// Rows*Width after checking that the block is self-consistent; throws <see cref="WireFormatException"/> otherwise.
    /// Limits and the Rows/Width >= 1 rule are the validator's business (<see cref="WireFormat"/>).
    /// </summary>
    internal int CheckedElementCount()
    {
        if (!WireDTypes.IsDefined(DType))
        {
            throw new WireFormatException($"ActivationBlock.DType: {WireDTypes.Describe(DType)} (expected 0=fp32, 1=bf16 or 2=fp16).");
        }

        if (Rows < 0 || Width < 0)
        {
            throw new WireFormatException($"ActivationBlock shape [{Rows}, {Width}] is negative.");
        }

        long count = (long)Rows * Width;
        if (count > Array.MaxLength)
        {
            throw new WireFormatException($"ActivationBlock: Rows*Width = {Rows}*{Width} = {count} overflows the largest decodable block ({Array.MaxLength} elements).");
        }

        long bytes = count * WireDTypes.SizeOf(DType);
        if (Data is null || Data.LongLength != bytes)
        {
            throw new WireFormatException(
                $"ActivationBlock.Data: expected {bytes} bytes ({Rows}x{Width} {WireDTypes.Name(DType)}), got {Data?.LongLength.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "nil"}.");
        }

        return (int)count;
    }

    private static ModelDType ToModelDType(WireDType dtype) => dtype switch
    {
        WireDType.F32 => ModelDType.F32,
        WireDType.BF16 => ModelDType.BF16,
        _ => ModelDType.F16,
    };

    private static void ToLittleEndian(byte[] data)
    {
        if (!BitConverter.IsLittleEndian)
        {
            Span<ushort> elements = MemoryMarshal.Cast<byte, ushort>(data.AsSpan());
            BinaryPrimitives.ReverseEndianness(elements, elements);
        }
    }
}
