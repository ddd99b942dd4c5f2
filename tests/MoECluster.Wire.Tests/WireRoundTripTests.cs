using System.Buffers.Binary;
using MoECluster.Model.Dispatch;
using MoECluster.Model.Numerics;

namespace MoECluster.Wire.Tests;

public sealed class WireRoundTripTests
{
    private static readonly WireLimits Limits = new();

    public static TheoryData<WireDType, WireDType> DTypePairs()
    {
        var data = new TheoryData<WireDType, WireDType>();
        foreach (WireDType rows in new[] { WireDType.F32, WireDType.BF16, WireDType.F16 })
        {
            foreach (WireDType response in new[] { WireDType.F32, WireDType.BF16, WireDType.F16 })
            {
                data.Add(rows, response);
            }
        }

        return data;
    }

    /// <summary>What the receiver must decode from <paramref name="value"/> sent as <paramref name="dtype"/>, computed without the block code.</summary>
    private static float Rounded(float value, WireDType dtype) => dtype switch
    {
        WireDType.F32 => value,
        WireDType.BF16 => ElementConversions.BFloat16ToSingle(ElementConversions.SingleToBFloat16(value)),
        _ => (float)(Half)value,
    };

    [Theory]
    [MemberData(nameof(DTypePairs))]
    public void Request_round_trips_every_field(WireDType dtype, WireDType responseDType)
    {
        var samples = new WireSamples();
        (ShardRequest sent, float[] rows, RoutedPairs pairs) = samples.Request(12, 40, dtype, responseDType);

        ShardRequest received = WireFormat.DecodeRequest(WireFormat.Serialize(sent), Limits);

        Assert.Equal(WireFormat.Version, received.Version);
        Assert.Equal(WireSamples.Model, received.Model);
        Assert.Equal(WireSamples.Layer, received.Layer);
        Assert.Equal(WireSamples.ShardExperts, WireFormat.ReadShardExperts(received));
        Assert.Equal(responseDType, received.ResponseDType);
        Assert.Equal(sent.RequestId, received.RequestId);
        Assert.Equal(dtype, received.Rows.DType);
        Assert.Equal(12, received.Rows.Rows);
        Assert.Equal(40, received.Rows.Width);
        Assert.Equal([.. Enumerable.Range(0, pairs.Rows).Select(r => (byte)pairs.CountOf(r))], received.PairCounts);

        float[] decoded = received.Rows.Decode();
        for (int i = 0; i < rows.Length; i++)
        {
            float expected = Rounded(rows[i], dtype);
            Assert.True(expected.Equals(decoded[i]), $"seed {samples.Seed}: row element {i}: sent {rows[i]}, got {decoded[i]}, expected {expected}");
        }

        Assert.Equal(pairs.Count, received.PairTotal);
        RoutedPairs got = WireFormat.ReadPairs(received);
        Assert.Equal(pairs.Offsets, got.Offsets);
        Assert.Equal(pairs.Experts, got.Experts);
        Assert.Equal(pairs.Weights, got.Weights);
    }

    [Theory]
    [InlineData(WireDType.F32)]
    [InlineData(WireDType.BF16)]
    [InlineData(WireDType.F16)]
    public void Response_round_trips_every_field(WireDType dtype)
    {
        var samples = new WireSamples();
        ShardResponse sent = samples.Response(7, 96, dtype);
        float[] original = sent.Partials.Decode();

        ShardResponse received = WireFormat.DecodeResponse(WireFormat.Serialize(sent), Limits, expectedRows: 7, expectedWidth: 96);

        Assert.Equal(WireFormat.Version, received.Version);
        Assert.Equal("silo-a:11111", received.Silo);
        Assert.Equal(sent.RequestId, received.RequestId);
        Assert.Equal(sent.ComputeMicroseconds, received.ComputeMicroseconds);
        Assert.Equal(dtype, received.Partials.DType);
        Assert.Equal(sent.Partials.Data, received.Partials.Data);
        Assert.Equal(original, received.Partials.Decode());
    }

    [Fact]
    public void Fp32_values_survive_request_and_response_bit_exactly()
    {
        var samples = new WireSamples();
        (ShardRequest sent, float[] rows, _) = samples.Request(5, 33, WireDType.F32);
        float[] decoded = WireFormat.DecodeRequest(WireFormat.Serialize(sent), Limits).Rows.Decode();
        Assert.Equal(rows.Select(BitConverter.SingleToUInt32Bits), decoded.Select(BitConverter.SingleToUInt32Bits));

        var response = new ShardResponse { Partials = ActivationBlock.Encode(rows, 5, 33, WireDType.F32), Silo = "s" };
        float[] back = WireFormat.DecodeResponse(WireFormat.Serialize(response), Limits, 5, 33).Partials.Decode();
        Assert.Equal(rows.Select(BitConverter.SingleToUInt32Bits), back.Select(BitConverter.SingleToUInt32Bits));
    }

