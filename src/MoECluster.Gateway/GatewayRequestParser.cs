using System.Globalization;
using System.Text.Json;
using Microsoft.AspNetCore.Http;
using MoECluster.Wire;

namespace MoECluster.Gateway;

/// <summary>Bounds a forward request body must respect before anything is allocated from the sizes it claims.</summary>
/// <param name="MaxTokens">Most rows (tokens): 413 beyond (MoECluster:Gateway:MaxTokensPerRequest).</param>
/// <param name="MaxJsonDepth">Deepest nesting of a JSON body: 400 beyond (MoECluster:Gateway:MaxJsonDepth).</param>
/// <param name="Wire">The wire limits MessagePack bodies are decoded under; its MaxWidth bounds JSON rows too.</param>
public sealed record GatewayBodyLimits(int MaxTokens, int MaxJsonDepth, WireLimits Wire);

/// <summary>
/// A decoded forward request: <see cref="Hidden"/> holds exactly <see cref="Tokens"/> × <see cref="Width"/> values. The wire
/// names are as the client sent them (null: not sent): <see cref="Wire"/> sets both directions, <see cref="WireDispatch"/>
/// and <see cref="WireCombine"/> override theirs; <see cref="TryResolveWire"/> checks them and applies the silo's default.
/// </summary>
public sealed record ForwardInput(string? Model, string? Wire, float[] Hidden, int Tokens, int Width, string? WireDispatch = null, string? WireCombine = null)
{
    /// <summary>
    /// The pair this request runs in: its fields (<c>wire</c>, then <c>wire_dispatch</c> and <c>wire_combine</c> over it), and
    /// <paramref name="fallback"/> (the silo's default) in each direction it names none of; false with the registry's refusal
    /// of an unknown name (<see cref="WirePair.TryResolve"/>).
    /// </summary>
    public bool TryResolveWire(WirePair fallback, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out WirePair? pair, [System.Diagnostics.CodeAnalysis.NotNullWhen(false)] out string? error) =>
        WirePair.TryResolve(Wire, WireDispatch, WireCombine, fallback, out pair, out error);
}

/// <summary>A request the gateway refuses: <see cref="StatusCode"/> (a 4xx) and a message naming the problem.</summary>
public sealed class GatewayRequestException : Exception
{
    public GatewayRequestException()
        : this(StatusCodes.Status400BadRequest, "bad request")
    {
    }

    public GatewayRequestException(string message)
        : this(StatusCodes.Status400BadRequest, message)
    {
    }

    public GatewayRequestException(string message, Exception innerException)
        : base(message, innerException)
    {
        StatusCode = StatusCodes.Status400BadRequest;
    }

    public GatewayRequestException(int statusCode, string message)
        : base(message)
    {
        StatusCode = statusCode;
    }

    public GatewayRequestException(int statusCode, string message, Exception innerException)
        : base(message, innerException)
    {
        StatusCode = statusCode;
    }

    public int StatusCode { get; }
}

/// <summary>
/// Decoding of forward request bodies, which come from the network: JSON (<c>{"model", "wire", "wire_dispatch",
/// "wire_combine", "hidden_states": [[...], ...]}</c>, each key at most once) read token by token, and MessagePack (<see cref="GatewayForwardRequest"/>) through the bounded
/// wire decoder. The only exception either throws is <see cref="GatewayRequestException"/>; the float buffer grows
/// with the values actually read (never from a claimed size), and the row count is checked against the token limit
/// as rows arrive.
/// </summary>
public static class GatewayRequestParser
{
    /// <summary>Parses a JSON body (UTF-8).</summary>
    /// <exception cref="GatewayRequestException">400 for malformed or mis-shaped bodies, 413 past the token limit.</exception>
    public static ForwardInput ParseJson(ReadOnlySpan<byte> body, GatewayBodyLimits limits)
    {
        ArgumentNullException.ThrowIfNull(limits);
        var reader = new Utf8JsonReader(body, new JsonReaderOptions
        {
            MaxDepth = limits.MaxJsonDepth,
            CommentHandling = JsonCommentHandling.Disallow,
            AllowTrailingCommas = false,
        });
        try
        {
            return ReadBody(ref reader, limits);
        }
        catch (JsonException e) when (e.Message.Contains("maximum configured depth", StringComparison.Ordinal))
        {
            throw new GatewayRequestException(StatusCodes.Status400BadRequest, Invariant(
                $"malformed JSON body: it nests deeper than the limit of {limits.MaxJsonDepth} levels (MoECluster:Gateway:MaxJsonDepth)"), e);
        }
        catch (JsonException e)
        {
            throw new GatewayRequestException(StatusCodes.Status400BadRequest, $"malformed JSON body: {e.Message}", e);
        }
        catch (InvalidOperationException e)
        {
            // Utf8JsonReader.GetString refuses strings it cannot transcode (invalid escapes, lone surrogates).
            throw new GatewayRequestException(StatusCodes.Status400BadRequest, $"malformed JSON body: {e.Message}", e);
        }
    }

