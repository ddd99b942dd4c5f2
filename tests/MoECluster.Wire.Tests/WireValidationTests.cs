using System.Buffers.Binary;
using MoECluster.Model.Dispatch;

namespace MoECluster.Wire.Tests;

/// <summary>Each way an incoming message can break the contract, refused with a message that names it.</summary>
public sealed class WireValidationTests
{
    private static readonly WireLimits Limits = new();

    private static WireFormatException RefuseRequest(ShardRequest request, WireLimits? limits = null) =>
        RefuseRequest(WireFormat.Serialize(request), limits);

    private static WireFormatException RefuseRequest(byte[] bytes, WireLimits? limits = null) =>
        Assert.Throws<WireFormatException>(() => WireFormat.DecodeRequest(bytes, limits ?? Limits));

    private static void AssertMentions(Exception ex, params string[] parts)
    {
        foreach (string part in parts)
        {
            Assert.True(ex.Message.Contains(part, StringComparison.Ordinal), $"'{ex.Message}' does not mention '{part}'");
        }
    }

    private static ShardRequest Valid() => new WireSamples().SmallRequest();

    [Fact]
    public void Valid_request_is_accepted()
    {
        // The baseline each refusal below differs from by one field.
        ShardRequest request = Valid();
        Assert.Equal(request.RequestId, WireFormat.DecodeRequest(WireFormat.Serialize(request), Limits).RequestId);
    }

    [Fact]
    public void Wrong_version_is_refused()
    {
        ShardRequest request = Valid();
        request.Version = 3;
        AssertMentions(RefuseRequest(request), "ShardRequest.Version", "expected 2, got 3", "wire version 3", "every silo of a cluster must run the same version");
    }

    [Fact]
    public void Unknown_activation_dtype_is_refused()
    {
        ShardRequest request = Valid();
        request.Rows.DType = (WireDType)17;
        AssertMentions(RefuseRequest(request), "ShardRequest.Rows.DType", "undefined dtype 17");
    }

    [Fact]
    public void Unknown_response_dtype_is_refused()
    {
        ShardRequest request = Valid();
        request.ResponseDType = (WireDType)9;
        AssertMentions(RefuseRequest(request), "ShardRequest.ResponseDType", "undefined dtype 9");
    }

    [Fact]
    public void Activation_data_length_mismatch_is_refused()
    {
        ShardRequest request = Valid();   // 8 x 16 fp32: 512 bytes
        request.Rows.Data = request.Rows.Data[..^4];
        AssertMentions(RefuseRequest(request), "ShardRequest.Rows.Data", "expected 512 bytes", "got 508");
    }

    [Fact]
    public void Rows_times_width_overflow_is_refused()
    {
        // Each within the default limits; the product (2^36 elements) is not a block any message can carry.
        ShardRequest request = Valid();
        request.Rows.Rows = 1 << 20;
        request.Rows.Width = 1 << 16;
        AssertMentions(RefuseRequest(request), "ShardRequest.Rows", "Rows*Width = 1048576*65536", "overflows");
    }

    [Fact]
    public void Zero_rows_is_refused()
    {
        ShardRequest request = Valid();
        request.Rows = new ActivationBlock { DType = WireDType.F32, Rows = 0, Width = 16, Data = [] };
        request.PairCounts = [];
        request.Experts = [];
        request.Weights = [];
        AssertMentions(RefuseRequest(request), "ShardRequest.Rows.Rows", "expected 1..1048576, got 0");
    }

    [Fact]
    public void Width_over_the_limit_is_refused()
    {
        ShardRequest request = Valid();
        AssertMentions(RefuseRequest(request, Limits with { MaxWidth = 15 }), "ShardRequest.Rows.Width", "expected 1..15, got 16");
    }

    [Fact]
    public void Pair_count_of_zero_is_refused()
    {
        ShardRequest request = Valid();
        request.PairCounts[3] = 0;
        AssertMentions(RefuseRequest(request), "ShardRequest.PairCounts[3] = 0", "expected 1..255");
    }

    [Fact]
    public void Pair_count_over_the_limit_is_refused()
    {
        ShardRequest request = Valid();
        int over = request.PairCounts.Max();
        AssertMentions(RefuseRequest(request, Limits with { MaxPairsPerRow = over - 1 }), "ShardRequest.PairCounts[", $"expected 1..{over - 1}");
    }

    [Fact]
    public void Pair_counts_length_other_than_rows_is_refused()
    {
        ShardRequest request = Valid();
        request.PairCounts = [.. request.PairCounts, 1];
        AssertMentions(RefuseRequest(request), "ShardRequest.PairCounts", "expected 8 entries", "got 9");
    }

