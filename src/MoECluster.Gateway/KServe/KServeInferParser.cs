using System.Globalization;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Http;
using MoECluster.Cluster.Requests;
using MoECluster.Wire;

namespace MoECluster.Gateway.KServe;

/// <summary>
/// A decoded KServe v2 infer request: the tensor (<see cref="Input"/>, the same record our own forward bodies decode
/// to) and what the request asked for beside it.
/// </summary>
/// <param name="Input">The input tensor <c>hidden_states</c> [T, d] and the model of the path.</param>
/// <param name="Id">The request's <c>id</c>, echoed in the answer (null when it sent none).</param>
/// <param name="Layer">Request parameter <c>layer</c> as text (null: the whole MoE stack).</param>
/// <param name="BinaryOutput">The output was asked for in binary (<c>outputs[].parameters.binary_data</c> or <c>parameters.binary_data_output</c>).</param>
public sealed record KServeInferRequest(ForwardInput Input, string? Id, string? Layer, bool BinaryOutput);

/// <summary>
/// Decoding of <c>POST /v2/models/{model}/infer</c> bodies (KServe's Open Inference Protocol v2), which come from the
/// network. A JSON body is the inference request object; with the binary tensor extension the body is that object
/// (<c>Inference-Header-Content-Length</c> bytes) followed by the raw little-endian bytes of the input, whose length
/// the input's <c>parameters.binary_data_size</c> gives. One input, <c>hidden_states</c> of shape [T, d]:
/// <c>FP32</c> in JSON (<c>data</c> flat, T·d numbers, or nested, T rows of d), <c>FP32</c>, <c>FP16</c> or <c>BF16</c>
/// in binary. Every size the client claims (shape, binary_data_size, the header length) is checked against the limits
/// and against the bytes actually received before anything is allocated from it; values read from JSON grow a buffer as
/// they arrive. The only exception thrown is <see cref="GatewayRequestException"/> (400, or 413 past the token limit).
/// </summary>
public static class KServeInferParser
{
    /// <summary>The name of the one input and the one output.</summary>
    public const string TensorName = "hidden_states";

    /// <summary>The header of the binary tensor extension: the length of the JSON object at the start of the body.</summary>
    public const string HeaderContentLength = "Inference-Header-Content-Length";

    /// <summary>The longest request <c>id</c> accepted (it is echoed back).</summary>
    public const int MaxIdLength = 256;

    /// <summary>The longest <c>layer</c> parameter kept (a layer is a small integer).</summary>
    private const int MaxLayerText = 32;

    /// <summary>Parses a body; <paramref name="headerLength"/> is null for plain JSON, else the binary extension's header length.</summary>
    public static KServeInferRequest Parse(ReadOnlyMemory<byte> body, long? headerLength, string model, GatewayBodyLimits limits)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(limits);
        ReadOnlySpan<byte> json = body.Span;
        ReadOnlySpan<byte> binary = [];
        if (headerLength is long length)
        {
            if (length < 2 || length > body.Length)
            {
                throw Bad(Invariant($"{HeaderContentLength} is {length}, but the body holds {body.Length} bytes: it must give the length of the JSON header at the body's start (at least 2, at most the body's length)"));
            }

            json = body.Span[..(int)length];
            binary = body.Span[(int)length..];
        }

        var reader = new Utf8JsonReader(json, new JsonReaderOptions
        {
            MaxDepth = limits.MaxJsonDepth,
            CommentHandling = JsonCommentHandling.Disallow,
            AllowTrailingCommas = false,
        });
        Header header;
        try
        {
            header = ReadHeader(ref reader, limits);
        }
        catch (JsonException e) when (e.Message.Contains("maximum configured depth", StringComparison.Ordinal))
        {
            throw Bad(Invariant($"malformed JSON body: it nests deeper than the limit of {limits.MaxJsonDepth} levels (MoECluster:Gateway:MaxJsonDepth)"), e);
        }
        catch (JsonException e)
        {
            throw Bad($"malformed JSON body: {e.Message}", e);
        }
        catch (InvalidOperationException e)
        {
            throw Bad($"malformed JSON body: {e.Message}", e);
        }

