using System.Buffers.Binary;
using MessagePack;

namespace MoECluster.Fuzz;

/// <summary>
/// Structure-aware edits of MessagePack: the valid message is walked into its values, then one is changed: a length
/// field corrupted (str, bin, array, map, ext, rewritten in their 32-bit form when needed), a value replaced by one of
/// another type (type confusion), by a header declaring a huge length with nothing behind it, by a boundary integer,
/// by a deep nest, or by a value spliced from another message; or a value deleted or duplicated. A third of the time
/// byte edits follow.
/// </summary>
public sealed class MessagePackMutator : IMutator
{
    private static readonly long[] Lengths = [0, 1, 2, 0x7f, 0x80, 0xff, 0x100, 0xffff, 0x10000, 0xffffff, 0x7fffffff, 0x80000000, 0xffffffff];

    private static readonly byte[][] Foreign =
    [
        [0xc0], [0xc2], [0xc3], [0x00], [0x7f], [0xff], [0xe0], [0xcc, 0xff], [0xcd, 0xff, 0xff], [0xd0, 0x80],
        [0xce, 0xff, 0xff, 0xff, 0xff], [0xd2, 0x80, 0x00, 0x00, 0x00], [0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        [0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0], [0xca, 0x7f, 0xc0, 0x00, 0x00], [0xcb, 0x7f, 0xf0, 0, 0, 0, 0, 0, 0],
        [0xa1, (byte)'x'], [0xa0], [0xc4, 0x00], [0xc4, 0x03, 1, 2, 3], [0x90], [0x80], [0x91, 0xc0], [0x81, 0xa1, (byte)'k', 0x01],
        [0xd4, 0x01, 0x00], [0xc7, 0x01, 0x05, 0x00], [0xd6, 0xff, 0, 0, 0, 0],
    ];

    private static readonly long[] Integers = [0, 1, -1, 2, 3, 127, 128, 255, 256, 0xffff, 0x10000, int.MaxValue, int.MinValue, (long)int.MaxValue + 1, uint.MaxValue, long.MaxValue, long.MinValue];

    public static MessagePackMutator Instance { get; } = new();

    public byte[] Mutate(byte[] valid, IReadOnlyList<byte[]> seeds, Random random)
    {
        ArgumentNullException.ThrowIfNull(valid);
        ArgumentNullException.ThrowIfNull(seeds);
        ArgumentNullException.ThrowIfNull(random);
        List<MsgNode> nodes = MsgNode.Walk(valid);
        byte[] mutated = nodes.Count == 0 ? valid : Structural(valid, nodes, seeds, random);
        return random.Next(3) == 0 ? ByteMutator.Edit(mutated, seeds, random, random.Next(1, 3)) : mutated;
    }

    private static byte[] Structural(byte[] valid, List<MsgNode> nodes, IReadOnlyList<byte[]> seeds, Random random)
    {
        MsgNode node = nodes[random.Next(nodes.Count)];
        switch (random.Next(8))
        {
            case 0:
            case 1:
            {
                // Length-field corruption: prefer a node that has one.
                var sized = nodes.Where(n => n.Kind is MsgKind.Str or MsgKind.Bin or MsgKind.Array or MsgKind.Map or MsgKind.Ext).ToList();
                if (sized.Count == 0)
                {
                    goto default;
                }

                node = sized[random.Next(sized.Count)];
                long length = random.Next(3) switch
                {
                    0 => node.Count + random.Next(-2, 3),
                    1 => Lengths[random.Next(Lengths.Length)],
                    _ => random.NextInt64(0, 1L << 32),
                };
                return Replace(valid, node.Offset, node.HeaderLength, Header(node.Kind, Math.Clamp(length, 0, uint.MaxValue), valid, node));
            }

            case 2:
                return Replace(valid, node.Offset, node.End - node.Offset, Foreign[random.Next(Foreign.Length)]);
            case 3:
            {
                // A huge declared length with (almost) nothing behind it.
                MsgKind kind = new[] { MsgKind.Str, MsgKind.Bin, MsgKind.Array, MsgKind.Map }[random.Next(4)];
                byte[] header = Header(kind, Lengths[random.Next(5, Lengths.Length)], valid, node);
                return Replace(valid, node.Offset, node.End - node.Offset, [.. header, .. new byte[random.Next(0, 4)]]);
            }

            case 4:
            {
                long value = Integers[random.Next(Integers.Length)];
                byte[] encoded = value == uint.MaxValue && random.Next(2) == 0
                    ? MessagePackSerializer.Serialize(ulong.MaxValue)
                    : MessagePackSerializer.Serialize(value);
                return Replace(valid, node.Offset, node.End - node.Offset, encoded);
            }

            case 5:
            {
                int depth = random.Next(2, 200);
                var nest = new byte[depth + 1];
                nest.AsSpan(0, depth).Fill(0x91);
                nest[depth] = 0xc0;
                return Replace(valid, node.Offset, node.End - node.Offset, nest);
            }

            case 6:
            {
                byte[] other = seeds[random.Next(seeds.Count)];
                List<MsgNode> otherNodes = MsgNode.Walk(other);
                if (otherNodes.Count == 0)
                {
                    goto default;
                }

                MsgNode donor = otherNodes[random.Next(otherNodes.Count)];
                return Replace(valid, node.Offset, node.End - node.Offset, other.AsSpan(donor.Offset, donor.End - donor.Offset).ToArray());
            }

            default:
                return random.Next(2) == 0
                    ? Replace(valid, node.Offset, node.End - node.Offset, [])
                    : Replace(valid, node.End, 0, valid.AsSpan(node.Offset, node.End - node.Offset).ToArray());
        }
    }

    private static byte[] Header(MsgKind kind, long length, byte[] valid, MsgNode node)
    {
        var header = new byte[6];
        header[0] = kind switch
        {
            MsgKind.Str => 0xdb,
            MsgKind.Bin => 0xc6,
            MsgKind.Array => 0xdd,
            MsgKind.Map => 0xdf,
            _ => 0xc9,
        };
        BinaryPrimitives.WriteUInt32BigEndian(header.AsSpan(1), (uint)length);
        if (kind == MsgKind.Ext)
        {
            // Keep the ext type byte that followed the length.
            header[5] = node.Kind == MsgKind.Ext ? valid[node.Offset + node.HeaderLength - 1] : (byte)1;
            return header;
        }

        return header[..5];
    }

    private static byte[] Replace(byte[] source, int offset, int length, ReadOnlySpan<byte> replacement)
    {
        var result = new byte[source.Length - length + replacement.Length];
        source.AsSpan(0, offset).CopyTo(result);
        replacement.CopyTo(result.AsSpan(offset));
        source.AsSpan(offset + length).CopyTo(result.AsSpan(offset + replacement.Length));
        return result;
    }
}

public enum MsgKind
{
    Scalar,
    Str,
    Bin,
    Array,
    Map,
    Ext,
}

/// <summary>One value of a MessagePack message: where it starts and ends, its header and what its length field says.</summary>
public readonly record struct MsgNode(int Offset, int End, int HeaderLength, MsgKind Kind, long Count)
{
    /// <summary>Every value of a (valid) message, containers before their contents; empty if the bytes do not walk.</summary>
    public static List<MsgNode> Walk(ReadOnlySpan<byte> bytes)
    {
        var nodes = new List<MsgNode>();
        int position = 0;
        try
        {
            while (position < bytes.Length)
            {
                position = Read(bytes, position, nodes, 0);
            }
        }
        catch (IndexOutOfRangeException)
        {
            return [];
        }
        catch (ArgumentOutOfRangeException)
        {
            return [];
        }
        catch (InvalidDataException)
        {
            return [];
        }

        return nodes;
    }

    private static int Read(ReadOnlySpan<byte> b, int at, List<MsgNode> nodes, int depth)
    {
        if (depth > 64)
        {
            throw new InvalidDataException("too deep");
        }

        byte code = b[at];
        (MsgKind kind, int header, long count) = code switch
        {
            <= 0x7f or >= 0xe0 => (MsgKind.Scalar, 1, 0L),
            <= 0x8f => (MsgKind.Map, 1, code & 0x0f),
            <= 0x9f => (MsgKind.Array, 1, code & 0x0f),
            <= 0xbf => (MsgKind.Str, 1, code & 0x1f),
            0xc0 or 0xc2 or 0xc3 => (MsgKind.Scalar, 1, 0L),
            0xc4 => (MsgKind.Bin, 2, b[at + 1]),
            0xc5 => (MsgKind.Bin, 3, BinaryPrimitives.ReadUInt16BigEndian(b[(at + 1)..])),
            0xc6 => (MsgKind.Bin, 5, BinaryPrimitives.ReadUInt32BigEndian(b[(at + 1)..])),
            0xc7 => (MsgKind.Ext, 3, b[at + 1]),
            0xc8 => (MsgKind.Ext, 4, BinaryPrimitives.ReadUInt16BigEndian(b[(at + 1)..])),
            0xc9 => (MsgKind.Ext, 6, BinaryPrimitives.ReadUInt32BigEndian(b[(at + 1)..])),
            0xca => (MsgKind.Scalar, 5, 0L),
            0xcb => (MsgKind.Scalar, 9, 0L),
            0xcc or 0xd0 => (MsgKind.Scalar, 2, 0L),
            0xcd or 0xd1 => (MsgKind.Scalar, 3, 0L),
            0xce or 0xd2 => (MsgKind.Scalar, 5, 0L),
            0xcf or 0xd3 => (MsgKind.Scalar, 9, 0L),
            0xd4 => (MsgKind.Scalar, 3, 0L),
            0xd5 => (MsgKind.Scalar, 4, 0L),
            0xd6 => (MsgKind.Scalar, 6, 0L),
            0xd7 => (MsgKind.Scalar, 10, 0L),
            0xd8 => (MsgKind.Scalar, 18, 0L),
            0xd9 => (MsgKind.Str, 2, b[at + 1]),
            0xda => (MsgKind.Str, 3, BinaryPrimitives.ReadUInt16BigEndian(b[(at + 1)..])),
            0xdb => (MsgKind.Str, 5, BinaryPrimitives.ReadUInt32BigEndian(b[(at + 1)..])),
            0xdc => (MsgKind.Array, 3, BinaryPrimitives.ReadUInt16BigEndian(b[(at + 1)..])),
            0xdd => (MsgKind.Array, 5, BinaryPrimitives.ReadUInt32BigEndian(b[(at + 1)..])),
            0xde => (MsgKind.Map, 3, BinaryPrimitives.ReadUInt16BigEndian(b[(at + 1)..])),
            0xdf => (MsgKind.Map, 5, BinaryPrimitives.ReadUInt32BigEndian(b[(at + 1)..])),
            _ => throw new InvalidDataException("0xc1"),
        };

        int index = nodes.Count;
        nodes.Add(default);
        int end;
        switch (kind)
        {
            case MsgKind.Array:
            case MsgKind.Map:
                end = at + header;
                for (long i = 0; i < (kind == MsgKind.Map ? 2 * count : count); i++)
                {
                    end = Read(b, end, nodes, depth + 1);
                }

                break;
            case MsgKind.Str:
            case MsgKind.Bin:
            case MsgKind.Ext:
                end = checked((int)(at + header + count));
                break;
            default:
                end = at + header;
                break;
        }

        if (end > b.Length)
        {
            throw new InvalidDataException("truncated");
        }

        nodes[index] = new MsgNode(at, end, header, kind, count);
        return end;
    }
}
