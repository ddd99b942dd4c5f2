using System.Buffers.Binary;
using System.Globalization;
using System.Runtime.InteropServices;
using MessagePack;
using MoECluster.Model.Dispatch;

namespace MoECluster.Wire;

/// <summary>
/// Serialization and validation of the router ↔ shard messages. Incoming bytes are untrusted: they are
/// size-bounded first, then walked once for nesting depth, truncation and trailing bytes (without
/// materializing anything), then deserialized with <see cref="MessagePackSecurity.UntrustedData"/>,
/// and every size, count and id is checked before anything indexes with it. Every refusal is a
/// <see cref="WireFormatException"/> naming the field and what was expected.
/// </summary>
public static class WireFormat
{
    /// <summary>
    /// The wire version of <see cref="ShardRequest"/> and <see cref="ShardResponse"/>. 2: a shard is a set of experts
    /// (<see cref="ShardRequest.ShardExperts"/>); 1 carried a contiguous range at keys 3 and 4, now reserved. A message
    /// of another version is refused with an error naming both: every silo of a cluster must run the same version.
    /// </summary>
    public const int Version = 2;

    /// <summary>Deepest object graph accepted. The messages nest two levels; anything far deeper is hostile.</summary>
    public const int MaxObjectGraphDepth = 16;

    /// <summary>
    /// Structural checks only, for what a sender builds: sizes limited by nothing but the format itself.
    /// Expert ids are uint16, so every id fits [0, 65536).
    /// </summary>
    private static readonly WireLimits FormatOnly = new(int.MaxValue, int.MaxValue, int.MaxValue, 1 << 16, 255);

    /// <summary>64-bit words of a bitset with one bit per uint16 expert id (8 KiB).</summary>
    private const int BitsetWords = (ushort.MaxValue + 1) / 64;

    /// <summary>How many runs of consecutive ids an error message lists of a shard's expert set.</summary>
    private const int DescribedRuns = 8;

    /// <summary>Standard resolver, untrusted-data security, bounded depth, no compression.</summary>
    public static MessagePackSerializerOptions Options { get; } = MessagePackSerializerOptions.Standard
        .WithSecurity(MessagePackSecurity.UntrustedData.WithMaximumObjectGraphDepth(MaxObjectGraphDepth));

    public static byte[] Serialize<T>(T message) => MessagePackSerializer.Serialize(message, Options);

    /// <summary>Bounds, deserializes and validates a <see cref="ShardRequest"/> from the network.</summary>
    /// <exception cref="WireFormatException">Anything about the bytes is wrong.</exception>
    public static ShardRequest DecodeRequest(ReadOnlyMemory<byte> bytes, WireLimits limits)
    {
        ArgumentNullException.ThrowIfNull(limits);
        ShardRequest? request = Deserialize<ShardRequest>(bytes, limits);
        ValidateRequest(request, limits);
        return request;
    }

