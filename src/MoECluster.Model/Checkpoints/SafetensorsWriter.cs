using System.Buffers;
using System.Buffers.Binary;
using System.Globalization;
using System.Text.Json;

namespace MoECluster.Model.Checkpoints;

/// <summary>
/// Writes safetensors files: header (tensors in the given order, padded with spaces so the data starts 8-byte
/// aligned), then each tensor's data, streamed through a callback. Files are written to <c>path + ".tmp"</c> and
/// renamed into place once complete.
/// </summary>
public static class SafetensorsWriter
{
    private const string ShardIndexFileName = CheckpointTensors.IndexFileName;
    private const int FileBufferBytes = 1 << 20;

    /// <summary>
    /// Writes <paramref name="specs"/> to <paramref name="path"/>, calling <paramref name="writeData"/> once per spec,
    /// in order, with a stream that must receive exactly <see cref="TensorSpec.ByteLength"/> bytes.
    /// </summary>
    public static void Write(
        string path,
        IReadOnlyList<TensorSpec> specs,
        Action<TensorSpec, Stream> writeData,
        IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentNullException.ThrowIfNull(specs);
        ArgumentNullException.ThrowIfNull(writeData);
        byte[] header = BuildHeader(specs, metadata);

        WriteAtomically(path, stream =>
        {
            Span<byte> prefix = stackalloc byte[sizeof(ulong)];
            BinaryPrimitives.WriteUInt64LittleEndian(prefix, (ulong)header.Length);
            stream.Write(prefix);
            stream.Write(header);
            foreach (TensorSpec spec in specs)
            {
                long expected = spec.ByteLength;
                using var counting = new ExactLengthStream(stream, spec, expected);
                writeData(spec, counting);
                if (counting.Written != expected)
                {
                    throw new InvalidOperationException(string.Create(
                        CultureInfo.InvariantCulture,
                        $"The data callback wrote {counting.Written} bytes for tensor '{spec.Name}', but it needs exactly {expected} bytes."));
                }
            }
        });
    }

    /// <summary>Writes in-memory tensors; each Data must be exactly its spec's byte length.</summary>
    public static void Write(
        string path,
        IReadOnlyList<(TensorSpec Spec, ReadOnlyMemory<byte> Data)> tensors,
        IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        var data = new Dictionary<TensorSpec, ReadOnlyMemory<byte>>(ReferenceEqualityComparer.Instance);
        var specs = new TensorSpec[tensors.Count];
        for (int i = 0; i < tensors.Count; i++)
        {
            (TensorSpec spec, ReadOnlyMemory<byte> bytes) = tensors[i];
            ArgumentNullException.ThrowIfNull(spec);
            if (bytes.Length != spec.ByteLength)
            {
                throw new ArgumentException(
                    string.Create(CultureInfo.InvariantCulture, $"Tensor '{spec.Name}' has {bytes.Length} data bytes, but its spec needs {spec.ByteLength}."),
                    nameof(tensors));
            }

            specs[i] = spec;
            data[spec] = bytes;
        }

        Write(path, specs, (spec, stream) => stream.Write(data[spec].Span), metadata);
    }

