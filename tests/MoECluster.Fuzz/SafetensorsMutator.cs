using System.Buffers.Binary;

namespace MoECluster.Fuzz;

/// <summary>
/// Structure-aware edits of a safetensors file (8-byte little-endian header length, JSON header, data): the length
/// prefix corrupted (off by a few, zero, past the file, past 100 MiB, 2^64 - 1), the JSON header mutated as JSON
/// (the prefix then usually fixed up to the new length, so the edit reaches the header validation), the data
/// truncated or extended, or bytes edited anywhere.
/// </summary>
public sealed class SafetensorsMutator : IMutator
{
    public static SafetensorsMutator Instance { get; } = new();

    public byte[] Mutate(byte[] valid, IReadOnlyList<byte[]> seeds, Random random)
    {
        ArgumentNullException.ThrowIfNull(valid);
        ArgumentNullException.ThrowIfNull(random);
        if (valid.Length < 8)
        {
            return ByteMutator.Edit(valid, seeds, random, 1);
        }

        ulong headerLength = BinaryPrimitives.ReadUInt64LittleEndian(valid);
        int header = (int)Math.Min(headerLength, (ulong)(valid.Length - 8));
        byte[] json = valid.AsSpan(8, header).ToArray();
        byte[] data = valid.AsSpan(8 + header).ToArray();
        switch (random.Next(8))
        {
            case 0:
            {
                ulong[] lengths = [0, 1, headerLength - 1, headerLength + 1, headerLength + 8, (ulong)valid.Length, (ulong)valid.Length - 8, (ulong)valid.Length - 7, 100UL << 20, (100UL << 20) + 1, ulong.MaxValue, long.MaxValue, uint.MaxValue];
                return Assemble(lengths[random.Next(lengths.Length)], json, data);
            }

            case 1:
                return Assemble(headerLength, json, data.AsSpan(0, random.Next(data.Length + 1)).ToArray());
            case 2:
                return Assemble(headerLength, json, [.. data, .. new byte[random.Next(1, 64)]]);
            case 3:
                return ByteMutator.Edit(valid, seeds, random, random.Next(1, 4));
            default:
            {
                byte[] mutated = JsonMutator.MutateText(json, random);
                ulong length = random.Next(5) == 0 ? headerLength : (ulong)mutated.Length;
                return Assemble(length, mutated, data);
            }
        }
    }

    public static byte[] Assemble(ulong headerLength, ReadOnlySpan<byte> json, ReadOnlySpan<byte> data)
    {
        var file = new byte[8 + json.Length + data.Length];
        BinaryPrimitives.WriteUInt64LittleEndian(file, headerLength);
        json.CopyTo(file.AsSpan(8));
        data.CopyTo(file.AsSpan(8 + json.Length));
        return file;
    }
}
