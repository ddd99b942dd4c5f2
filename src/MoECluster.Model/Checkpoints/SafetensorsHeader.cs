using System.Globalization;
using System.Text.Json;
using System.Text.Unicode;

namespace MoECluster.Model.Checkpoints;

/// <summary>The parsed and validated JSON header of a safetensors file.</summary>
internal sealed class SafetensorsHeader
{
    /// <summary>The format's limit on the JSON header size (100 MiB).</summary>
    public const long MaxHeaderBytes = 100L * 1024 * 1024;

    public const string MetadataKey = "__metadata__";

    private static readonly JsonReaderOptions ReaderOptions = new()
    {
        MaxDepth = 8,
        CommentHandling = JsonCommentHandling.Disallow,
        AllowTrailingCommas = false,
    };

    private SafetensorsHeader(IReadOnlyList<TensorInfo> tensors, IReadOnlyDictionary<string, string> metadata)
    {
        Tensors = tensors;
        Metadata = metadata;
    }

    public IReadOnlyList<TensorInfo> Tensors { get; }

    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>
    /// Parses <paramref name="header"/> and validates every entry against a data buffer of
    /// <paramref name="dataLength"/> bytes. Throws <see cref="SafetensorsFormatException"/> naming
    /// <paramref name="path"/> and the problem.
    /// </summary>
    public static SafetensorsHeader Parse(string path, ReadOnlySpan<byte> header, long dataLength)
    {
        if (!Utf8.IsValid(header))
        {
            throw new SafetensorsFormatException(path, "the JSON header is not valid UTF-8.");
        }

        List<RawEntry> entries;
        Dictionary<string, string> metadata;
        try
        {
            var reader = new Utf8JsonReader(header, ReaderOptions);
            (entries, metadata) = ReadRoot(path, ref reader);
        }
        catch (JsonException ex)
        {
            throw new SafetensorsFormatException(path, $"the header is not valid JSON: {ex.Message}", ex);
        }
        catch (InvalidOperationException ex)
        {
            throw new SafetensorsFormatException(path, $"the header is not valid JSON: {ex.Message}", ex);
        }

        var tensors = new List<TensorInfo>(entries.Count);
        foreach (RawEntry entry in entries)
        {
            tensors.Add(Validate(path, entry, dataLength));
        }

        CheckNoOverlap(path, tensors);
        return new SafetensorsHeader(tensors.AsReadOnly(), metadata.AsReadOnly());
    }

    private static (List<RawEntry> Entries, Dictionary<string, string> Metadata) ReadRoot(string path, ref Utf8JsonReader reader)
    {
        if (!reader.Read())
        {
            throw new SafetensorsFormatException(path, "the JSON header is empty.");
        }

        if (reader.TokenType != JsonTokenType.StartObject)
        {
            throw new SafetensorsFormatException(path, $"the JSON header must be an object, but it starts with {Describe(reader.TokenType)}.");
        }

        var entries = new List<RawEntry>();
        var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        while (true)
        {
            Next(path, ref reader);
            if (reader.TokenType == JsonTokenType.EndObject)
            {
                break;
            }

            string name = reader.GetString()!;
            if (!seen.Add(name))
            {
                throw new SafetensorsFormatException(
                    path,
                    name == MetadataKey ? "duplicate \"__metadata__\" entry in the header." : $"duplicate tensor name '{name}' in the header.");
            }

            Next(path, ref reader);
            if (name == MetadataKey)
            {
                ReadMetadata(path, ref reader, metadata);
            }
            else
            {
                entries.Add(ReadEntry(path, name, ref reader));
            }
        }

        if (reader.Read())
        {
            throw new SafetensorsFormatException(path, "unexpected content after the JSON header object.");
        }

        return (entries, metadata);
    }