    /// <summary>
    /// Bounds, deserializes and validates a <see cref="ShardResponse"/> answering a request of
    /// <paramref name="expectedRows"/> rows of <paramref name="expectedWidth"/>.
    /// </summary>
    /// <exception cref="WireFormatException">Anything about the bytes is wrong.</exception>
    public static ShardResponse DecodeResponse(ReadOnlyMemory<byte> bytes, WireLimits limits, int expectedRows, int expectedWidth)
    {
        ArgumentNullException.ThrowIfNull(limits);
        ArgumentOutOfRangeException.ThrowIfLessThan(expectedRows, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(expectedWidth, 1);
        ShardResponse? response = Deserialize<ShardResponse>(bytes, limits);
        ValidateResponse(response, limits, expectedRows, expectedWidth);
        return response;
    }

    /// <summary>Checks a deserialized request against the wire contract and <paramref name="limits"/>.</summary>
    /// <exception cref="WireFormatException">The first violation found, naming the field.</exception>
    public static void ValidateRequest([System.Diagnostics.CodeAnalysis.NotNull] ShardRequest? request, WireLimits limits)
    {
        ArgumentNullException.ThrowIfNull(limits);
        if (request is null)
        {
            throw new WireFormatException("ShardRequest is nil.");
        }

        CheckVersion("ShardRequest", request.Version);
        if (string.IsNullOrEmpty(request.Model))
        {
            throw new WireFormatException("ShardRequest.Model is missing (nil or empty).");
        }

        if (request.Layer < 0)
        {
            throw new WireFormatException(Invariant($"ShardRequest.Layer: expected >= 0, got {request.Layer}."));
        }

        byte[] shardExperts = ValidateShardExperts(request.ShardExperts, limits);
        int rows = ValidateBlock("ShardRequest.Rows", request.Rows, limits);
        if (!WireDTypes.IsDefined(request.ResponseDType))
        {
            throw new WireFormatException(
                $"ShardRequest.ResponseDType: {WireDTypes.Describe(request.ResponseDType)} (expected {WireCodecs.IdList}).");
        }

        byte[]? counts = request.PairCounts;
        if (counts is null || counts.Length != rows)
        {
            throw new WireFormatException(Invariant(
                $"ShardRequest.PairCounts: expected {rows} entries (one per row), got {Length(counts)}."));
        }

        long total = 0;
        for (int row = 0; row < counts.Length; row++)
        {
            if (counts[row] < 1 || counts[row] > limits.MaxPairsPerRow)
            {
                throw new WireFormatException(Invariant(
                    $"ShardRequest.PairCounts[{row}] = {counts[row]}: expected 1..{Math.Min(limits.MaxPairsPerRow, 255)} pairs per row."));
            }

            total += counts[row];
        }

        byte[]? experts = request.Experts;
        if (experts is null || experts.LongLength != checked(2 * total))
        {
            throw new WireFormatException(Invariant(
                $"ShardRequest.Experts: expected {2 * total} bytes ({total} uint16 ids, the sum of PairCounts), got {Length(experts)}."));
        }

        byte[]? weights = request.Weights;
        if (weights is null || weights.LongLength != checked(4 * total))
        {
            throw new WireFormatException(Invariant(
                $"ShardRequest.Weights: expected {4 * total} bytes ({total} float32 weights, the sum of PairCounts), got {Length(weights)}."));
        }

        // One bit per possible uint16 expert id (8 KiB on the stack each): the shard's experts, and the experts of the
        // row being checked (set while the row is checked and cleared after it). O(1) per pair whatever the row and set
        // sizes, and nothing allocated: the set's size is the sender's choice.
        Span<ulong> inShard = stackalloc ulong[BitsetWords];
        inShard.Clear();
        for (int i = 0; i < shardExperts.Length; i += 2)
        {
            int id = BinaryPrimitives.ReadUInt16LittleEndian(shardExperts.AsSpan(i));
            inShard[id >> 6] |= 1UL << (id & 63);
        }

        Span<ulong> seen = stackalloc ulong[BitsetWords];
        seen.Clear();
        int k = 0;
        for (int row = 0; row < counts.Length; row++)
        {
            int rowStart = k;
            for (int end = k + counts[row]; k < end; k++)
            {
                float weight = BinaryPrimitives.ReadSingleLittleEndian(weights.AsSpan(k * 4));
                if (!float.IsFinite(weight))
                {
                    throw new WireFormatException(Invariant(
                        $"ShardRequest.Weights[{k}] (row {row}) is {weight}: combine weights must be finite."));
                }

                int expert = BinaryPrimitives.ReadUInt16LittleEndian(experts.AsSpan(k * 2));
                ulong bit = 1UL << (expert & 63);
                if ((inShard[expert >> 6] & bit) == 0)
                {
                    throw new WireFormatException(Invariant(
                        $"ShardRequest.Experts[{k}] (row {row}): expert {expert} is not one of this shard's experts (ShardExperts: {DescribeExperts(shardExperts)})."));
                }

                if ((seen[expert >> 6] & bit) != 0)
                {
                    throw new WireFormatException(Invariant(
                        $"ShardRequest.Experts[{k}]: duplicate expert {expert} in row {row} (each expert at most once per row)."));
                }

                seen[expert >> 6] |= bit;
            }

            for (int j = rowStart; j < k; j++)
            {
                seen[BinaryPrimitives.ReadUInt16LittleEndian(experts.AsSpan(j * 2)) >> 6] = 0;
            }
        }
    }

    /// <summary>
    /// Checks <see cref="ShardRequest.ShardExperts"/>: present, whole uint16 ids, 1..<see cref="WireLimits.MaxExperts"/>
    /// of them, each below it, strictly ascending. Returns the bytes.
    /// </summary>
    private static byte[] ValidateShardExperts(byte[]? ids, WireLimits limits)
    {
        if (ids is null || ids.Length == 0)
        {
            throw new WireFormatException(Invariant(
                $"ShardRequest.ShardExperts is missing ({(ids is null ? "nil" : "empty")}): expected the shard's expert ids, 1..{limits.MaxExperts} uint16, strictly ascending."));
        }

        if (ids.Length % 2 != 0)
        {
            throw new WireFormatException(Invariant(
                $"ShardRequest.ShardExperts: {ids.Length} bytes is not a whole number of uint16 ids (2 bytes each)."));
        }

        if (ids.Length / 2 > limits.MaxExperts)
        {
            throw new WireFormatException(Invariant(
                $"ShardRequest.ShardExperts: {ids.Length / 2} ids, more than MaxExperts ({limits.MaxExperts})."));
        }

        int previous = -1;
        for (int i = 0; i < ids.Length / 2; i++)
        {
            int id = BinaryPrimitives.ReadUInt16LittleEndian(ids.AsSpan(i * 2));
            if (id >= limits.MaxExperts)
            {
                throw new WireFormatException(Invariant(
                    $"ShardRequest.ShardExperts[{i}]: expert {id} is not below MaxExperts ({limits.MaxExperts})."));
            }

            if (id == previous)
            {
                throw new WireFormatException(Invariant(
                    $"ShardRequest.ShardExperts[{i}]: duplicate expert {id} (the ids must be strictly ascending)."));
            }

            if (id < previous)
            {
                throw new WireFormatException(Invariant(
                    $"ShardRequest.ShardExperts[{i}]: expert {id} follows {previous} (the ids must be strictly ascending)."));
            }

            previous = id;
        }

        return ids;
    }

    /// <summary>
    /// A shard's expert set for an error message: its size and its runs ("16 ids: 16..31", "3 ids: 3, 17, 40"), the
    /// first <see cref="DescribedRuns"/> runs only. Only called to throw: the one allocation is the message's.
    /// </summary>
    private static string DescribeExperts(byte[] ids)
    {
        int count = ids.Length / 2;
        var text = new System.Text.StringBuilder();
        text.Append(count.ToString(CultureInfo.InvariantCulture)).Append(count == 1 ? " id: " : " ids: ");
        int runs = 0;
        for (int i = 0; i < count;)
        {
            int start = BinaryPrimitives.ReadUInt16LittleEndian(ids.AsSpan(i * 2));
            int end = start;
            int j = i + 1;
            while (j < count && BinaryPrimitives.ReadUInt16LittleEndian(ids.AsSpan(j * 2)) == end + 1)
            {
                end++;
                j++;
            }

            if (runs == DescribedRuns)
            {
                text.Append(", ...");
                break;
            }

            text.Append(runs == 0 ? "" : ", ").Append(start.ToString(CultureInfo.InvariantCulture));
            if (end > start)
            {
                text.Append(end == start + 1 ? ", " : "..").Append(end.ToString(CultureInfo.InvariantCulture));
            }

            runs++;
            i = j;
        }

        return text.ToString();
    }

    /// <summary>Checks a deserialized response against the wire contract, <paramref name="limits"/> and the request's shape.</summary>
    /// <exception cref="WireFormatException">The first violation found, naming the field.</exception>
    public static void ValidateResponse(
        [System.Diagnostics.CodeAnalysis.NotNull] ShardResponse? response, WireLimits limits, int expectedRows, int expectedWidth)
    {
        ArgumentNullException.ThrowIfNull(limits);
        if (response is null)
        {
            throw new WireFormatException("ShardResponse is nil.");
        }

        CheckVersion("ShardResponse", response.Version);
        ValidateBlock("ShardResponse.Partials", response.Partials, limits);
        if (response.Partials.Rows != expectedRows || response.Partials.Width != expectedWidth)
        {
            throw new WireFormatException(Invariant(
                $"ShardResponse.Partials: expected shape [{expectedRows}, {expectedWidth}] (the request's), got [{response.Partials.Rows}, {response.Partials.Width}]."));
        }

        if (response.Silo is null)
        {
            throw new WireFormatException("ShardResponse.Silo is missing (nil).");
        }

        if (response.ComputeMicroseconds < 0)
        {
            throw new WireFormatException(Invariant(
                $"ShardResponse.ComputeMicroseconds: expected >= 0, got {response.ComputeMicroseconds}."));
        }
    }

    /// <summary>
    /// Builds a request a receiver will accept (limits aside) for the shard of <paramref name="shardExperts"/> (its
    /// global expert ids, strictly ascending): encodes the rows ([<see cref="RoutedPairs.Rows"/>,
    /// <paramref name="width"/>]) in <paramref name="dtype"/> and the pairs as the wire carries them (a byte count per
    /// row, uint16 and float32 little-endian arrays).
    /// </summary>
    /// <exception cref="ArgumentException">The arguments do not make a valid request (the message says why).</exception>
    public static ShardRequest BuildRequest(
        string model,
        int layer,
        IReadOnlyList<int> shardExperts,
        ReadOnlySpan<float> rows,
        int width,
        WireDType dtype,
        RoutedPairs pairs,
        WireDType responseDType,
        long requestId)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(pairs);
        ArgumentNullException.ThrowIfNull(shardExperts);
        ReadOnlySpan<int> shardIds = shardExperts switch
        {
            ExpertSet set => set.AsSpan(),
            int[] array => array,
            _ => shardExperts.ToArray(),
        };
        byte[] shardBytes = Uint16Ids(shardIds, "shard expert", "index", nameof(shardExperts));

        int rowCount = pairs.Rows;
        if (rowCount < 0 || pairs.Offsets[0] != 0 || pairs.Offsets[rowCount] != pairs.Experts.Length || pairs.Weights.Length != pairs.Experts.Length)
        {
            throw new ArgumentException(Invariant(
                $"the pairs' offsets run from {pairs.Offsets[0]} to {pairs.Offsets[^1]} over {pairs.Experts.Length} experts and {pairs.Weights.Length} weights."), nameof(pairs));
        }

        var pairCounts = new byte[rowCount];
        var weightBytes = new byte[pairs.Weights.Length * 4];
        for (int r = 0; r < rowCount; r++)
        {
            int count = pairs.CountOf(r);
            if (count is < 0 or > byte.MaxValue)
            {
                throw new ArgumentException(Invariant($"row {r} has {count} pairs; the wire carries 1..255 per row."), nameof(pairs));
            }

            pairCounts[r] = (byte)count;
        }

        byte[] expertBytes = Uint16Ids(pairs.Experts, "expert", "pair", nameof(pairs));

        if (BitConverter.IsLittleEndian)
        {
            MemoryMarshal.AsBytes(pairs.Weights.AsSpan()).CopyTo(weightBytes);
        }
        else
        {
            for (int i = 0; i < pairs.Weights.Length; i++)
            {
                BinaryPrimitives.WriteSingleLittleEndian(weightBytes.AsSpan(i * 4), pairs.Weights[i]);
            }
        }

        var request = new ShardRequest
        {
            Version = Version,
            Model = model,
            Layer = layer,
            Rows = ActivationBlock.Encode(rows, rowCount, width, dtype),
            PairCounts = pairCounts,
            Experts = expertBytes,
            Weights = weightBytes,
            ResponseDType = responseDType,
            RequestId = requestId,
            ShardExperts = shardBytes,
        };

        try
        {
            ValidateRequest(request, FormatOnly);
        }
        catch (WireFormatException ex)
        {
            throw new ArgumentException($"The request would be refused by its receiver: {ex.Message}", ex);
        }

        return request;
    }