        var (tokens, width, dtype) = CheckInput(header, limits);
        float[] hidden;
        if (header.BinaryDataSize is long size)
        {
            if (header.Values is not null)
            {
                throw Bad("inputs[0] has both data and parameters.binary_data_size: send one");
            }

            if (headerLength is null)
            {
                throw Bad($"inputs[0].parameters.binary_data_size is set but the request has no {HeaderContentLength} header: binary tensor data follows a JSON header whose length that header gives");
            }

            IWireCodec codec = WireCodecs.Get(dtype);
            long expected = codec.PayloadBytes(tokens, width);
            if (size != expected)
            {
                throw Bad(Invariant($"inputs[0].parameters.binary_data_size is {size}, but shape [{tokens}, {width}] of {DTypeName(dtype)} needs {expected} bytes"));
            }

            if (binary.Length != size)
            {
                throw Bad(Invariant($"the body holds {binary.Length} bytes after its {headerLength}-byte JSON header; inputs[0].parameters.binary_data_size says {size}"));
            }

            // Sized from the bytes received (checked equal to the shape's), never from a claim alone.
            hidden = new float[(long)tokens * width];
            codec.Decode(binary, tokens, width, hidden);
        }
        else
        {
            if (binary.Length != 0)
            {
                throw Bad(Invariant($"the body holds {binary.Length} bytes after its JSON header, but no input has parameters.binary_data_size"));
            }

            if (header.Values is null)
            {
                throw Bad("inputs[0] has neither data nor parameters.binary_data_size");
            }

            if (dtype != WireDType.F32)
            {
                throw Bad($"inputs[0].datatype {DTypeName(dtype)} is accepted only as binary data (parameters.binary_data_size); JSON data must be FP32");
            }

            long count = (long)tokens * width;
            if (header.Values.Count != count)
            {
                throw Bad(Invariant($"inputs[0].data holds {header.Values.Count} values; shape [{tokens}, {width}] needs {count}"));
            }

            if (header.NestedRows is int rows && (rows != tokens || header.NestedWidth != width))
            {
                throw Bad(Invariant($"inputs[0].data is nested as [{rows}, {header.NestedWidth}]; shape says [{tokens}, {width}]"));
            }

            hidden = header.Values.ToArray();
        }

