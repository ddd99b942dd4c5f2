using System.Buffers;
using MessagePack;
using MoECluster.Wire;

namespace MoECluster.Wire.Tests;

/// <summary>
/// A MessagePack map that names a key twice is refused, as the gateway's JSON parser refuses one: MessagePack's
/// formatters would take the last value, so one body could read differently to two readers. Keys compare by value,
/// whatever header encodes them.
/// </summary>
public sealed class DuplicateKeyTests
{
    private static readonly ActivationBlock Block = ActivationBlock.Encode([1f, 2f, 3f, 4f], 1, 4, WireDType.F32);

    /// <summary>A GatewayForwardRequest map written by hand: (key, value writer) pairs in order.</summary>
    private static byte[] Map(params (Action<MessagePackWriter> Key, Action<MessagePackWriter> Value)[] entries)
    {
        var buffer = new ArrayBufferWriter<byte>();
        var writer = new MessagePackWriter(buffer);
        writer.WriteMapHeader(entries.Length);
        writer.Flush();
        foreach (var (key, value) in entries)
        {
            Write(buffer, key);
            Write(buffer, value);
        }

        return buffer.WrittenSpan.ToArray();
    }

    private static void Write(ArrayBufferWriter<byte> buffer, Action<MessagePackWriter> write)
    {
        var writer = new MessagePackWriter(buffer);
        write(writer);
    }

    private static Action<MessagePackWriter> Str(string s) => w =>
    {
        w.Write(s);
        w.Flush();
    };

    /// <summary>A string in the str8 encoding even when it is short enough for fixstr: same key, other bytes.</summary>
    private static Action<MessagePackWriter> Str8(string s) => w =>
    {
        byte[] utf8 = System.Text.Encoding.UTF8.GetBytes(s);
        byte[] raw = [MessagePackCode.Str8, (byte)utf8.Length, .. utf8];
        w.WriteRaw(raw);
        w.Flush();
    };

    private static Action<MessagePackWriter> Nil => w =>
    {
        w.WriteNil();
        w.Flush();
    };

    private static Action<MessagePackWriter> Hidden => w =>
    {
        w.WriteRaw(MessagePackSerializer.Serialize(Block, WireFormat.Options));
        w.Flush();
    };

    [Fact]
    public void A_request_map_without_duplicates_decodes()
    {
        var request = GatewayWire.DecodeRequest(Map((Str("model"), Str("lat")), (Str("hidden_states"), Hidden)), new WireLimits());
        Assert.Equal("lat", request.Model);
    }

    [Fact]
    public void A_key_given_twice_is_refused_naming_it()
    {
        byte[] body = Map((Str("model"), Str("lat")), (Str("hidden_states"), Hidden), (Str("model"), Str("std")));
        var e = Assert.Throws<WireFormatException>(() => GatewayWire.DecodeRequest(body, new WireLimits()));
        Assert.Contains("duplicate key 'model'", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_key_given_twice_in_two_encodings_is_still_the_same_key()
    {
        byte[] body = Map((Str("wire"), Str("fp32")), (Str("hidden_states"), Hidden), (Str8("wire"), Str("fp16")));
        var e = Assert.Throws<WireFormatException>(() => GatewayWire.DecodeRequest(body, new WireLimits()));
        Assert.Contains("duplicate key 'wire'", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_duplicate_unknown_key_is_refused_too()
    {
        byte[] body = Map((Str("x"), Nil), (Str("hidden_states"), Hidden), (Str("x"), Nil));
        var e = Assert.Throws<WireFormatException>(() => GatewayWire.DecodeRequest(body, new WireLimits()));
        Assert.Contains("duplicate key 'x'", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void The_same_key_in_sibling_and_nested_maps_is_not_a_duplicate()
    {
        // An unknown field holding [ {a: nil}, {a: nil} ] beside the known ones: each map has "a" once.
        Action<MessagePackWriter> siblings = w =>
        {
            w.WriteArrayHeader(2);
            for (int i = 0; i < 2; i++)
            {
                w.WriteMapHeader(1);
                w.Write("a");
                w.WriteNil();
            }

            w.Flush();
        };
        Action<MessagePackWriter> nested = w =>
        {
            w.WriteMapHeader(1);
            w.Write("model");
            w.WriteMapHeader(1);
            w.Write("model");
            w.WriteNil();
            w.Flush();
        };
        var request = GatewayWire.DecodeRequest(
            Map((Str("extra"), siblings), (Str("nested"), nested), (Str("model"), Str("lat")), (Str("hidden_states"), Hidden)), new WireLimits());
        Assert.Equal("lat", request.Model);
    }

    [Fact]
    public void Integer_keys_compare_by_value_whatever_their_encoding()
    {
        // {1: nil, 1 (as uint16): nil} inside an unknown field.
        Action<MessagePackWriter> ints = w =>
        {
            w.WriteMapHeader(2);
            w.Write(1);
            w.WriteNil();
            w.WriteRaw(new byte[] { MessagePackCode.UInt16, 0x00, 0x01 });
            w.WriteNil();
            w.Flush();
        };
        byte[] body = Map((Str("extra"), ints), (Str("hidden_states"), Hidden));
        var e = Assert.Throws<WireFormatException>(() => GatewayWire.DecodeRequest(body, new WireLimits()));
        Assert.Contains("duplicate key 1 ", e.Message, StringComparison.Ordinal);
    }
}
