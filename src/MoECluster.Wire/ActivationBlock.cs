using MessagePack;

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
    /// Encodes <paramref name="values"/> (row-major, exactly rows*width of them) in <paramref name="dtype"/>
    /// with its <see cref="WireCodecs">codec</see> (fp32 is copied, bf16 and fp16 are rounded to nearest, ties to even).
    /// </summary>
    public static ActivationBlock Encode(ReadOnlySpan<float> values, int rows, int width, WireDType dtype)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(rows, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(width, 1);
        IWireCodec codec = WireCodecs.Get(dtype);
        long count = (long)rows * width;
        if (count != values.Length)
        {
            throw new ArgumentException($"Expected rows*width = {rows}*{width} = {count} values, got {values.Length}.", nameof(values));
        }

        long bytes = codec.PayloadBytes(rows, width);
        if (bytes > Array.MaxLength)
        {
            throw new ArgumentException($"{count} {codec.Name} elements need {bytes} bytes, more than one array can hold.", nameof(values));
        }

        var data = new byte[bytes];
        codec.Encode(values, rows, width, data);
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

        WireCodecs.Get(DType).Decode(Data, Rows, Width, destination);
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
        CheckedElementCount();
        return WireCodecs.Get(DType).FindNonFinite(Data, Rows, Width);
    }

    /// <summary>
    /// Rows*Width after checking that the block is self-consistent; throws <see cref="WireFormatException"/> otherwise.
    /// Limits and the Rows/Width >= 1 rule are the validator's business (<see cref="WireFormat"/>).
    /// </summary>
    internal int CheckedElementCount()
    {
        if (!WireCodecs.TryGet(DType, out IWireCodec? codec))
        {
            throw new WireFormatException($"ActivationBlock.DType: {WireCodecs.Describe(DType)} (expected {WireCodecs.IdList}).");
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

        long bytes = codec.PayloadBytes(Rows, Width);
        if (Data is null || Data.LongLength != bytes)
        {
            throw new WireFormatException(
                $"ActivationBlock.Data: expected {bytes} bytes ({Rows}x{Width} {codec.Name}), got {Data?.LongLength.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "nil"}.");
        }

        return (int)count;
    }
}