    [Fact]
    public void Experts_length_other_than_twice_the_pair_total_is_refused()
    {
        ShardRequest request = Valid();
        int total = request.PairTotal;
        request.Experts = request.Experts[..^1];
        AssertMentions(RefuseRequest(request), "ShardRequest.Experts", $"expected {2 * total} bytes", $"got {(2 * total) - 1}");
    }

    [Fact]
    public void Weights_length_other_than_four_times_the_pair_total_is_refused()
    {
        ShardRequest request = Valid();
        int total = request.PairTotal;
        request.Weights = [.. request.Weights, 0, 0, 0, 0];
        AssertMentions(RefuseRequest(request), "ShardRequest.Weights", $"expected {4 * total} bytes", $"got {(4 * total) + 4}");
    }

    [Theory]
    [InlineData(15)]   // just below the shard's experts 16..31
    [InlineData(32)]   // just above them
    [InlineData(65535)]
    public void Expert_outside_the_shard_set_is_refused_naming_the_id_and_the_set(int expert)
    {
        ShardRequest request = Valid();
        BinaryPrimitives.WriteUInt16LittleEndian(request.Experts.AsSpan(2 * 5), (ushort)expert);
        AssertMentions(RefuseRequest(request), "ShardRequest.Experts[5]", $"expert {expert}", "not one of this shard's experts", "16 ids: 16..31");
    }

    [Fact]
    public void Shard_expert_outside_the_expert_limit_is_refused()
    {
        ShardRequest request = Valid();   // the shard's experts are 16..31
        AssertMentions(RefuseRequest(request, Limits with { MaxExperts = 31 }), "ShardRequest.ShardExperts[15]", "expert 31", "MaxExperts (31)");
    }

    [Fact]
    public void Duplicate_expert_within_a_row_is_refused()
    {
        float[] rows = new float[3 * 4];
        ShardRequest request = WireFormat.BuildRequest(
            "m", 0, [.. Enumerable.Range(16, 16)], rows, 4, WireDType.F32, new RoutedPairs([0, 1, 3, 5], [16, 17, 18, 17, 19], [1f, 0.5f, 0.5f, 0.5f, 0.5f]), WireDType.F32, 1);
        BinaryPrimitives.WriteUInt16LittleEndian(request.Experts.AsSpan(2 * 4), 17);   // row 2 becomes (17, 17)
        AssertMentions(RefuseRequest(request), "duplicate expert 17 in row 2");
    }

    [Fact]
    public void Same_expert_in_different_rows_is_accepted()
    {
        float[] rows = new float[3 * 4];
        ShardRequest request = WireFormat.BuildRequest(
            "m", 0, [.. Enumerable.Range(16, 16)], rows, 4, WireDType.F32, new RoutedPairs([0, 1, 3, 5], [17, 17, 18, 18, 17], [1f, 0.5f, 0.5f, 0.5f, 0.5f]), WireDType.F32, 1);
        Assert.Equal(5, WireFormat.DecodeRequest(WireFormat.Serialize(request), Limits).PairTotal);
    }

    /// <summary>
    /// Regression (found by the decoder fuzzer, tests/MoECluster.Fuzz): the duplicate check allocated an int per expert
    /// of the claimed shard range, so a 44-byte version-1 request (FirstExpert 0, ExpertCount 65535, one row) made the
    /// receiver allocate 262 KB. The checks use fixed bitsets on the stack. The same request in version 2: its shard
    /// is the experts {0, 65534}, which span the whole id space.
    /// </summary>
    [Fact]
    public void A_wide_claimed_expert_set_costs_no_allocation_per_expert()
    {
        byte[] fuzzed = Convert.FromHexString(
            "9C02A36C617403000094000101C4048F1FEC3EC40101C4020000C404B1655F3F00CF381B73485B34A000" + "C4040000FEFF");
        WireFormat.DecodeRequest(fuzzed, Limits);
        long before = GC.GetAllocatedBytesForCurrentThread();
        ShardRequest request = WireFormat.DecodeRequest(fuzzed, Limits);
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Equal([0, 65534], WireFormat.ReadShardExperts(request));
        Assert.True(allocated < 8 * 1024, $"decoding a {fuzzed.Length}-byte request allocated {allocated} bytes");
    }