    /// <summary>
    /// The (expert, weight) pairs of a request, one row per row of <see cref="ShardRequest.Rows"/>: what
    /// <see cref="BuildRequest"/> was given. Validate the request first (<see cref="DecodeRequest"/> does).
    /// </summary>
    /// <exception cref="WireFormatException">The pair fields do not describe the same pairs.</exception>
    public static RoutedPairs ReadPairs(ShardRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        byte[] counts = request.PairCounts ?? throw new WireFormatException("ShardRequest.PairCounts is missing (nil).");
        byte[] expertBytes = request.Experts ?? throw new WireFormatException("ShardRequest.Experts is missing (nil).");
        byte[] weightBytes = request.Weights ?? throw new WireFormatException("ShardRequest.Weights is missing (nil).");
        int total = expertBytes.Length / 2;
        if (expertBytes.Length != 2 * total || weightBytes.LongLength != 4L * total)
        {
            throw new WireFormatException(Invariant(
                $"ShardRequest pairs: {expertBytes.Length} expert bytes and {weightBytes.Length} weight bytes do not describe the same number of pairs."));
        }

        var offsets = new int[counts.Length + 1];
        for (int r = 0; r < counts.Length; r++)
        {
            offsets[r + 1] = offsets[r] + counts[r];
        }

        if (offsets[^1] != total)
        {
            throw new WireFormatException(Invariant(
                $"ShardRequest.PairCounts sum to {offsets[^1]}, but the request carries {total} (expert, weight) pairs."));
        }

        var experts = new int[total];
        var weights = new float[total];
        for (int i = 0; i < total; i++)
        {
            experts[i] = BinaryPrimitives.ReadUInt16LittleEndian(expertBytes.AsSpan(i * 2));
        }

        if (BitConverter.IsLittleEndian)
        {
            MemoryMarshal.Cast<byte, float>(weightBytes).CopyTo(weights);
        }
        else
        {
            for (int i = 0; i < total; i++)
            {
                weights[i] = BinaryPrimitives.ReadSingleLittleEndian(weightBytes.AsSpan(i * 4));
            }
        }

        return new RoutedPairs(offsets, experts, weights);
    }