    /// <summary>The MessagePack header of a bin of <paramref name="length"/> bytes (always the shortest form).</summary>
    private static byte[] BinHeader(int length)
    {
        if (length <= byte.MaxValue)
        {
            return [0xc4, (byte)length];
        }

        if (length <= ushort.MaxValue)
        {
            var h16 = new byte[3];
            h16[0] = 0xc5;
            BinaryPrimitives.WriteUInt16BigEndian(h16.AsSpan(1), (ushort)length);
            return h16;
        }

        var h32 = new byte[5];
        h32[0] = 0xc6;
        BinaryPrimitives.WriteUInt32BigEndian(h32.AsSpan(1), (uint)length);
        return h32;
    }

    private static int CountOccurrences(byte[] haystack, byte[] needle)
    {
        int count = 0;
        int start = 0;
        while (start <= haystack.Length - needle.Length)
        {
            int at = haystack.AsSpan(start).IndexOf(needle);
            if (at < 0)
            {
                break;
            }

            count++;
            start += at + 1;
        }

        return count;
    }

    [Theory]
    [InlineData(2, 16, WireDType.BF16, 0xc4)]    // 64 bytes: bin8
    [InlineData(8, 64, WireDType.F32, 0xc5)]     // 2 KiB: bin16
    [InlineData(40, 512, WireDType.F32, 0xc6)]   // 80 KiB: bin32
    [InlineData(40, 1024, WireDType.F16, 0xc6)]  // 80 KiB: bin32
    public void Request_activations_are_one_bin_of_raw_little_endian_elements(int rows, int width, WireDType dtype, byte binCode)
    {
        var samples = new WireSamples();
        (ShardRequest request, float[] values, _) = samples.Request(rows, width, dtype);
        byte[] bytes = WireFormat.Serialize(request);

        // The raw elements, little-endian, computed here without the block code.
        int size = dtype == WireDType.F32 ? 4 : 2;
        var raw = new byte[values.Length * size];
        for (int i = 0; i < values.Length; i++)
        {
            switch (dtype)
            {
                case WireDType.F32:
                    BinaryPrimitives.WriteSingleLittleEndian(raw.AsSpan(i * 4), values[i]);
                    break;
                case WireDType.BF16:
                    BinaryPrimitives.WriteUInt16LittleEndian(raw.AsSpan(i * 2), ElementConversions.SingleToBFloat16(values[i]));
                    break;
                default:
                    BinaryPrimitives.WriteHalfLittleEndian(raw.AsSpan(i * 2), (Half)values[i]);
                    break;
            }
        }

        byte[] header = BinHeader(raw.Length);
        Assert.Equal(binCode, header[0]);
        Assert.Equal(1, CountOccurrences(bytes, [.. header, .. raw]));
    }

    [Fact]
    public void Response_partials_are_one_bin_of_raw_little_endian_elements()
    {
        var samples = new WireSamples();
        ShardResponse response = samples.Response(16, 256, WireDType.BF16);
        byte[] bytes = WireFormat.Serialize(response);
        Assert.Equal(1, CountOccurrences(bytes, [.. BinHeader(response.Partials.Data.Length), .. response.Partials.Data]));
        Assert.True(bytes.Length - response.Partials.PayloadBytes < 64, $"response envelope is {bytes.Length - response.Partials.PayloadBytes} bytes");
    }

    [Fact]
    public void Typical_request_is_its_payload_plus_an_envelope_under_128_bytes()
    {
        var samples = new WireSamples();
        ShardRequest request = samples.Request(rows: 64, width: 2048, WireDType.BF16, model: "qwen3-moe-30b-a3b").Request;
        byte[] bytes = WireFormat.Serialize(request);

        // The payload: the rows, the pairs, and the shard's expert ids (16 here; as many as the shard has).
        long payload = request.Rows.PayloadBytes + request.PairCounts.Length + request.Experts.Length + request.Weights.Length + request.ShardExperts.Length;
        Assert.Equal(WireSize.ActivationBytes(64, 2048, WireDType.BF16), request.Rows.PayloadBytes);
        long envelope = bytes.Length - payload;
        Assert.InRange(envelope, 1, 127);
    }