    /// <summary>Parses a MessagePack body (<see cref="GatewayForwardRequest"/>).</summary>
    /// <exception cref="GatewayRequestException">400 for malformed bodies, 413 past the token limit.</exception>
    public static ForwardInput ParseMessagePack(ReadOnlyMemory<byte> body, GatewayBodyLimits limits)
    {
        ArgumentNullException.ThrowIfNull(limits);
        GatewayForwardRequest request;
        try
        {
            request = GatewayWire.DecodeRequest(body, limits.Wire);
        }
        catch (WireFormatException e)
        {
            throw new GatewayRequestException(StatusCodes.Status400BadRequest, $"malformed MessagePack body: {e.Message}", e);
        }

        // The block is self-consistent now (its data holds rows × width elements): the row count is what was sent.
        ActivationBlock block = request.HiddenStates;
        if (block.Rows > limits.MaxTokens)
        {
            throw TooManyTokens(block.Rows.ToString(CultureInfo.InvariantCulture), limits);
        }

        float[] hidden;
        try
        {
            hidden = block.Decode();
        }
        catch (WireFormatException e)
        {
            throw new GatewayRequestException(StatusCodes.Status400BadRequest, $"malformed MessagePack body: {e.Message}", e);
        }

        return new ForwardInput(request.Model, request.Wire, hidden, block.Rows, block.Width, request.WireDispatch, request.WireCombine);
    }

    private static ForwardInput ReadBody(ref Utf8JsonReader reader, GatewayBodyLimits limits)
    {
        if (!reader.Read())
        {
            throw new GatewayRequestException(StatusCodes.Status400BadRequest, "empty request body");
        }

        if (reader.TokenType != JsonTokenType.StartObject)
        {
            throw new GatewayRequestException(StatusCodes.Status400BadRequest, $"the JSON body must be an object {{\"model\", \"wire\", \"hidden_states\"}}, not {Describe(reader.TokenType)}");
        }

        string? model = null, wire = null, wireDispatch = null, wireCombine = null;
        bool seenModel = false, seenWire = false, seenDispatch = false, seenCombine = false;
        Rows? rows = null;
        while (Next(ref reader) != JsonTokenType.EndObject)
        {
            // A property name: the reader allows nothing else here.
            if (IsNamed(ref reader, "model"))
            {
                Once(ref seenModel, "model");
                model = ReadOptionalString(ref reader, "model");
            }
            else if (IsNamed(ref reader, "wire"))
            {
                Once(ref seenWire, "wire");
                wire = ReadOptionalString(ref reader, "wire");
            }
            else if (IsNamed(ref reader, WirePair.DispatchField))
            {
                Once(ref seenDispatch, WirePair.DispatchField);
                wireDispatch = ReadOptionalString(ref reader, WirePair.DispatchField);
            }
            else if (IsNamed(ref reader, WirePair.CombineField))
            {
                Once(ref seenCombine, WirePair.CombineField);
                wireCombine = ReadOptionalString(ref reader, WirePair.CombineField);
            }
            else if (IsNamed(ref reader, "hidden_states"))
            {
                if (rows is not null)
                {
                    throw new GatewayRequestException(StatusCodes.Status400BadRequest, "duplicate key 'hidden_states' in the JSON body");
                }

                Next(ref reader);
                rows = ReadRows(ref reader, limits);
            }
            else
            {
                // Unknown members are ignored, however they nest (within the depth limit).
                Next(ref reader);
                reader.Skip();
            }
        }

        if (reader.Read())
        {
            throw new GatewayRequestException(StatusCodes.Status400BadRequest, "malformed JSON body: content after the JSON object");
        }

        if (rows is null || rows.Count == 0)
        {
            throw new GatewayRequestException(StatusCodes.Status400BadRequest, "hidden_states is missing or empty: expected [[...], ...] of shape [T, d]");
        }

        return new ForwardInput(model, wire, rows.ToArray(), rows.Count, rows.Width, wireDispatch, wireCombine);
    }

