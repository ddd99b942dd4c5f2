using System.Runtime.InteropServices;
using MoECluster.Model.Numerics;

namespace MoECluster.Model.Checkpoints;

/// <summary>
/// The <c>hidden_states</c> [T, d] tensor that <c>moecluster forward</c> reads (F32, BF16, F16 or F64) and
/// writes (F32). Reading checks the name, rank, width, dtype and that every value is finite.
/// </summary>
public static class HiddenStatesFile
{
    public const string TensorName = "hidden_states";

    /// <summary>The most tokens one file may hold (bounds the fp32 buffer sized from the file's shape).</summary>
    public const int MaxTokens = 1 << 20;

    public static float[] Read(string path, int hiddenSize, out int tokens) => Read(path, (int?)hiddenSize, out tokens, out _);

    /// <summary>Reads <c>hidden_states</c> of any width (checked against <paramref name="hiddenSize"/> when given).</summary>
    /// <exception cref="SafetensorsFormatException">The file is no valid safetensors file.</exception>
    /// <exception cref="InvalidDataException">It has no usable <c>hidden_states</c> tensor (name, shape, dtype, non-finite values).</exception>
    public static float[] Read(string path, int? hiddenSize, out int tokens, out int width)
    {
        using var file = SafetensorsFile.Open(path);
        return FromTensors(path, file.Tensors, hiddenSize, (info, values) => new TensorRef(file, info).ReadAsFloat32(values), out tokens, out width);
    }

    /// <summary>
    /// <see cref="Read(string, int?, out int, out int)"/> on the bytes of a whole file: the same validation and
    /// conversion, without a file (what the decoder fuzzer drives).
    /// </summary>
    internal static float[] Decode(string path, ReadOnlySpan<byte> fileBytes, int? hiddenSize, out int tokens, out int width)
    {
        var header = SafetensorsFile.ParseLayout(path, fileBytes, fileBytes.Length, out long dataStart);
        ReadOnlySpan<byte> data = fileBytes[(int)dataStart..];
        if (!TryFind(header.Tensors, out TensorInfo? info))
        {
            throw NoTensor(path, header.Tensors);
        }

        Validate(path, info, hiddenSize);
        var values = new float[info.ElementCount];
        ElementConversions.ToSingle(info.DType, data[(int)info.Begin..(int)info.End], values);
        return Finish(path, values, info, out tokens, out width);
    }

    private delegate void ReadInto(TensorInfo info, Span<float> values);

    private static float[] FromTensors(string path, IReadOnlyList<TensorInfo> tensors, int? hiddenSize, ReadInto read, out int tokens, out int width)
    {
        if (!TryFind(tensors, out TensorInfo? info))
        {
            throw NoTensor(path, tensors);
        }

        Validate(path, info, hiddenSize);

        // The shape was checked against the tensor's byte length when the header was parsed: this is bounded by the file.
        var values = new float[info.ElementCount];
        read(info, values);
        return Finish(path, values, info, out tokens, out width);
    }

    private static bool TryFind(IReadOnlyList<TensorInfo> tensors, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out TensorInfo? info)
    {
        info = tensors.FirstOrDefault(t => t.Name == TensorName);
        return info is not null;
    }

    private static InvalidDataException NoTensor(string path, IReadOnlyList<TensorInfo> tensors)
    {
        string have = tensors.Count == 0 ? "no tensors" : "tensors " + string.Join(", ", tensors.Take(5).Select(t => t.Name));
        return new InvalidDataException($"{path} has no tensor '{TensorName}' (it has {have})");
    }

    private static void Validate(string path, TensorInfo info, int? hiddenSize)
    {
        if (info.Shape.Count != 2 || (hiddenSize is int d && info.Shape[1] != d) || info.Shape[1] < 1 || info.Shape[1] > 1 << 20)
        {
            throw new InvalidDataException($"{path}: {TensorName} has shape {TensorShapes.Format(info.Shape)}, expected [T, {(hiddenSize is int h ? h.ToString(System.Globalization.CultureInfo.InvariantCulture) + "] (the model's hidden_size)" : "d]")}");
        }

        if (info.Shape[0] < 1 || info.Shape[0] > MaxTokens)
        {
            throw new InvalidDataException($"{path}: {TensorName} has {info.Shape[0]} tokens; allowed 1..{MaxTokens}");
        }

        if (info.DType is not (DType.F32 or DType.BF16 or DType.F16 or DType.F64))
        {
            throw new InvalidDataException($"{path}: {TensorName} has dtype {DTypes.ToSafetensorsName(info.DType)}; allowed F32, BF16, F16, F64");
        }
    }

    private static float[] Finish(string path, float[] values, TensorInfo info, out int tokens, out int width)
    {
        tokens = (int)info.Shape[0];
        width = (int)info.Shape[1];
        int bad = FirstNonFinite(values);
        if (bad >= 0)
        {
            throw new InvalidDataException($"{path}: {TensorName}[{bad / width}, {bad % width}] is {values[bad]}; inputs must be finite");
        }

        return values;
    }

    public static void Write(string path, ReadOnlySpan<float> values, int tokens, int hiddenSize, IReadOnlyDictionary<string, string>? metadata = null)
    {
        if (values.Length != (long)tokens * hiddenSize)
        {
            throw new ArgumentException($"{values.Length} values are not [{tokens}, {hiddenSize}]", nameof(values));
        }

        var spec = new TensorSpec(TensorName, DType.F32, [tokens, hiddenSize]);
        byte[] bytes = MemoryMarshal.AsBytes(values).ToArray();
        SafetensorsWriter.Write(path, [(spec, (ReadOnlyMemory<byte>)bytes)], metadata);
    }

    private static int FirstNonFinite(ReadOnlySpan<float> values)
    {
        for (int i = 0; i < values.Length; i++)
        {
            if (!float.IsFinite(values[i]))
            {
                return i;
            }
        }

        return -1;
    }
}
