using System.Buffers.Binary;
using MoECluster.Model.Dispatch;

namespace MoECluster.Wire.Tests;

/// <summary>
/// A shard is a set of experts (<see cref="ShardRequest.ShardExperts"/>): uint16 little-endian ids, strictly
/// ascending, at least one, each below MaxExperts; every pair's expert is one of them.
/// </summary>
public sealed class ShardExpertSetTests
{
    private static readonly WireLimits Limits = new();

    private static WireFormatException Refuse(ShardRequest request, WireLimits? limits = null) =>
        Assert.Throws<WireFormatException>(() => WireFormat.DecodeRequest(WireFormat.Serialize(request), limits ?? Limits));

    private static void AssertMentions(Exception ex, params string[] parts)
    {
        foreach (string part in parts)
        {
            Assert.True(ex.Message.Contains(part, StringComparison.Ordinal), $"'{ex.Message}' does not mention '{part}'");
        }
    }

    private static byte[] Ids(params int[] ids)
    {
        var bytes = new byte[ids.Length * 2];
        for (int i = 0; i < ids.Length; i++)
        {
            BinaryPrimitives.WriteUInt16LittleEndian(bytes.AsSpan(i * 2), (ushort)ids[i]);
        }

        return bytes;
    }

    /// <summary>A valid request for the shard {3, 17, 40}: rows (3, 40), (17), (40, 17, 3).</summary>
    private static ShardRequest SetRequest() => WireFormat.BuildRequest(
        "m", 2, [3, 17, 40], new float[3 * 4], 4, WireDType.F32,
        new RoutedPairs([0, 2, 3, 6], [3, 40, 17, 40, 17, 3], [0.5f, 0.5f, 1f, 0.25f, 0.25f, 0.5f]), WireDType.F32, 7);

    [Fact]
    public void A_non_contiguous_expert_set_round_trips()
    {
        ShardRequest received = WireFormat.DecodeRequest(WireFormat.Serialize(SetRequest()), Limits);
        Assert.Equal(Ids(3, 17, 40), received.ShardExperts);
        Assert.Equal([3, 17, 40], WireFormat.ReadShardExperts(received));
        Assert.Equal([3, 40, 17, 40, 17, 3], WireFormat.ReadPairs(received).Experts);
    }

    [Fact]
    public void Random_requests_over_a_sparse_set_round_trip()
    {
        var samples = new WireSamples();
        int[] shard = [0, 5, 63, 64, 127, 1000, 4096, 65534];
        (ShardRequest sent, _, RoutedPairs pairs) = samples.Request(10, 8, WireDType.BF16, shard: shard);
        ShardRequest received = WireFormat.DecodeRequest(WireFormat.Serialize(sent), Limits);
        Assert.Equal(shard, WireFormat.ReadShardExperts(received));
        Assert.Equal(pairs.Experts, WireFormat.ReadPairs(received).Experts);
    }

    [Fact]
    public void Empty_expert_set_is_refused()
    {
        ShardRequest request = SetRequest();
        request.ShardExperts = [];
        AssertMentions(Refuse(request), "ShardRequest.ShardExperts is missing (empty)", "1..65535 uint16", "strictly ascending");
    }

    [Fact]
    public void Nil_expert_set_is_refused()
    {
        ShardRequest request = SetRequest();
        request.ShardExperts = null!;
        AssertMentions(Refuse(request), "ShardRequest.ShardExperts is missing (nil)");
    }

    [Fact]
    public void Unsorted_expert_set_is_refused_naming_the_index()
    {
        ShardRequest request = SetRequest();
        request.ShardExperts = Ids(3, 40, 17);
        AssertMentions(Refuse(request), "ShardRequest.ShardExperts[2]: expert 17 follows 40", "strictly ascending");
    }

    [Fact]
    public void Duplicate_in_the_expert_set_is_refused_naming_the_index()
    {
        ShardRequest request = SetRequest();
        request.ShardExperts = Ids(3, 17, 17, 40);
        AssertMentions(Refuse(request), "ShardRequest.ShardExperts[2]: duplicate expert 17", "strictly ascending");
    }

    [Fact]
    public void Expert_set_id_at_or_above_MaxExperts_is_refused_naming_the_index()
    {
        ShardRequest request = SetRequest();
        AssertMentions(Refuse(request, Limits with { MaxExperts = 40 }), "ShardRequest.ShardExperts[2]: expert 40 is not below MaxExperts (40)");

        request.ShardExperts = Ids(3, 17, 40, 65535);   // the default MaxExperts is 65535
        AssertMentions(Refuse(request), "ShardRequest.ShardExperts[3]: expert 65535 is not below MaxExperts (65535)");
    }

    [Fact]
    public void Expert_set_of_more_ids_than_MaxExperts_is_refused()
    {
        ShardRequest request = SetRequest();
        AssertMentions(Refuse(request, Limits with { MaxExperts = 2 }), "ShardRequest.ShardExperts: 3 ids, more than MaxExperts (2)");
    }

    [Fact]
    public void Odd_byte_length_expert_set_is_refused()
    {
        ShardRequest request = SetRequest();
        request.ShardExperts = [.. request.ShardExperts, 0x01];
        AssertMentions(Refuse(request), "ShardRequest.ShardExperts: 7 bytes is not a whole number of uint16 ids");

        var e = Assert.Throws<WireFormatException>(() => WireFormat.ReadShardExperts(request));
        AssertMentions(e, "ShardRequest.ShardExperts: 7 bytes");
    }

    [Fact]
    public void Pair_expert_inside_the_sets_span_but_not_in_the_set_is_refused()
    {
        // The shard {3, 40}: 17 lies between its ends (a version-1 range 3..40 would have held it) but is not one of its experts.
        var request = WireFormat.BuildRequest(
            "m", 2, [3, 40], new float[2 * 4], 4, WireDType.F32, new RoutedPairs([0, 2, 3], [3, 40, 40], [0.5f, 0.5f, 1f]), WireDType.F32, 7);
        BinaryPrimitives.WriteUInt16LittleEndian(request.Experts.AsSpan(2 * 2), 17);
        AssertMentions(
            Refuse(request),
            "ShardRequest.Experts[2] (row 1): expert 17 is not one of this shard's experts (ShardExperts: 2 ids: 3, 40).");

        ArgumentException built = Assert.Throws<ArgumentException>(() => WireFormat.BuildRequest(
            "m", 2, [3, 40], new float[4], 4, WireDType.F32, new RoutedPairs([0, 1], [17], [1f]), WireDType.F32, 7));
        AssertMentions(built, "expert 17 is not one of this shard's experts");
    }

    [Fact]
    public void A_refusal_lists_a_large_set_by_its_runs_and_stops_after_eight()
    {
        int[] shard = [.. Enumerable.Range(0, 20).Select(i => i * 3), 100, 101, 102, 103];
        (ShardRequest request, _, _) = new WireSamples().Request(2, 4, WireDType.F32, shard: shard);
        BinaryPrimitives.WriteUInt16LittleEndian(request.Experts, 1);
        AssertMentions(Refuse(request), "expert 1 is not one of this shard's experts (ShardExperts: 24 ids: 0, 3, 6, 9, 12, 15, 18, 21, ...).");

        request.ShardExperts = Ids(0, 2, 3, 4, 100, 101);   // the first pair (expert 1) is checked first
        AssertMentions(Refuse(request), "(ShardExperts: 6 ids: 0, 2..4, 100, 101).");
    }
}