    /// <summary>Expert ids as the wire carries them, uint16 little-endian; an id outside uint16 is refused as "{what} {id} ({position} {i})".</summary>
    private static byte[] Uint16Ids(ReadOnlySpan<int> ids, string what, string position, string paramName)
    {
        var bytes = new byte[ids.Length * 2];
        for (int i = 0; i < ids.Length; i++)
        {
            int expert = ids[i];
            if (expert is < 0 or > ushort.MaxValue)
            {
                throw new ArgumentException(Invariant($"{what} {expert} ({position} {i}) is not a uint16 id."), paramName);
            }

            BinaryPrimitives.WriteUInt16LittleEndian(bytes.AsSpan(i * 2), (ushort)expert);
        }

        return bytes;
    }

    /// <summary>
    /// The global expert ids of the shard a request addresses (<see cref="ShardRequest.ShardExperts"/>), ascending:
    /// what <see cref="BuildRequest"/> was given. Validate the request first (<see cref="DecodeRequest"/> does).
    /// </summary>
    /// <exception cref="WireFormatException">The field is missing or not a whole number of uint16 ids.</exception>
    public static int[] ReadShardExperts(ShardRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        byte[] bytes = request.ShardExperts ?? throw new WireFormatException("ShardRequest.ShardExperts is missing (nil).");
        if (bytes.Length % 2 != 0)
        {
            throw new WireFormatException(Invariant(
                $"ShardRequest.ShardExperts: {bytes.Length} bytes is not a whole number of uint16 ids (2 bytes each)."));
        }

        var ids = new int[bytes.Length / 2];
        for (int i = 0; i < ids.Length; i++)
        {
            ids[i] = BinaryPrimitives.ReadUInt16LittleEndian(bytes.AsSpan(i * 2));
        }

        return ids;
    }

