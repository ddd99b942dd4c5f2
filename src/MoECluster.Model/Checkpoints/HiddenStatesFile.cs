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
    public static float[] Read(string path, int? hiddenSize, out int tokens, out int width)
    {
        using var file = SafetensorsFile.Open(path);
        if (!file.TryGetTensor(TensorName, out TensorInfo? info))
        {
            string have = file.Tensors.Count == 0 ? "no tensors" : "tensors " + string.Join(", ", file.Tensors.Take(5).Select(t => t.Name));
            throw new InvalidDataException($"{path} has no tensor '{TensorName}' (it has {have})");
        }

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

        tokens = (int)info.Shape[0];
        width = (int)info.Shape[1];
        int rowWidth = width;
        var values = new float[(long)tokens * width];
        new TensorRef(file, info).ReadAsFloat32(values);
        int bad = FirstNonFinite(values);
        if (bad >= 0)
        {
            throw new InvalidDataException($"{path}: {TensorName}[{bad / rowWidth}, {bad % rowWidth}] is {values[bad]}; inputs must be finite");
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
