using MessagePack;

namespace MoECluster.Wire;

/// <summary>
/// Router → shard: the distinct tokens routed to one expert shard, once each, with their (expert, weight) pairs
/// for that shard. Build with <see cref="WireFormat.BuildRequest"/>; receive with <see cref="WireFormat.DecodeRequest"/>.
/// </summary>
[MessagePackObject]
public sealed class ShardRequest
{
    [Key(0)]
    public int Version { get; set; } = WireFormat.Version;

    [Key(1)]
    public string Model { get; set; } = "";

    [Key(2)]
    public int Layer { get; set; }

    /// <summary>
    /// Always 0, never read. Keys 3 and 4 carried version 1's contiguous range (FirstExpert, ExpertCount); version 2
    /// writes ints there (not nil) so that a version-1 silo still deserializes a version-2 message and refuses it by its
    /// Version, and reads whatever ints a version-1 message has there and refuses it by its Version. Do not reuse them.
    /// </summary>
    [Key(3)]
    public int ReservedKey3 { get; set; }

    /// <summary>Always 0, never read (see <see cref="ReservedKey3"/>).</summary>
    [Key(4)]
    public int ReservedKey4 { get; set; }

    /// <summary>The token activations, [tokens, width].</summary>
    [Key(5)]
    public ActivationBlock Rows { get; set; } = new();

    /// <summary>One byte per row: how many (expert, weight) pairs that row has (1..255).</summary>
    [Key(6)]
    public byte[] PairCounts { get; set; } = [];

    /// <summary>uint16 little-endian global expert ids, ΣPairCounts of them, row by row.</summary>
    [Key(7)]
    public byte[] Experts { get; set; } = [];

    /// <summary>float32 little-endian combine weights, one per expert id.</summary>
    [Key(8)]
    public byte[] Weights { get; set; } = [];

    /// <summary>The dtype the shard should answer in.</summary>
    [Key(9)]
    public WireDType ResponseDType { get; set; }

    [Key(10)]
    public long RequestId { get; set; }

    /// <summary>
    /// The experts of the shard the router believes it addresses: uint16 little-endian global expert ids, strictly
    /// ascending, at least one. Every pair's expert is one of them. Read with <see cref="WireFormat.ReadShardExperts"/>.
    /// </summary>
    [Key(11)]
    public byte[] ShardExperts { get; set; } = [];

    /// <summary>Total (expert, weight) pairs (what <see cref="WireFormat.ReadPairs"/> returns).</summary>
    [IgnoreMember]
    public int PairTotal => (Experts?.Length ?? 0) / 2;
}

/// <summary>Shard → router: Σ_i w_i·E_i(z) per requested row, in the request's row order.</summary>
[MessagePackObject]
public sealed class ShardResponse
{
    [Key(0)]
    public int Version { get; set; } = WireFormat.Version;

    /// <summary>[tokens, width] weighted expert outputs, same row order as the request.</summary>
    [Key(1)]
    public ActivationBlock Partials { get; set; } = new();

    /// <summary>The silo that computed it (for per-silo-pair byte accounting).</summary>
    [Key(2)]
    public string Silo { get; set; } = "";

    [Key(3)]
    public long RequestId { get; set; }

    [Key(4)]
    public long ComputeMicroseconds { get; set; }
}
