using MessagePack;

namespace MoECluster.Wire.Tests;

/// <summary>
/// A ShardRequest as wire version 1 laid it out: the shard a contiguous range at keys 3 and 4 (which version 2
/// reserves), no key 11. Test-only: what a silo still running version 1 sends.
/// </summary>
[MessagePackObject]
public sealed class ShardRequestVersion1
{
    [Key(0)]
    public int Version { get; set; } = 1;

    [Key(1)]
    public string Model { get; set; } = "";

    [Key(2)]
    public int Layer { get; set; }

    [Key(3)]
    public int FirstExpert { get; set; }

    [Key(4)]
    public int ExpertCount { get; set; }

    [Key(5)]
    public ActivationBlock Rows { get; set; } = new();

    [Key(6)]
    public byte[] PairCounts { get; set; } = [];

    [Key(7)]
    public byte[] Experts { get; set; } = [];

    [Key(8)]
    public byte[] Weights { get; set; } = [];

    [Key(9)]
    public WireDType ResponseDType { get; set; }

    [Key(10)]
    public long RequestId { get; set; }
}

/// <summary>Silos of different wire versions refuse each other's messages by version, naming both.</summary>
public sealed class WireVersionTests
{
    private static readonly WireLimits Limits = new();

    /// <summary>A valid version-1 request: one row of 4 fp32 values, experts 16 and 17 of the shard 16..31.</summary>
    private static ShardRequestVersion1 Version1Request() => new()
    {
        Model = WireSamples.Model,
        Layer = WireSamples.Layer,
        FirstExpert = 16,
        ExpertCount = 16,
        Rows = ActivationBlock.Encode([1f, 2f, 3f, 4f], 1, 4, WireDType.F32),
        PairCounts = [2],
        Experts = Convert.FromHexString("10001100"),
        Weights = Convert.FromHexString("0000003F0000003F"),   // 0.5f, 0.5f
        ResponseDType = WireDType.BF16,
        RequestId = 99,
    };

    [Fact]
    public void The_wire_version_is_2()
    {
        Assert.Equal(2, WireFormat.Version);
        Assert.Equal(2, new ShardRequest().Version);
        Assert.Equal(2, new ShardResponse().Version);
    }

    [Fact]
    public void A_version_1_request_is_refused_by_its_version_naming_both_versions()
    {
        byte[] bytes = MessagePackSerializer.Serialize(Version1Request(), WireFormat.Options);
        Assert.Equal(0x9b, bytes[0]);   // version 1's 11 keys

        WireFormatException e = Assert.Throws<WireFormatException>(() => WireFormat.DecodeRequest(bytes, Limits));
        Assert.Equal(
            "ShardRequest.Version: expected 2, got 1 (the sender speaks MoECluster wire version 1; every silo of a cluster must run the same version).",
            e.Message);
        Assert.Null(e.InnerException);   // not a MessagePack type error: the message deserialized, then its version was refused
    }

    [Fact]
    public void A_version_1_response_is_refused_by_its_version_naming_both_versions()
    {
        // ShardResponse's layout is the same in both versions; only its Version differs.
        var response = new WireSamples().Response(2, 8, WireDType.F32);
        response.Version = 1;
        WireFormatException e = Assert.Throws<WireFormatException>(
            () => WireFormat.DecodeResponse(WireFormat.Serialize(response), Limits, 2, 8));
        Assert.Equal(
            "ShardResponse.Version: expected 2, got 1 (the sender speaks MoECluster wire version 1; every silo of a cluster must run the same version).",
            e.Message);
    }

    [Fact]
    public void A_version_1_receiver_decodes_a_version_2_request_far_enough_to_refuse_it_by_its_version()
    {
        // The other direction: a version-1 silo reads keys 3 and 4 as ints; version 2 writes 0 there, so the version-1
        // decoder gets the message and its first check (Version == 1) refuses it, naming version 2.
        byte[] bytes = WireFormat.Serialize(new WireSamples().SmallRequest());
        var seen = WireFormat.Deserialize<ShardRequestVersion1>(bytes, Limits)!;
        Assert.Equal(2, seen.Version);
        Assert.Equal((0, 0), (seen.FirstExpert, seen.ExpertCount));
    }
}