    [Fact]
    public void A_full_expert_set_costs_no_allocation_beyond_its_own_bytes()
    {
        // Every id below MaxExperts: 131,070 bytes of set, read once into its byte array and checked on the stack.
        float[] rows = new float[2];
        byte[] bytes = WireFormat.Serialize(WireFormat.BuildRequest(
            "m", 0, [.. Enumerable.Range(0, 65535)], rows, 2, WireDType.F32, new RoutedPairs([0, 2], [7, 65534], [1f, 1f]), WireDType.F32, 1));
        WireFormat.DecodeRequest(bytes, Limits);
        long before = GC.GetAllocatedBytesForCurrentThread();
        ShardRequest request = WireFormat.DecodeRequest(bytes, Limits);
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Equal(65535 * 2, request.ShardExperts.Length);
        Assert.True(allocated < bytes.Length + (8 * 1024), $"decoding a {bytes.Length}-byte request allocated {allocated} bytes");
    }

    [Fact]
    public void Duplicates_are_found_at_the_edges_of_the_id_space_and_forgotten_between_rows()
    {
        float[] rows = new float[3 * 2];
        ShardRequest request = WireFormat.BuildRequest(
            "m", 0, [.. Enumerable.Range(0, 65535)], rows, 2, WireDType.F32, new RoutedPairs([0, 2, 4, 6], [0, 65534, 65534, 63, 64, 0], [1f, 1f, 1f, 1f, 1f, 1f]), WireDType.F32, 1);
        Assert.Equal(6, WireFormat.DecodeRequest(WireFormat.Serialize(request), Limits).PairTotal);
        BinaryPrimitives.WriteUInt16LittleEndian(request.Experts.AsSpan(2 * 3), 65534);   // row 1 becomes (65534, 65534)
        AssertMentions(RefuseRequest(request), "ShardRequest.Experts[3]", "duplicate expert 65534 in row 1");
        BinaryPrimitives.WriteUInt16LittleEndian(request.Experts.AsSpan(2 * 3), 63);
        BinaryPrimitives.WriteUInt16LittleEndian(request.Experts.AsSpan(2 * 5), 64);       // row 2 becomes (64, 64)
        AssertMentions(RefuseRequest(request), "ShardRequest.Experts[5]", "duplicate expert 64 in row 2");
    }

    [Theory]
    [InlineData(float.NaN, "NaN")]
    [InlineData(float.PositiveInfinity, "Infinity")]
    [InlineData(float.NegativeInfinity, "-Infinity")]
    public void Non_finite_weight_is_refused(float weight, string shown)
    {
        ShardRequest request = Valid();
        BinaryPrimitives.WriteSingleLittleEndian(request.Weights.AsSpan(4 * 2), weight);
        AssertMentions(RefuseRequest(request), "ShardRequest.Weights[2]", $"is {shown}", "must be finite");
    }

    [Fact]
    public void Missing_model_is_refused()
    {
        ShardRequest request = Valid();
        request.Model = "";
        AssertMentions(RefuseRequest(request), "ShardRequest.Model is missing");
    }