    internal static T? Deserialize<T>(ReadOnlyMemory<byte> bytes, WireLimits limits)
        where T : class
    {
        string name = typeof(T).Name;
        if (bytes.Length > limits.MaxMessageBytes)
        {
            throw new WireFormatException(Invariant(
                $"{name}: message of {bytes.Length} bytes exceeds MaxMessageBytes ({limits.MaxMessageBytes}); refused before deserializing."));
        }

        CheckStructure(name, bytes);
        T? message;
        int read;
        try
        {
            message = MessagePackSerializer.Deserialize<T>(bytes, Options, out read);
        }
        catch (MessagePackSerializationException ex)
        {
            throw new WireFormatException(Invariant($"{name}: malformed MessagePack ({bytes.Length} bytes): {Describe(ex)}"), ex);
        }

        if (read != bytes.Length)
        {
            throw new WireFormatException(Invariant(
                $"{name}: {bytes.Length - read} trailing bytes after a {read}-byte message."));
        }

        return message;
    }

    /// <summary>
    /// Walks the MessagePack structure without materializing anything (bins and strings are stepped over by
    /// length) and refuses nesting deeper than <see cref="MaxObjectGraphDepth"/>, truncation, trailing bytes and a
    /// key that appears twice in one map. MessagePack's own depth limit covers only what its formatters read: values it
    /// skips (unknown trailing fields) are skipped at any depth, so a deeply nested extra field would otherwise pass;
    /// and its formatters take the last of two equal keys, where the JSON parser refuses them — so two messages that
    /// read differently to different readers (a smuggling trick) are refused here. Keys compare by value: a string
    /// by its UTF-8 bytes (whatever str header encodes it), an integer by its value.
    /// </summary>
    private static void CheckStructure(string name, ReadOnlyMemory<byte> bytes)
    {
        var reader = new MessagePackReader(bytes);
        Span<long> remaining = stackalloc long[MaxObjectGraphDepth + 1];
        Span<bool> isMap = stackalloc bool[MaxObjectGraphDepth + 1];
        HashSet<string>?[]? keys = null;
        int depth = 0;
        remaining[0] = 1;
        try
        {
            while (true)
            {
                while (depth > 0 && remaining[depth] == 0)
                {
                    depth--;
                }

                if (remaining[depth] == 0)
                {
                    break;
                }

                remaining[depth]--;
                if (isMap[depth] && remaining[depth] % 2 == 1 && KeyIdentity(ref reader) is string key)
                {
                    // A map's items alternate key, value; the key just read is a scalar.
                    keys ??= new HashSet<string>?[MaxObjectGraphDepth + 1];
                    if (!(keys[depth] ??= new HashSet<string>(StringComparer.Ordinal)).Add(key))
                    {
                        throw new WireFormatException(Invariant(
                            $"{name}: duplicate key {ShowKey(key)} in a map (before byte {reader.Consumed}): one key, one value."));
                    }

                    continue;
                }

                long items;
                bool map = false;
                switch (reader.NextMessagePackType)
                {
                    case MessagePackType.Array:
                        items = reader.ReadArrayHeader();
                        break;
                    case MessagePackType.Map:
                        items = 2L * reader.ReadMapHeader();
                        map = true;
                        break;
                    default:
                        reader.Skip();
                        continue;
                }

                if (depth == MaxObjectGraphDepth)
                {
                    throw new WireFormatException(Invariant(
                        $"{name}: nesting deeper than the maximum object graph depth ({MaxObjectGraphDepth}) at byte {reader.Consumed}."));
                }

                remaining[++depth] = items;
                isMap[depth] = map;
                if (keys is not null)
                {
                    keys[depth]?.Clear();
                }
            }
        }
        catch (Exception ex) when (ex is not WireFormatException)
        {
            // The reader's refusals of bad input are not all MessagePackSerializationException (a bin longer than the
            // buffer, for one, is an ArgumentOutOfRangeException from its skip); its only input is the untrusted bytes.
            throw new WireFormatException(Invariant($"{name}: malformed MessagePack ({bytes.Length} bytes): {Describe(ex)}"), ex);
        }

        if (!reader.End)
        {
            throw new WireFormatException(Invariant(
                $"{name}: {bytes.Length - reader.Consumed} trailing bytes after a {reader.Consumed}-byte message."));
        }
    }