    /// <summary>[[...], ...]: rows of one width, checked row by row as they arrive.</summary>
    private static Rows ReadRows(ref Utf8JsonReader reader, GatewayBodyLimits limits)
    {
        if (reader.TokenType == JsonTokenType.Null)
        {
            return new Rows();
        }

        if (reader.TokenType != JsonTokenType.StartArray)
        {
            throw new GatewayRequestException(StatusCodes.Status400BadRequest, $"hidden_states must be an array of rows [[...], ...], not {Describe(reader.TokenType)}");
        }

        var rows = new Rows();
        while (Next(ref reader) != JsonTokenType.EndArray)
        {
            int t = rows.Count;
            if (t == limits.MaxTokens)
            {
                throw TooManyTokens("more than " + limits.MaxTokens.ToString(CultureInfo.InvariantCulture), limits);
            }

            if (reader.TokenType != JsonTokenType.StartArray)
            {
                throw new GatewayRequestException(StatusCodes.Status400BadRequest, Invariant($"hidden_states[{t}] must be an array of numbers, not {Describe(reader.TokenType)}"));
            }

            int i = 0;
            while (Next(ref reader) != JsonTokenType.EndArray)
            {
                if (reader.TokenType != JsonTokenType.Number)
                {
                    throw new GatewayRequestException(StatusCodes.Status400BadRequest, Invariant($"hidden_states[{t}][{i}] is {Describe(reader.TokenType)}, expected a number"));
                }

                if (t > 0 && i == rows.Width)
                {
                    throw RaggedRow(t, "more than " + rows.Width.ToString(CultureInfo.InvariantCulture), rows.Width);
                }

                if (t == 0 && i == limits.Wire.MaxWidth)
                {
                    throw new GatewayRequestException(StatusCodes.Status400BadRequest, Invariant(
                        $"hidden_states[0] has more than {limits.Wire.MaxWidth} values: rows may be at most MoECluster:WireLimits:MaxWidth = {limits.Wire.MaxWidth} wide"));
                }

                if (!reader.TryGetSingle(out float value) || !float.IsFinite(value))
                {
                    throw new GatewayRequestException(StatusCodes.Status400BadRequest, Invariant($"hidden_states[{t}][{i}] is not finite (outside the float32 range)"));
                }

                rows.Add(value);
                i++;
            }

            if (t == 0)
            {
                if (i == 0)
                {
                    throw new GatewayRequestException(StatusCodes.Status400BadRequest, "hidden_states[0] is empty");
                }

                rows.Width = i;
            }
            else if (i != rows.Width)
            {
                throw RaggedRow(t, i.ToString(CultureInfo.InvariantCulture), rows.Width);
            }

            rows.Count++;
        }

        return rows;
    }

    private static GatewayRequestException RaggedRow(int t, string values, int width) =>
        new(StatusCodes.Status400BadRequest, Invariant($"hidden_states[{t}] has {values} values; row 0 has {width}"));

    private static GatewayRequestException TooManyTokens(string rows, GatewayBodyLimits limits) =>
        new(StatusCodes.Status413PayloadTooLarge, MoECluster.Cluster.Requests.ForwardRequestValidator.TooManyTokens(rows, limits.MaxTokens));

    private static string? ReadOptionalString(ref Utf8JsonReader reader, string name)
    {
        Next(ref reader);
        return reader.TokenType switch
        {
            JsonTokenType.Null => null,
            JsonTokenType.String => reader.GetString(),
            _ => throw new GatewayRequestException(StatusCodes.Status400BadRequest, $"{name} must be a string or null, not {Describe(reader.TokenType)}"),
        };
    }

    private static void Once(ref bool seen, string name)
    {
        if (seen)
        {
            throw new GatewayRequestException(StatusCodes.Status400BadRequest, $"duplicate key '{name}' in the JSON body");
        }

        seen = true;
    }

    /// <summary>Property names match without regard to case, as the JSON serializer's web defaults did.</summary>
    private static bool IsNamed(ref Utf8JsonReader reader, string name)
    {
        int length = reader.HasValueSequence ? (int)reader.ValueSequence.Length : reader.ValueSpan.Length;
        if (length > 6 * name.Length)
        {
            return false;
        }

        Span<char> buffer = stackalloc char[6 * name.Length];
        int written = reader.CopyString(buffer);
        return MemoryExtensions.Equals(buffer[..written], name, StringComparison.OrdinalIgnoreCase);
    }

    /// <summary>The next token; a body that ends early is a 400 (shared with the KServe v2 parser).</summary>
    internal static JsonTokenType Next(ref Utf8JsonReader reader)
    {
        if (!reader.Read())
        {
            throw new GatewayRequestException(StatusCodes.Status400BadRequest, "malformed JSON body: it ends unexpectedly");
        }

        return reader.TokenType;
    }

    /// <summary>A token's kind in words, for 400 messages (shared with the KServe v2 parser).</summary>
    internal static string Describe(JsonTokenType token) => token switch
    {
        JsonTokenType.StartObject => "an object",
        JsonTokenType.StartArray => "an array",
        JsonTokenType.String => "a string",
        JsonTokenType.Number => "a number",
        JsonTokenType.True or JsonTokenType.False => "a boolean",
        JsonTokenType.Null => "null",
        _ => token.ToString(),
    };

    private static string Invariant(FormattableString text) => text.ToString(CultureInfo.InvariantCulture);

    /// <summary>Row-major values, grown as they are read (amortized doubling), never pre-sized from a claim.</summary>
    private sealed class Rows
    {
        private float[] _values = new float[64];
        private int _length;

        public int Count { get; set; }

        public int Width { get; set; }

        public void Add(float value)
        {
            if (_length == _values.Length)
            {
                Array.Resize(ref _values, (int)Math.Min((long)_values.Length * 2, Array.MaxLength));
            }

            _values[_length++] = value;
        }

        public float[] ToArray() => _values.AsSpan(0, _length).ToArray();
    }
}
