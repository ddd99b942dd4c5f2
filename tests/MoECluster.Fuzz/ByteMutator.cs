using System.Buffers.Binary;

namespace MoECluster.Fuzz;

/// <summary>Format-blind edits: bit flips, byte sets, inserts, deletes, truncation, duplicated and spliced slices, interesting integers.</summary>
public sealed class ByteMutator : IMutator
{
    /// <summary>MessagePack type codes and size extremes.</summary>
    private static readonly byte[] Specials = [0x00, 0x01, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc1, 0xc2, 0xc4, 0xc5, 0xc6, 0xc7, 0xca, 0xcb, 0xcc, 0xce, 0xcf, 0xd2, 0xd3, 0xd9, 0xdb, 0xdc, 0xdd, 0xde, 0xdf, 0xe0, 0xff, (byte)'"', (byte)'[', (byte)']', (byte)'{', (byte)'}', (byte)',', (byte)':', (byte)'\\', (byte)'-', (byte)'e'];

    private static readonly long[] Integers = [0, 1, -1, 0x7f, 0x80, 0xff, 0x100, 0x7fff, 0xffff, 0x10000, int.MaxValue, int.MinValue, uint.MaxValue, long.MaxValue, long.MinValue, 100L << 20];

    public static ByteMutator Instance { get; } = new();

    public byte[] Mutate(byte[] valid, IReadOnlyList<byte[]> seeds, Random random) => Edit(valid, seeds, random, random.Next(1, 5));

    public static byte[] Edit(byte[] valid, IReadOnlyList<byte[]> seeds, Random random, int edits)
    {
        ArgumentNullException.ThrowIfNull(valid);
        ArgumentNullException.ThrowIfNull(seeds);
        ArgumentNullException.ThrowIfNull(random);
        var bytes = new List<byte>(valid);
        for (int e = 0; e < edits && bytes.Count > 0; e++)
        {
            int at = random.Next(bytes.Count);
            switch (random.Next(9))
            {
                case 0:
                    bytes[at] ^= (byte)(1 << random.Next(8));
                    break;
                case 1:
                    bytes[at] = (byte)random.Next(256);
                    break;
                case 2:
                    bytes.Insert(at, (byte)random.Next(256));
                    break;
                case 3:
                    bytes.RemoveRange(at, Math.Min(bytes.Count - at, random.Next(1, 9)));
                    break;
                case 4:
                    bytes[at] = Specials[random.Next(Specials.Length)];
                    break;
                case 5:
                    bytes.RemoveRange(at, bytes.Count - at);
                    break;
                case 6:
                {
                    int length = Math.Min(bytes.Count - at, random.Next(1, 33));
                    bytes.InsertRange(random.Next(bytes.Count + 1), bytes.GetRange(at, length));
                    break;
                }

                case 7:
                {
                    Span<byte> value = stackalloc byte[8];
                    long integer = Integers[random.Next(Integers.Length)];
                    if (random.Next(2) == 0)
                    {
                        BinaryPrimitives.WriteInt64BigEndian(value, integer);
                    }
                    else
                    {
                        BinaryPrimitives.WriteInt64LittleEndian(value, integer);
                    }

                    int width = new[] { 1, 2, 4, 8 }[random.Next(4)];
                    ReadOnlySpan<byte> slice = random.Next(2) == 0 ? value[(8 - width)..] : value[..width];
                    for (int i = 0; i < width && at + i < bytes.Count; i++)
                    {
                        bytes[at + i] = slice[i];
                    }

                    break;
                }

                default:
                {
                    byte[] other = seeds[random.Next(seeds.Count)];
                    int from = random.Next(other.Length);
                    int length = Math.Min(other.Length - from, random.Next(1, 65));
                    bytes.RemoveRange(at, Math.Min(bytes.Count - at, length));
                    bytes.InsertRange(at, other.AsSpan(from, length).ToArray());
                    break;
                }
            }
        }

        return [.. bytes];
    }
}