    /// <summary>
    /// Reads a scalar map key and returns what identifies it ("s" + hex of a string's UTF-8 bytes, "i" + an integer's
    /// value, "r" + hex of any other scalar's encoding); null, with nothing read, for an array or map key, which the
    /// walk then descends into as usual (so its depth is checked).
    /// </summary>
    private static string? KeyIdentity(ref MessagePackReader reader)
    {
        switch (reader.NextMessagePackType)
        {
            case MessagePackType.String:
                var text = reader.ReadStringSequence();
                return text is { } sequence ? "s" + Convert.ToHexString(System.Buffers.BuffersExtensions.ToArray(sequence)) : "n";
            case MessagePackType.Integer:
                return reader.NextCode == MessagePackCode.UInt64 ? "i" + reader.ReadUInt64().ToString(CultureInfo.InvariantCulture) : "i" + reader.ReadInt64().ToString(CultureInfo.InvariantCulture);
            case MessagePackType.Array:
            case MessagePackType.Map:
                return null;
            default:
                var start = reader.Position;
                reader.Skip();
                return "r" + Convert.ToHexString(System.Buffers.BuffersExtensions.ToArray(reader.Sequence.Slice(start, reader.Position)));
        }
    }

    /// <summary>A key identity as the error shows it: a string in quotes (at most 64 characters), else its value or encoding.</summary>
    private static string ShowKey(string key)
    {
        if (key[0] == 's')
        {
            string text = System.Text.Encoding.UTF8.GetString(Convert.FromHexString(key.AsSpan(1)));
            return "'" + (text.Length <= 64 ? text : text[..64] + "...") + "'";
        }

        string value = key[1..];
        return value.Length <= 64 ? value : value[..64] + "...";
    }