        var input = new ForwardInput(model, header.Wire, hidden, tokens, width, header.WireDispatch, header.WireCombine);
        return new KServeInferRequest(input, header.Id, header.Layer, header.BinaryOutput);
    }

    /// <summary>The KServe datatype name of a wire dtype (FP32, FP16, BF16).</summary>
    public static string DTypeName(WireDType dtype) => dtype switch
    {
        WireDType.F32 => "FP32",
        WireDType.F16 => "FP16",
        WireDType.BF16 => "BF16",
        _ => dtype.ToString(),
    };

    private static (int Tokens, int Width, WireDType DType) CheckInput(Header header, GatewayBodyLimits limits)
    {
        if (header.Inputs == 0)
        {
            throw Bad($"inputs is missing or empty: expected [{{\"name\": \"{TensorName}\", \"shape\": [T, d], \"datatype\": \"FP32\", \"data\": [...]}}]");
        }

        if (header.Name != TensorName)
        {
            string shown = header.Name is null ? "no name" : header.Name.Length <= 64 ? $"'{header.Name}'" : $"'{header.Name[..64]}...'";
            throw Bad($"inputs[0] has {shown}; the model's one input is '{TensorName}'");
        }

        WireDType dtype = header.DataType switch
        {
            "FP32" => WireDType.F32,
            "FP16" => WireDType.F16,
            "BF16" => WireDType.BF16,
            null => throw Bad("inputs[0].datatype is missing: expected FP32 (or FP16, BF16 as binary data)"),
            string other => throw Bad($"inputs[0].datatype '{(other.Length <= 16 ? other : other[..16] + "...")}' is not supported: expected FP32 (or FP16, BF16 as binary data)"),
        };

        if (header.Shape is not { } shape)
        {
            throw Bad("inputs[0].shape is missing: expected [T, d]");
        }

        if (shape.Count != 2)
        {
            throw Bad(Invariant($"inputs[0].shape has {shape.Count} dimensions; expected 2, [T, d]"));
        }

        if (shape[0] < 1 || shape[1] < 1)
        {
            throw Bad(Invariant($"inputs[0].shape [{shape[0]}, {shape[1]}] must be positive"));
        }

        if (shape[0] > limits.MaxTokens)
        {
            throw new GatewayRequestException(StatusCodes.Status413PayloadTooLarge, ForwardRequestValidator.TooManyTokens(shape[0].ToString(CultureInfo.InvariantCulture), limits.MaxTokens));
        }

        if (shape[1] > limits.Wire.MaxWidth)
        {
            throw Bad(Invariant($"inputs[0].shape [{shape[0]}, {shape[1]}]: rows may be at most MoECluster:WireLimits:MaxWidth = {limits.Wire.MaxWidth} wide"));
        }

        return ((int)shape[0], (int)shape[1], dtype);
    }

    private static Header ReadHeader(ref Utf8JsonReader reader, GatewayBodyLimits limits)
    {
        if (!reader.Read())
        {
            throw Bad("empty request body");
        }

        if (reader.TokenType != JsonTokenType.StartObject)
        {
            throw Bad($"the JSON body must be an inference request object {{\"inputs\": [...]}}, not {Describe(reader.TokenType)}");
        }

        var header = new Header();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        while (Next(ref reader) != JsonTokenType.EndObject)
        {
            if (reader.ValueTextEquals("id"))
            {
                Once(seen, "id");
                header.Id = ReadOptionalString(ref reader, "id");
                if (header.Id is { Length: > MaxIdLength })
                {
                    throw Bad(Invariant($"id is {header.Id.Length} characters long; at most {MaxIdLength}"));
                }
            }
            else if (reader.ValueTextEquals("parameters"))
            {
                Once(seen, "parameters");
                ReadRequestParameters(ref reader, header);
            }
            else if (reader.ValueTextEquals("inputs"))
            {
                Once(seen, "inputs");
                ReadInputs(ref reader, header, limits);
            }
            else if (reader.ValueTextEquals("outputs"))
            {
                Once(seen, "outputs");
                ReadOutputs(ref reader, header);
            }
            else
            {
                Next(ref reader);
                reader.Skip();
            }
        }

        if (reader.Read())
        {
            throw Bad("malformed JSON body: content after the JSON object");
        }

        return header;
    }

    /// <summary>
    /// Request parameters: <c>layer</c> (integer, or its text; null: the stack), <c>wire</c>, <c>wire_dispatch</c>,
    /// <c>wire_combine</c> (as the v1 body's fields), <c>binary_data_output</c>; others ignored; each at most once.
    /// </summary>
    private static void ReadRequestParameters(ref Utf8JsonReader reader, Header header)
    {
        if (Next(ref reader) == JsonTokenType.Null)
        {
            return;
        }

        Expect(ref reader, JsonTokenType.StartObject, "parameters");
        var seen = new HashSet<string>(StringComparer.Ordinal);
        while (Next(ref reader) != JsonTokenType.EndObject)
        {
            if (reader.ValueTextEquals("layer"))
            {
                Once(seen, "parameters.layer");
                header.Layer = Next(ref reader) switch
                {
                    JsonTokenType.Null => null,
                    JsonTokenType.Number => Encoding.UTF8.GetString(reader.ValueSpan.Length <= MaxLayerText ? reader.ValueSpan : reader.ValueSpan[..MaxLayerText]),
                    JsonTokenType.String => reader.GetString(),
                    JsonTokenType token => throw Bad($"parameters.layer must be an integer (a MoE layer) or null (the whole stack), not {Describe(token)}"),
                };
            }
            else if (reader.ValueTextEquals("wire"))
            {
                Once(seen, "parameters.wire");
                header.Wire = ReadOptionalString(ref reader, "parameters.wire");
            }
            else if (reader.ValueTextEquals(WirePair.DispatchField))
            {
                Once(seen, "parameters." + WirePair.DispatchField);
                header.WireDispatch = ReadOptionalString(ref reader, "parameters." + WirePair.DispatchField);
            }
            else if (reader.ValueTextEquals(WirePair.CombineField))
            {
                Once(seen, "parameters." + WirePair.CombineField);
                header.WireCombine = ReadOptionalString(ref reader, "parameters." + WirePair.CombineField);
            }
            else if (reader.ValueTextEquals("binary_data_output"))
            {
                Once(seen, "parameters.binary_data_output");
                header.BinaryOutput |= ReadBool(ref reader, "parameters.binary_data_output");
            }
            else
            {
                Next(ref reader);
                reader.Skip();
            }
        }
    }

    private static void ReadInputs(ref Utf8JsonReader reader, Header header, GatewayBodyLimits limits)
    {
        Next(ref reader);
        Expect(ref reader, JsonTokenType.StartArray, "inputs");
        while (Next(ref reader) != JsonTokenType.EndArray)
        {
            if (header.Inputs > 0)
            {
                throw Bad($"inputs holds more than one tensor; the model has one input, '{TensorName}'");
            }

            Expect(ref reader, JsonTokenType.StartObject, "inputs[0]");
            header.Inputs++;
            var seen = new HashSet<string>(StringComparer.Ordinal);
            while (Next(ref reader) != JsonTokenType.EndObject)
            {
                if (reader.ValueTextEquals("name"))
                {
                    Once(seen, "inputs[0].name");
                    header.Name = ReadOptionalString(ref reader, "inputs[0].name");
                }
                else if (reader.ValueTextEquals("datatype"))
                {
                    Once(seen, "inputs[0].datatype");
                    header.DataType = ReadOptionalString(ref reader, "inputs[0].datatype");
                }
                else if (reader.ValueTextEquals("shape"))
                {
                    Once(seen, "inputs[0].shape");
                    header.Shape = ReadShape(ref reader);
                }
                else if (reader.ValueTextEquals("parameters"))
                {
                    Once(seen, "inputs[0].parameters");
                    ReadInputParameters(ref reader, header);
                }
                else if (reader.ValueTextEquals("data"))
                {
                    Once(seen, "inputs[0].data");
                    ReadData(ref reader, header, limits);
                }
                else
                {
                    Next(ref reader);
                    reader.Skip();
                }
            }
        }
    }

    /// <summary>At most 8 integers: anything but [T, d] is refused after, with the dimensions it has.</summary>
    private static List<long> ReadShape(ref Utf8JsonReader reader)
    {
        Next(ref reader);
        Expect(ref reader, JsonTokenType.StartArray, "inputs[0].shape");
        var shape = new List<long>(2);
        while (Next(ref reader) != JsonTokenType.EndArray)
        {
            if (shape.Count == 8)
            {
                throw Bad("inputs[0].shape has more than 8 dimensions; expected 2, [T, d]");
            }

            if (reader.TokenType != JsonTokenType.Number || !reader.TryGetInt64(out long dimension))
            {
                throw Bad(Invariant($"inputs[0].shape[{shape.Count}] must be an integer, not {Describe(reader.TokenType)}"));
            }

            shape.Add(dimension);
        }

        return shape;
    }

    private static void ReadInputParameters(ref Utf8JsonReader reader, Header header)
    {
        if (Next(ref reader) == JsonTokenType.Null)
        {
            return;
        }

        Expect(ref reader, JsonTokenType.StartObject, "inputs[0].parameters");
        while (Next(ref reader) != JsonTokenType.EndObject)
        {
            if (reader.ValueTextEquals("binary_data_size"))
            {
                if (header.BinaryDataSize is not null)
                {
                    throw Bad("duplicate key 'inputs[0].parameters.binary_data_size' in the JSON body");
                }

                if (Next(ref reader) != JsonTokenType.Number || !reader.TryGetInt64(out long size) || size < 0)
                {
                    throw Bad("inputs[0].parameters.binary_data_size must be a non-negative integer (bytes)");
                }

                header.BinaryDataSize = size;
            }
            else
            {
                Next(ref reader);
                reader.Skip();
            }
        }
    }

    /// <summary><c>data</c>: flat (numbers) or nested one level (rows of numbers, all of one width), read value by value.</summary>
    private static void ReadData(ref Utf8JsonReader reader, Header header, GatewayBodyLimits limits)
    {
        Next(ref reader);
        Expect(ref reader, JsonTokenType.StartArray, "inputs[0].data");
        var values = new Values();
        header.Values = values;
        long most = (long)limits.MaxTokens * limits.Wire.MaxWidth;
        int rows = 0;
        int width = -1;
        bool? nested = null;
        while (Next(ref reader) != JsonTokenType.EndArray)
        {
            if (reader.TokenType == JsonTokenType.StartArray && nested != false)
            {
                nested = true;
                if (rows == limits.MaxTokens)
                {
                    throw new GatewayRequestException(StatusCodes.Status413PayloadTooLarge,
                        ForwardRequestValidator.TooManyTokens("more than " + limits.MaxTokens.ToString(CultureInfo.InvariantCulture), limits.MaxTokens));
                }

                int i = 0;
                while (Next(ref reader) != JsonTokenType.EndArray)
                {
                    if (i == limits.Wire.MaxWidth || (width >= 0 && i == width))
                    {
                        throw Bad(Invariant($"inputs[0].data[{rows}] has more than {(width >= 0 ? width : limits.Wire.MaxWidth)} values"));
                    }

                    values.Add(ReadValue(ref reader, Invariant($"inputs[0].data[{rows}][{i}]")));
                    i++;
                }

                if (width >= 0 && i != width)
                {
                    throw Bad(Invariant($"inputs[0].data[{rows}] has {i} values; row 0 has {width}"));
                }

                width = i;
                rows++;
            }
            else if (reader.TokenType == JsonTokenType.Number && nested != true)
            {
                nested = false;
                if (values.Count == most)
                {
                    throw Bad(Invariant($"inputs[0].data holds more than {most} values (MaxTokensPerRequest × MaxWidth)"));
                }

                values.Add(ReadValue(ref reader, Invariant($"inputs[0].data[{values.Count}]")));
            }
            else
            {
                throw Bad(Invariant($"inputs[0].data[{(nested == true ? rows : values.Count)}] is {Describe(reader.TokenType)}: data must be flat (numbers) or rows of numbers, not a mix"));
            }
        }

        if (nested == true)
        {
            header.NestedRows = rows;
            header.NestedWidth = width;
        }
    }

    private static float ReadValue(ref Utf8JsonReader reader, string where)
    {
        if (reader.TokenType != JsonTokenType.Number)
        {
            throw Bad($"{where} is {Describe(reader.TokenType)}, expected a number");
        }

        if (!reader.TryGetSingle(out float value) || !float.IsFinite(value))
        {
            throw Bad($"{where} is not finite (outside the float32 range)");
        }

        return value;
    }

    /// <summary>Outputs: only <c>hidden_states</c>; <c>parameters.binary_data</c> asks for it in binary.</summary>
    private static void ReadOutputs(ref Utf8JsonReader reader, Header header)
    {
        if (Next(ref reader) == JsonTokenType.Null)
        {
            return;
        }

        Expect(ref reader, JsonTokenType.StartArray, "outputs");
        int index = 0;
        while (Next(ref reader) != JsonTokenType.EndArray)
        {
            if (index > 0)
            {
                throw Bad($"outputs holds more than one tensor; the model has one output, '{TensorName}'");
            }

            Expect(ref reader, JsonTokenType.StartObject, "outputs[0]");
            string? name = null;
            while (Next(ref reader) != JsonTokenType.EndObject)
            {
                if (reader.ValueTextEquals("name"))
                {
                    name = ReadOptionalString(ref reader, "outputs[0].name");
                }
                else if (reader.ValueTextEquals("parameters"))
                {
                    if (Next(ref reader) == JsonTokenType.Null)
                    {
                        continue;
                    }

                    Expect(ref reader, JsonTokenType.StartObject, "outputs[0].parameters");
                    while (Next(ref reader) != JsonTokenType.EndObject)
                    {
                        if (reader.ValueTextEquals("binary_data"))
                        {
                            header.BinaryOutput |= ReadBool(ref reader, "outputs[0].parameters.binary_data");
                        }
                        else
                        {
                            Next(ref reader);
                            reader.Skip();
                        }
                    }
                }
                else
                {
                    Next(ref reader);
                    reader.Skip();
                }
            }

            if (name != TensorName)
            {
                string shown = name is null ? "no name" : name.Length <= 64 ? $"'{name}'" : $"'{name[..64]}...'";
                throw Bad($"outputs[0] has {shown}; the model's one output is '{TensorName}'");
            }

            index++;
        }
    }

    private static bool ReadBool(ref Utf8JsonReader reader, string name) => Next(ref reader) switch
    {
        JsonTokenType.True => true,
        JsonTokenType.False or JsonTokenType.Null => false,
        JsonTokenType token => throw Bad($"{name} must be a boolean, not {Describe(token)}"),
    };

    private static string? ReadOptionalString(ref Utf8JsonReader reader, string name) => Next(ref reader) switch
    {
        JsonTokenType.Null => null,
        JsonTokenType.String => reader.GetString(),
        JsonTokenType token => throw Bad($"{name} must be a string, not {Describe(token)}"),
    };

    private static void Expect(ref Utf8JsonReader reader, JsonTokenType expected, string name)
    {
        if (reader.TokenType != expected)
        {
            throw Bad($"{name} must be {Describe(expected)}, not {Describe(reader.TokenType)}");
        }
    }

    private static void Once(HashSet<string> seen, string name)
    {
        if (!seen.Add(name))
        {
            throw Bad($"duplicate key '{name}' in the JSON body");
        }
    }

    private static JsonTokenType Next(ref Utf8JsonReader reader) => GatewayRequestParser.Next(ref reader);

    private static string Describe(JsonTokenType token) => GatewayRequestParser.Describe(token);

    private static GatewayRequestException Bad(string message) => new(StatusCodes.Status400BadRequest, message);

    private static GatewayRequestException Bad(string message, Exception inner) => new(StatusCodes.Status400BadRequest, message, inner);

    private static string Invariant(FormattableString text) => text.ToString(CultureInfo.InvariantCulture);

    private sealed class Header
    {
        public string? Id { get; set; }

        public string? Layer { get; set; }

        public string? Wire { get; set; }

        public string? WireDispatch { get; set; }

        public string? WireCombine { get; set; }

        public bool BinaryOutput { get; set; }

        public int Inputs { get; set; }

        public string? Name { get; set; }

        public string? DataType { get; set; }

        public List<long>? Shape { get; set; }

        public long? BinaryDataSize { get; set; }

        public Values? Values { get; set; }

        public int? NestedRows { get; set; }

        public int NestedWidth { get; set; }
    }

    /// <summary>Values in order, grown as they are read (amortized doubling), never pre-sized from a claim.</summary>
    private sealed class Values
    {
        private float[] _values = new float[64];

        public int Count { get; private set; }

        public void Add(float value)
        {
            if (Count == _values.Length)
            {
                Array.Resize(ref _values, (int)Math.Min((long)_values.Length * 2, Array.MaxLength));
            }

            _values[Count++] = value;
        }

        public float[] ToArray() => _values.AsSpan(0, Count).ToArray();
    }
}