    private static void ReadMetadata(string path, ref Utf8JsonReader reader, Dictionary<string, string> metadata)
    {
        if (reader.TokenType == JsonTokenType.Null)
        {
            return;
        }

        if (reader.TokenType != JsonTokenType.StartObject)
        {
            throw new SafetensorsFormatException(path, $"\"__metadata__\" must be an object mapping strings to strings, but it is {Describe(reader.TokenType)}.");
        }

        while (true)
        {
            Next(path, ref reader);
            if (reader.TokenType == JsonTokenType.EndObject)
            {
                return;
            }

            string key = reader.GetString()!;
            Next(path, ref reader);
            if (reader.TokenType != JsonTokenType.String)
            {
                throw new SafetensorsFormatException(path, $"\"__metadata__\" value for key '{key}' must be a string, but it is {Describe(reader.TokenType)}.");
            }

            if (!metadata.TryAdd(key, reader.GetString()!))
            {
                throw new SafetensorsFormatException(path, $"duplicate key '{key}' in \"__metadata__\".");
            }
        }
    }

    private static RawEntry ReadEntry(string path, string name, ref Utf8JsonReader reader)
    {
        if (reader.TokenType != JsonTokenType.StartObject)
        {
            throw new SafetensorsFormatException(path, $"tensor '{name}': entry must be an object with dtype, shape and data_offsets, but it is {Describe(reader.TokenType)}.");
        }

        string? dtype = null;
        List<long>? shape = null;
        List<long>? offsets = null;
        while (true)
        {
            Next(path, ref reader);
            if (reader.TokenType == JsonTokenType.EndObject)
            {
                break;
            }

            string key = reader.GetString()!;
            Next(path, ref reader);
            switch (key)
            {
                case "dtype":
                    if (dtype is not null)
                    {
                        throw Duplicate(path, name, key);
                    }

                    if (reader.TokenType != JsonTokenType.String)
                    {
                        throw new SafetensorsFormatException(path, $"tensor '{name}': dtype must be a string, but it is {Describe(reader.TokenType)}.");
                    }

                    dtype = reader.GetString()!;
                    break;
                case "shape":
                    if (shape is not null)
                    {
                        throw Duplicate(path, name, key);
                    }

                    shape = ReadIntegerArray(path, name, key, ref reader);
                    break;
                case "data_offsets":
                    if (offsets is not null)
                    {
                        throw Duplicate(path, name, key);
                    }

                    offsets = ReadIntegerArray(path, name, key, ref reader);
                    break;
                default:
                    throw new SafetensorsFormatException(path, $"tensor '{name}': unexpected key '{key}' (expected dtype, shape, data_offsets).");
            }
        }

        if (dtype is null)
        {
            throw Missing(path, name, "dtype");
        }

        if (shape is null)
        {
            throw Missing(path, name, "shape");
        }

        if (offsets is null)
        {
            throw Missing(path, name, "data_offsets");
        }

        return new RawEntry(name, dtype, shape, offsets);
    }

    /// <summary>Reads an array of non-negative integers (shape dimensions or data offsets).</summary>
    private static List<long> ReadIntegerArray(string path, string name, string key, ref Utf8JsonReader reader)
    {
        if (reader.TokenType != JsonTokenType.StartArray)
        {
            throw new SafetensorsFormatException(path, $"tensor '{name}': {key} must be an array of integers, but it is {Describe(reader.TokenType)}.");
        }

        var values = new List<long>();
        while (true)
        {
            Next(path, ref reader);
            if (reader.TokenType == JsonTokenType.EndArray)
            {
                return values;
            }

            if (reader.TokenType != JsonTokenType.Number)
            {
                throw new SafetensorsFormatException(path, $"tensor '{name}': {key} must contain only integers, but element {values.Count} is {Describe(reader.TokenType)}.");
            }

            string element = key == "shape" ? "dimension" : "offset";
            if (!reader.TryGetInt64(out long value))
            {
                throw new SafetensorsFormatException(path, $"tensor '{name}': {key} {element} {values.Count} is not an integer in range: {RawNumber(ref reader)}.");
            }

            if (value < 0)
            {
                throw new SafetensorsFormatException(
                    path,
                    string.Create(CultureInfo.InvariantCulture, $"tensor '{name}': {key} {element} {values.Count} is negative ({value})."));
            }

            values.Add(value);
        }
    }