    /// <summary>Validates an activation block's dtype, shape and data length; returns its row count.</summary>
    internal static int ValidateBlock(string field, [System.Diagnostics.CodeAnalysis.NotNull] ActivationBlock? block, WireLimits limits)
    {
        if (block is null)
        {
            throw new WireFormatException($"{field} is missing (nil).");
        }

        if (!WireCodecs.TryGet(block.DType, out IWireCodec? codec))
        {
            throw new WireFormatException($"{field}.DType: {WireCodecs.Describe(block.DType)} (expected {WireCodecs.IdList}).");
        }

        if (block.Rows < 1 || block.Rows > limits.MaxRows)
        {
            throw new WireFormatException(Invariant($"{field}.Rows: expected 1..{limits.MaxRows}, got {block.Rows}."));
        }

        if (block.Width < 1 || block.Width > limits.MaxWidth)
        {
            throw new WireFormatException(Invariant($"{field}.Width: expected 1..{limits.MaxWidth}, got {block.Width}."));
        }

        long elements = checked((long)block.Rows * block.Width);
        long bytes = codec.PayloadBytes(block.Rows, block.Width);
        if (elements > Array.MaxLength || bytes > Array.MaxLength)
        {
            throw new WireFormatException(Invariant(
                $"{field}: Rows*Width = {block.Rows}*{block.Width} = {elements} elements ({bytes} bytes) overflows the largest block one message can carry ({Array.MaxLength} bytes)."));
        }

        if (block.Data is null || block.Data.LongLength != bytes)
        {
            throw new WireFormatException(Invariant(
                $"{field}.Data: expected {bytes} bytes ({block.Rows}x{block.Width} {codec.Name}), got {Length(block.Data)}."));
        }

        return block.Rows;
    }

    private static void CheckVersion(string message, int version)
    {
        if (version != Version)
        {
            throw new WireFormatException(Invariant(
                $"{message}.Version: expected {Version}, got {version} (the sender speaks MoECluster wire version {version}; every silo of a cluster must run the same version)."));
        }
    }

    private static string Length(byte[]? bytes) =>
        bytes is null ? "nil" : bytes.Length.ToString(CultureInfo.InvariantCulture);

    /// <summary>The chain of messages down to the root cause (MessagePack wraps the useful one).</summary>
    private static string Describe(Exception ex)
    {
        var parts = new List<string>();
        for (Exception? e = ex; e is not null && parts.Count < 4; e = e.InnerException)
        {
            parts.Add(e.Message);
        }

        return string.Join(" → ", parts);
    }

    private static string Invariant(FormattableString text) => text.ToString(CultureInfo.InvariantCulture);
}