    [Fact]
    public void Message_over_MaxMessageBytes_is_refused_before_deserializing()
    {
        byte[] valid = WireFormat.Serialize(Valid());
        AssertMentions(
            RefuseRequest(valid, Limits with { MaxMessageBytes = valid.Length - 1 }),
            $"{valid.Length} bytes exceeds MaxMessageBytes ({valid.Length - 1})");

        // Bytes that are not MessagePack at all get the size refusal, not a parse error: nothing was parsed.
        byte[] garbage = Enumerable.Repeat((byte)0xc1, 4096).ToArray();
        WireFormatException ex = RefuseRequest(garbage, Limits with { MaxMessageBytes = 1024 });
        AssertMentions(ex, "exceeds MaxMessageBytes (1024)", "refused before deserializing");
        Assert.DoesNotContain("malformed", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Every_truncation_of_a_valid_request_is_refused()
    {
        byte[] valid = WireFormat.Serialize(Valid());
        for (int length = 0; length < valid.Length; length++)
        {
            WireFormatException ex = Assert.Throws<WireFormatException>(() => WireFormat.DecodeRequest(valid.AsMemory(0, length), Limits));
            Assert.True(ex.Message.Contains("malformed MessagePack", StringComparison.Ordinal), $"prefix of {length} bytes: {ex.Message}");
        }
    }

    [Fact]
    public void Trailing_bytes_after_a_valid_request_are_refused()
    {
        byte[] valid = WireFormat.Serialize(Valid());
        AssertMentions(RefuseRequest([.. valid, 0x00, 0x01]), "2 trailing bytes");
    }

    [Fact]
    public void Never_used_msgpack_code_is_refused()
    {
        AssertMentions(RefuseRequest([0xc1]), "ShardRequest: malformed MessagePack");
    }

    [Fact]
    public void Nil_message_is_refused()
    {
        AssertMentions(RefuseRequest([0xc0]), "ShardRequest is nil");
    }

    [Fact]
    public void Random_garbage_bytes_are_refused()
    {
        var samples = new WireSamples();
        for (int trial = 0; trial < 500; trial++)
        {
            var garbage = new byte[samples.Random.Next(0, 300)];
            samples.Random.NextBytes(garbage);
            try
            {
                WireFormat.DecodeRequest(garbage, Limits);
                Assert.Fail($"seed {samples.Seed}, trial {trial}: garbage {Convert.ToHexString(garbage)} was accepted");
            }
            catch (WireFormatException ex)
            {
                Assert.StartsWith("ShardRequest", ex.Message, StringComparison.Ordinal);
            }
        }
    }

    private static byte[] Nested(byte container, byte[] prefix, int depth)
    {
        // fixarray(1) = 0x91 wraps one element; fixmap(1) = 0x81 needs a key before its value.
        var bytes = new List<byte>(prefix);
        for (int i = 0; i < depth; i++)
        {
            bytes.Add(container);
            if (container == 0x81)
            {
                bytes.Add(0x00);
            }
        }

        bytes.Add(0xc0);
        return [.. bytes];
    }

    [Theory]
    [InlineData(0x91)]
    [InlineData(0x81)]
    public void Message_nested_1000_deep_is_refused(byte container)
    {
        AssertMentions(RefuseRequest(Nested(container, [], 1000)), "maximum object graph depth (16)");
    }

    [Theory]
    [InlineData(0x91)]
    [InlineData(0x81)]
    public void Unknown_field_nested_1000_deep_is_refused(byte container)
    {
        // A valid request with a 13th array element, which MessagePack would skip at any depth.
        byte[] valid = WireFormat.Serialize(Valid());
        Assert.Equal(0x9c, valid[0]);   // fixarray of the 12 keys (0..11; 3 and 4 reserved, nil)
        byte[] bytes = Nested(container, valid, 1000);
        bytes[0] = 0x9d;
        AssertMentions(RefuseRequest(bytes), "maximum object graph depth (16)");
    }

    [Fact]
    public void Unknown_shallow_field_is_tolerated()
    {
        // Forward compatibility: a later sender may append fields; only their depth is bounded.
        ShardRequest request = Valid();
        byte[] bytes = [.. WireFormat.Serialize(request), 0x92, 0x01, 0x02];
        bytes[0] = 0x9d;
        Assert.Equal(request.RequestId, WireFormat.DecodeRequest(bytes, Limits).RequestId);
    }

    // Responses.

    private static ShardResponse ValidResponse() => new WireSamples().Response(8, 16, WireDType.BF16);

    private static WireFormatException RefuseResponse(ShardResponse response, int rows = 8, int width = 16) =>
        Assert.Throws<WireFormatException>(() => WireFormat.DecodeResponse(WireFormat.Serialize(response), Limits, rows, width));

    [Fact]
    public void Response_with_wrong_version_is_refused()
    {
        ShardResponse response = ValidResponse();
        response.Version = 0;
        AssertMentions(RefuseResponse(response), "ShardResponse.Version", "expected 2, got 0");
    }

    [Fact]
    public void Response_of_another_shape_than_the_request_is_refused()
    {
        AssertMentions(RefuseResponse(ValidResponse(), rows: 9), "ShardResponse.Partials", "expected shape [9, 16]", "got [8, 16]");
        AssertMentions(RefuseResponse(ValidResponse(), width: 32), "expected shape [8, 32]", "got [8, 16]");
    }

    [Fact]
    public void Response_with_data_length_mismatch_is_refused()
    {
        ShardResponse response = ValidResponse();
        response.Partials.Data = [.. response.Partials.Data, 0];
        AssertMentions(RefuseResponse(response), "ShardResponse.Partials.Data", "expected 256 bytes", "got 257");
    }

    [Fact]
    public void Response_with_unknown_dtype_is_refused()
    {
        ShardResponse response = ValidResponse();
        response.Partials.DType = (WireDType)200;
        AssertMentions(RefuseResponse(response), "ShardResponse.Partials.DType", "undefined dtype 200");
    }

    [Fact]
    public void Response_with_negative_compute_time_is_refused()
    {
        ShardResponse response = ValidResponse();
        response.ComputeMicroseconds = -1;
        AssertMentions(RefuseResponse(response), "ShardResponse.ComputeMicroseconds", "got -1");
    }

    [Fact]
    public void Response_over_MaxMessageBytes_is_refused()
    {
        byte[] bytes = WireFormat.Serialize(ValidResponse());
        WireFormatException ex = Assert.Throws<WireFormatException>(
            () => WireFormat.DecodeResponse(bytes, Limits with { MaxMessageBytes = 100 }, 8, 16));
        AssertMentions(ex, "ShardResponse", "exceeds MaxMessageBytes (100)");
    }
}