    private static TensorInfo Validate(string path, RawEntry entry, long dataLength)
    {
        string name = entry.Name;
        if (!DTypes.TryParse(entry.DType, out DType dtype))
        {
            throw new SafetensorsFormatException(path, $"tensor '{name}': unknown dtype '{entry.DType}'.");
        }

        long elements = 1;
        foreach (long dim in entry.Shape)
        {
            if (dim != 0 && elements > long.MaxValue / dim)
            {
                throw new SafetensorsFormatException(path, $"tensor '{name}': shape [{string.Join(", ", entry.Shape)}] overflows: its element count does not fit in 64 bits.");
            }

            elements *= dim;
        }

        int size = DTypes.SizeOf(dtype);
        if (elements > long.MaxValue / size)
        {
            throw new SafetensorsFormatException(path, $"tensor '{name}': shape [{string.Join(", ", entry.Shape)}] of {entry.DType} overflows: its byte size does not fit in 64 bits.");
        }

        long bytes = elements * size;
        if (entry.Offsets.Count != 2)
        {
            throw new SafetensorsFormatException(
                path,
                string.Create(CultureInfo.InvariantCulture, $"tensor '{name}': data_offsets must be [begin, end] (2 integers), but it has {entry.Offsets.Count}."));
        }

        long begin = entry.Offsets[0];
        long end = entry.Offsets[1];
        if (begin > end)
        {
            throw new SafetensorsFormatException(
                path,
                string.Create(CultureInfo.InvariantCulture, $"tensor '{name}': data_offsets begin {begin} is after end {end}."));
        }

        if (end > dataLength)
        {
            throw new SafetensorsFormatException(
                path,
                string.Create(CultureInfo.InvariantCulture, $"tensor '{name}': data_offsets end {end} is beyond the end of the data buffer ({dataLength} bytes)."));
        }

        if (end - begin != bytes)
        {
            throw new SafetensorsFormatException(
                path,
                string.Create(
                    CultureInfo.InvariantCulture,
                    $"tensor '{name}': data_offsets [{begin}, {end}] span {end - begin} bytes, but shape [{string.Join(", ", entry.Shape)}] of {entry.DType} needs {bytes} bytes (size mismatch)."));
        }

        return new TensorInfo(name, dtype, entry.Shape.ToArray().AsReadOnly(), begin, end);
    }

    private static void CheckNoOverlap(string path, List<TensorInfo> tensors)
    {
        var ranges = new List<TensorInfo>(tensors.Count);
        foreach (TensorInfo t in tensors)
        {
            if (t.ByteLength > 0)
            {
                ranges.Add(t);
            }
        }

        ranges.Sort(static (a, b) => a.Begin.CompareTo(b.Begin));
        for (int i = 1; i < ranges.Count; i++)
        {
            TensorInfo previous = ranges[i - 1];
            TensorInfo current = ranges[i];
            if (current.Begin < previous.End)
            {
                throw new SafetensorsFormatException(
                    path,
                    string.Create(
                        CultureInfo.InvariantCulture,
                        $"tensors '{previous.Name}' [{previous.Begin}, {previous.End}) and '{current.Name}' [{current.Begin}, {current.End}) overlap in the data buffer."));
            }
        }
    }

    private static void Next(string path, ref Utf8JsonReader reader)
    {
        if (!reader.Read())
        {
            throw new SafetensorsFormatException(path, "the JSON header ends unexpectedly.");
        }
    }

    private static string RawNumber(ref Utf8JsonReader reader)
    {
        ReadOnlySpan<byte> raw = reader.HasValueSequence ? reader.ValueSequence.FirstSpan : reader.ValueSpan;
        const int MaxShown = 40;
        string text = System.Text.Encoding.UTF8.GetString(raw[..Math.Min(raw.Length, MaxShown)]);
        return raw.Length > MaxShown ? text + "..." : text;
    }

    private static SafetensorsFormatException Missing(string path, string name, string key) =>
        new(path, $"tensor '{name}': missing required key '{key}'.");

    private static SafetensorsFormatException Duplicate(string path, string name, string key) =>
        new(path, $"tensor '{name}': duplicate key '{key}'.");

    private static string Describe(JsonTokenType token) => token switch
    {
        JsonTokenType.StartObject => "an object",
        JsonTokenType.StartArray => "an array",
        JsonTokenType.String => "a string",
        JsonTokenType.Number => "a number",
        JsonTokenType.True or JsonTokenType.False => "a boolean",
        JsonTokenType.Null => "null",
        _ => token.ToString(),
    };

    private sealed record RawEntry(string Name, string DType, List<long> Shape, List<long> Offsets);
}
