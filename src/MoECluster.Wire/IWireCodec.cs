namespace MoECluster.Wire;

/// <summary>
/// One element type of an <see cref="ActivationBlock"/> on the wire: everything the rest of the system needs to know
/// about it — its id byte, its names, its payload size, its encoding, its non-finite check, its range and the parity
/// tolerance a forward over it must meet. Registered once in <see cref="WireCodecs"/>; nothing outside the Wire project
/// spells a wire type.
/// </summary>
public interface IWireCodec
{
    /// <summary>The byte sent on the wire (<see cref="ActivationBlock.DType"/>, <see cref="ShardRequest.ResponseDType"/>).</summary>
    WireDType Id { get; }

    /// <summary>The canonical name ("fp32", "bf16", "fp16"): CLI option values, HTTP <c>wire</c> field, traffic records.</summary>
    string Name { get; }

    /// <summary>Other names accepted when parsing (case-insensitive), besides <see cref="Name"/>.</summary>
    IReadOnlyList<string> Aliases { get; }

    /// <summary>
    /// Elements that share one scale: 1 for the element-wise IEEE-style types, 32 for OCP MX, 16 for NVFP4.
    /// </summary>
    int BlockSize { get; }

    /// <summary>
    /// The largest finite magnitude the type holds (element-wise types encode values beyond it as non-finite;
    /// block-scaled types hold every finite float32).
    /// </summary>
    double MaxMagnitude { get; }

    /// <summary>The representable range for error messages, e.g. "fp16 holds ±65504".</summary>
    string Range { get; }

    /// <summary>
    /// Relative L2 error a forward whose dispatch and combine cross this wire must meet against the fp32 in-process
    /// forward of the same layer (the cluster's parity checks: <c>run</c>'s sample traffic, <c>chaos</c>, the tests).
    /// </summary>
    double ParityTolerance { get; }

    /// <summary>
    /// Bytes of the encoded block of a [<paramref name="rows"/>, <paramref name="width"/>] matrix: per block, not per
    /// element, so block-scaled formats (an element byte plus one scale byte per 32) fit. Zero for an empty matrix.
    /// </summary>
    long PayloadBytes(long rows, long width);

    /// <summary>
    /// Encodes <paramref name="values"/> (row-major, rows·width of them) into <paramref name="destination"/>, which holds
    /// exactly <see cref="PayloadBytes"/> bytes. Little-endian; rounding is the codec's (nearest, ties to even).
    /// Element-wise types encode values beyond <see cref="MaxMagnitude"/> as non-finite elements; block-scaled types
    /// refuse an Inf or NaN with an <see cref="ArgumentException"/> naming its row and column.
    /// </summary>
    void Encode(ReadOnlySpan<float> values, int rows, int width, Span<byte> destination);

    /// <summary>Widens <paramref name="data"/> (exactly <see cref="PayloadBytes"/> bytes) into rows·width floats.</summary>
    void Decode(ReadOnlySpan<byte> data, int rows, int width, Span<float> destination);

    /// <summary>Row-major index of the first NaN or infinite element of <paramref name="data"/>, or -1 when all are finite.</summary>
    int FindNonFinite(ReadOnlySpan<byte> data, int rows, int width);
}