    [Fact]
    public void BuildRequest_carries_the_pairs_as_a_count_byte_per_row_and_little_endian_uint16_ids_and_float32_weights()
    {
        // The bytes on the wire are those of WireFormat.Version 2, written out here field by field.
        float[] rows = [1f, 2f, 3f, 4f, 5f, 6f];
        var pairs = new RoutedPairs([0, 2, 3, 6], [17, 300, 16, 16, 18, 19], [0.5f, 0.25f, 1f, 0.125f, 2f, -1.5f]);
        ShardRequest built = WireFormat.BuildRequest("m", 5, [16, 17, 18, 19, 300], rows, 2, WireDType.BF16, pairs, WireDType.F16, 42);
        var expected = new ShardRequest
        {
            Version = 2,
            Model = "m",
            Layer = 5,
            ShardExperts = Convert.FromHexString("1000" + "1100" + "1200" + "1300" + "2C01"),
            Rows = ActivationBlock.Encode(rows, 3, 2, WireDType.BF16),
            PairCounts = [2, 1, 3],
            Experts = Convert.FromHexString("11002C01100010001200" + "1300"),
            Weights = [.. new[] { 0.5f, 0.25f, 1f, 0.125f, 2f, -1.5f }.SelectMany(w =>
            {
                var b = new byte[4];
                BinaryPrimitives.WriteSingleLittleEndian(b, w);
                return b;
            })],
            ResponseDType = WireDType.F16,
            RequestId = 42,
        };

        Assert.Equal(WireFormat.Serialize(expected), WireFormat.Serialize(built));

        // A 12-element array: keys 0..11, with 0 at keys 3 and 4 (reserved: version 1's FirstExpert and ExpertCount).
        byte[] bytes = WireFormat.Serialize(built);
        Assert.Equal(Convert.FromHexString("9C" + "02" + "A16D" + "05" + "00" + "00"), bytes[..7]);
        Assert.Equal(Convert.FromHexString("C40A" + "1000" + "1100" + "1200" + "1300" + "2C01"), bytes[^12..]);
        RoutedPairs read = WireFormat.ReadPairs(WireFormat.DecodeRequest(WireFormat.Serialize(built), Limits));
        Assert.Equal(pairs.Offsets, read.Offsets);
        Assert.Equal(pairs.Experts, read.Experts);
        Assert.Equal(pairs.Weights, read.Weights);
    }

    [Fact]
    public void ReadPairs_refuses_pair_counts_that_do_not_sum_to_the_pairs_carried()
    {
        ShardRequest request = new WireSamples().SmallRequest();
        request.PairCounts[0]++;
        var e = Assert.Throws<WireFormatException>(() => WireFormat.ReadPairs(request));
        Assert.Contains("PairCounts sum to", e.Message, StringComparison.Ordinal);
        request.PairCounts[0]--;
        request.Weights = request.Weights[..^4];
        Assert.Throws<WireFormatException>(() => WireFormat.ReadPairs(request));
    }

    [Fact]
    public void BuildRequest_refuses_what_a_receiver_would_refuse()
    {
        float[] rows = new float[8];
        int[] shard = [8, 9, 10, 11];
        ArgumentException outside = Assert.Throws<ArgumentException>(() => WireFormat.BuildRequest(
            "m", 0, shard, rows, 4, WireDType.F32, new RoutedPairs([0, 1, 2], [8, 12], [0.5f, 0.5f]), WireDType.F32, 1));
        Assert.Contains("expert 12", outside.Message, StringComparison.Ordinal);

        Assert.Throws<ArgumentException>(() => WireFormat.BuildRequest(
            "m", 0, shard, rows, 4, WireDType.F32, new RoutedPairs([0, 1, 3], [8, 9], [0.5f, 0.5f]), WireDType.F32, 1));
        Assert.Throws<ArgumentException>(() => WireFormat.BuildRequest(
            "m", 0, shard, rows, 4, WireDType.F32, new RoutedPairs([0, 1, 2], [8, 9], [0.5f]), WireDType.F32, 1));
        Assert.Throws<ArgumentException>(() => WireFormat.BuildRequest(
            "m", 0, shard, rows, 4, WireDType.F32, new RoutedPairs([0, 1, 2], [8, 70000], [0.5f, 0.5f]), WireDType.F32, 1));

        // The shard's experts: ascending uint16 ids, at least one.
        var pairs = new RoutedPairs([0, 1, 2], [8, 9], [0.5f, 0.5f]);
        ArgumentException unsorted = Assert.Throws<ArgumentException>(() => WireFormat.BuildRequest(
            "m", 0, [9, 8], rows, 4, WireDType.F32, pairs, WireDType.F32, 1));
        Assert.Contains("ShardRequest.ShardExperts[1]: expert 8 follows 9", unsorted.Message, StringComparison.Ordinal);
        ArgumentException empty = Assert.Throws<ArgumentException>(() => WireFormat.BuildRequest(
            "m", 0, [], rows, 4, WireDType.F32, pairs, WireDType.F32, 1));
        Assert.Contains("ShardRequest.ShardExperts is missing (empty)", empty.Message, StringComparison.Ordinal);
        ArgumentException wide = Assert.Throws<ArgumentException>(() => WireFormat.BuildRequest(
            "m", 0, [8, 9, 65536], rows, 4, WireDType.F32, pairs, WireDType.F32, 1));
        Assert.Equal("shardExperts", wide.ParamName);
        Assert.Contains("shard expert 65536 (index 2) is not a uint16 id", wide.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentNullException>(() => WireFormat.BuildRequest(
            "m", 0, null!, rows, 4, WireDType.F32, pairs, WireDType.F32, 1));
    }
}