    /// <summary>
    /// Writes <paramref name="specs"/> into shards <c>model-00001-of-0000K.safetensors</c> of at most
    /// <paramref name="maxShardBytes"/> data bytes each (a larger tensor gets a shard of its own), in order, plus
    /// <c>model.safetensors.index.json</c>.
    /// </summary>
    public static void WriteSharded(string directory, IReadOnlyList<TensorSpec> specs, Action<TensorSpec, Stream> writeData, long maxShardBytes)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        ArgumentNullException.ThrowIfNull(specs);
        ArgumentNullException.ThrowIfNull(writeData);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxShardBytes);
        ValidateSpecs(specs);

        var shards = new List<List<TensorSpec>>();
        long current = 0;
        long total = 0;
        foreach (TensorSpec spec in specs)
        {
            long bytes = spec.ByteLength;
            if (shards.Count == 0 || (shards[^1].Count > 0 && current + bytes > maxShardBytes))
            {
                shards.Add([]);
                current = 0;
            }

            shards[^1].Add(spec);
            current += bytes;
            total += bytes;
        }

        if (shards.Count == 0)
        {
            shards.Add([]);
        }

        Directory.CreateDirectory(directory);
        var weightMap = new List<(string Tensor, string Shard)>(specs.Count);
        for (int i = 0; i < shards.Count; i++)
        {
            string fileName = string.Create(CultureInfo.InvariantCulture, $"model-{i + 1:D5}-of-{shards.Count:D5}.safetensors");
            Write(Path.Combine(directory, fileName), shards[i], writeData);
            foreach (TensorSpec spec in shards[i])
            {
                weightMap.Add((spec.Name, fileName));
            }
        }

        var buffer = new ArrayBufferWriter<byte>();
        using (var json = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true }))
        {
            json.WriteStartObject();
            json.WriteStartObject("metadata");
            json.WriteNumber("total_size", total);
            json.WriteEndObject();
            json.WriteStartObject("weight_map");
            foreach ((string tensor, string shard) in weightMap)
            {
                json.WriteString(tensor, shard);
            }

            json.WriteEndObject();
            json.WriteEndObject();
        }

        WriteAtomically(Path.Combine(directory, ShardIndexFileName), stream => stream.Write(buffer.WrittenSpan));
    }

    private static byte[] BuildHeader(IReadOnlyList<TensorSpec> specs, IReadOnlyDictionary<string, string>? metadata)
    {
        ValidateSpecs(specs);
        var buffer = new ArrayBufferWriter<byte>();
        using (var json = new Utf8JsonWriter(buffer))
        {
            json.WriteStartObject();
            if (metadata is not null)
            {
                json.WriteStartObject(SafetensorsHeader.MetadataKey);
                foreach ((string key, string value) in metadata)
                {
                    ArgumentNullException.ThrowIfNull(value, nameof(metadata));
                    json.WriteString(key, value);
                }

                json.WriteEndObject();
            }

            long offset = 0;
            foreach (TensorSpec spec in specs)
            {
                long end = checked(offset + spec.ByteLength);
                json.WriteStartObject(spec.Name);
                json.WriteString("dtype", DTypes.ToSafetensorsName(spec.DType));
                json.WriteStartArray("shape");
                foreach (long dim in spec.Shape)
                {
                    json.WriteNumberValue(dim);
                }

                json.WriteEndArray();
                json.WriteStartArray("data_offsets");
                json.WriteNumberValue(offset);
                json.WriteNumberValue(end);
                json.WriteEndArray();
                json.WriteEndObject();
                offset = end;
            }

            json.WriteEndObject();
        }

        // Pad with spaces so that the data buffer (after the 8-byte prefix and the header) starts 8-byte aligned.
        int length = buffer.WrittenCount;
        int padded = (length + 7) & ~7;
        if (padded > SafetensorsHeader.MaxHeaderBytes)
        {
            throw new ArgumentException(
                string.Create(CultureInfo.InvariantCulture, $"The header would be {padded} bytes, over the 100 MiB limit."),
                nameof(specs));
        }

        byte[] header = new byte[padded];
        buffer.WrittenSpan.CopyTo(header);
        header.AsSpan(length).Fill((byte)' ');
        return header;
    }

    private static void ValidateSpecs(IReadOnlyList<TensorSpec> specs)
    {
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (TensorSpec spec in specs)
        {
            ArgumentNullException.ThrowIfNull(spec, nameof(specs));
            ArgumentNullException.ThrowIfNull(spec.Name, nameof(specs));
            if (spec.Name == SafetensorsHeader.MetadataKey)
            {
                throw new ArgumentException($"'{SafetensorsHeader.MetadataKey}' is reserved and cannot be a tensor name.", nameof(specs));
            }

            if (!names.Add(spec.Name))
            {
                throw new ArgumentException($"Duplicate tensor name '{spec.Name}'.", nameof(specs));
            }

            try
            {
                _ = spec.ByteLength;
            }
            catch (Exception ex) when (ex is ArgumentException or OverflowException)
            {
                throw new ArgumentException($"Tensor '{spec.Name}' has an invalid shape: {ex.Message}", nameof(specs), ex);
            }
        }
    }

    private static void WriteAtomically(string path, Action<Stream> write)
    {
        string fullPath = Path.GetFullPath(path);
        string temporary = fullPath + ".tmp";
        try
        {
            using (var stream = new FileStream(temporary, FileMode.Create, FileAccess.Write, FileShare.None, FileBufferBytes))
            {
                write(stream);
                stream.Flush(flushToDisk: true);
            }

            File.Move(temporary, fullPath, overwrite: true);
        }
        catch
        {
            File.Delete(temporary);
            throw;
        }
    }

    /// <summary>Forwards writes to the file, counting them and refusing any byte beyond the tensor's length.</summary>
    private sealed class ExactLengthStream(Stream inner, TensorSpec spec, long expected) : Stream
    {
        public long Written { get; private set; }

        public override bool CanRead => false;

        public override bool CanSeek => false;

        public override bool CanWrite => true;

        public override long Length => throw new NotSupportedException();

        public override long Position
        {
            get => Written;
            set => throw new NotSupportedException();
        }

        public override void Write(byte[] buffer, int offset, int count)
        {
            ValidateBufferArguments(buffer, offset, count);
            Write(buffer.AsSpan(offset, count));
        }

        public override void Write(ReadOnlySpan<byte> buffer)
        {
            if (Written + buffer.Length > expected)
            {
                throw new InvalidOperationException(string.Create(
                    CultureInfo.InvariantCulture,
                    $"The data callback for tensor '{spec.Name}' wrote more than its {expected} bytes."));
            }

            inner.Write(buffer);
            Written += buffer.Length;
        }

        public override void WriteByte(byte value) => Write([value]);

        public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken)
        {
            ValidateBufferArguments(buffer, offset, count);
            return WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();
        }

        public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
        {
            cancellationToken.ThrowIfCancellationRequested();
            Write(buffer.Span);
            return ValueTask.CompletedTask;
        }

        public override void Flush()
        {
        }

        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();
    }
}
