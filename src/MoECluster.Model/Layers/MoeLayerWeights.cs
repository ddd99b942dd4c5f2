using MoECluster.Model.Checkpoints;
using MoECluster.Model.Configuration;
using MoECluster.Model.Experts;
using MoECluster.Model.Numerics;

namespace MoECluster.Model.Layers;

/// <summary>
/// The tensors of one MoE layer, checked against the config: names present, shapes as expected, float dtypes.
/// Large matrices stay memory-mapped (<see cref="WeightMatrix"/>); the norm weight and the correction bias,
/// a few KiB, are widened to fp32 arrays. A subset of experts can be loaded (an expert shard loads only its own).
/// </summary>
public sealed class MoeLayerWeights
{
    private MoeLayerWeights(int layer, MoeModelConfig config)
    {
        Layer = layer;
        Config = config;
    }

    public int Layer { get; }

    public MoeModelConfig Config { get; }

    public float[] NormWeight { get; private init; } = [];

    public WeightMatrix Gate { get; private init; } = null!;

    public float[] GateBias { get; private init; } = [];

    public WeightMatrix? LatentDown { get; private init; }

    public WeightMatrix? LatentUp { get; private init; }

    public WeightMatrix? SharedUp { get; private init; }

    public WeightMatrix? SharedDown { get; private init; }

    /// <summary>Indexed by expert id; null for experts not loaded.</summary>
    public IReadOnlyList<ExpertWeights?> Experts { get; private init; } = [];

    /// <summary>
    /// Loads layer <paramref name="layer"/>. Every missing tensor and every shape mismatch is reported in one
    /// <see cref="InvalidDataException"/> that names the tensors (expected vs actual shape).
    /// </summary>
    public static MoeLayerWeights Load(CheckpointTensors checkpoint, MoeModelConfig config, int layer, IEnumerable<int>? experts = null)
    {
        var missing = new List<string>();
        var wrong = new List<string>();
        var located = Locate(checkpoint, config, layer, experts, missing, wrong);
        if (missing.Count > 0 || wrong.Count > 0)
        {
            throw new InvalidDataException(Describe(layer, missing, wrong));
        }

        // A NaN or infinity in the weights would turn every answer into one and be blamed on the input (a forward
        // whose inputs and weights are finite and whose result is not has overflowed): refuse the checkpoint instead.
        int n = config.NRoutedExperts;
        float[] normWeight = located.Norm!.Value.ReadAllAsFloat32();
        float[] gateBias = located.Bias?.ReadAllAsFloat32() ?? new float[n];
        var corrupt = new List<string>();
        CheckVector(MoeTensorNames.Norm(layer), normWeight, corrupt);
        CheckVector(MoeTensorNames.GateBias(layer), gateBias, corrupt);
        var matrices = new[] { located.Gate, located.LatentDown, located.LatentUp, located.SharedUp, located.SharedDown }
            .Concat(located.Experts.SelectMany(e => e is null ? [] : new[] { e.Up, e.Down }));
        foreach (var matrix in matrices)
        {
            if (matrix?.FindNonFinite() is (int row, int col))
            {
                corrupt.Add($"{matrix.Name} has a NaN or infinity at [{row}, {col}]");
            }
        }

        if (corrupt.Count > 0)
        {
            throw new InvalidDataException($"layer {layer} has non-finite weights (a corrupt checkpoint): {string.Join("; ", corrupt.Take(8))}{(corrupt.Count > 8 ? $"; ... ({corrupt.Count - 8} more)" : string.Empty)}");
        }

        return new MoeLayerWeights(layer, config)
        {
            NormWeight = normWeight,
            Gate = located.Gate!,
            GateBias = gateBias,
            LatentDown = located.LatentDown,
            LatentUp = located.LatentUp,
            SharedUp = located.SharedUp,
            SharedDown = located.SharedDown,
            Experts = located.Experts,
        };
    }

    /// <summary>
    /// What layer <paramref name="layer"/> of <paramref name="checkpoint"/> lacks or holds in a wrong shape or dtype, for
    /// every tensor its config declares (all experts), from the checkpoint's header alone: nothing is read. Empty when
    /// the layer can be loaded (its weights may still hold a NaN, which only <see cref="Load"/> reads).
    /// </summary>
    public static LayerTensorCheck Check(CheckpointTensors checkpoint, MoeModelConfig config, int layer)
    {
        var missing = new List<string>();
        var wrong = new List<string>();
        _ = Locate(checkpoint, config, layer, experts: null, missing, wrong);
        return new LayerTensorCheck(layer, missing, wrong);
    }

    /// <summary>The one-line message of a layer that lacks <paramref name="missing"/> and misshapes <paramref name="wrong"/>.</summary>
    internal static string Describe(int layer, IReadOnlyList<string> missing, IReadOnlyList<string> wrong, int shown = 8)
    {
        var parts = new List<string>();
        if (missing.Count > 0)
        {
            parts.Add($"checkpoint lacks {missing.Count} tensor(s) of layer {layer}: {string.Join(", ", missing.Take(shown))}{(missing.Count > shown ? $", ... ({missing.Count - shown} more)" : string.Empty)}");
        }

        parts.AddRange(wrong.Take(shown));
        return string.Join("; ", parts);
    }

    /// <summary>Finds (by name, shape and dtype) the tensors of one layer, the experts given or all; what is not right goes to the lists.</summary>
    private static Located Locate(CheckpointTensors checkpoint, MoeModelConfig config, int layer, IEnumerable<int>? experts, List<string> missing, List<string> wrong)
    {
        if (layer < 0 || layer >= config.NumHiddenLayers || config.KindOf(layer) != LayerKind.Moe)
        {
            throw new ArgumentOutOfRangeException(nameof(layer), layer,
                $"layer {layer} is not an MoE layer; MoE layers: {string.Join(", ", config.MoeLayers)}");
        }

        int d = config.HiddenSize;
        int w = config.RoutedWidth;
        int m = config.MoeIntermediateSize;
        int n = config.NRoutedExperts;

        TensorRef? Find(string name, params long[] shape)
        {
            if (!checkpoint.TryGetTensor(name, out TensorRef t))
            {
                missing.Add(name);
                return null;
            }

            if (!t.Shape.SequenceEqual(shape))
            {
                wrong.Add($"{name} has shape {TensorShapes.Format(t.Shape)}, expected {TensorShapes.Format(shape)}");
                return null;
            }

            if (!DTypes.IsFloatingPoint(t.DType))
            {
                wrong.Add($"{name} has dtype {DTypes.ToSafetensorsName(t.DType)}, expected F32, BF16, F16 or F64");
                return null;
            }

            return t;
        }

        WeightMatrix? Matrix(string name, int rows, int cols) =>
            Find(name, rows, cols) is TensorRef t ? new WeightMatrix(t, rows, cols) : null;

        var norm = Find(MoeTensorNames.Norm(layer), d);
        var gate = Matrix(MoeTensorNames.Gate(layer), n, d);
        var bias = config.ScoringFunc == ScoringFunction.Sigmoid || checkpoint.TryGetTensor(MoeTensorNames.GateBias(layer), out _)
            ? Find(MoeTensorNames.GateBias(layer), n)
            : null;
        WeightMatrix? down = null, up = null, sharedUp = null, sharedDown = null;
        if (config.MoeLatentSize is int l)
        {
            down = Matrix(MoeTensorNames.LatentDown(layer), l, d);
            up = Matrix(MoeTensorNames.LatentUp(layer), d, l);
        }

        if (config.HasSharedExpert)
        {
            int ms = config.MoeSharedExpertIntermediateSize;
            sharedUp = Matrix(MoeTensorNames.SharedUp(layer), ms, d);
            sharedDown = Matrix(MoeTensorNames.SharedDown(layer), d, ms);
        }

        var expertWeights = new ExpertWeights?[n];
        foreach (int e in experts ?? Enumerable.Range(0, n))
        {
            if (e < 0 || e >= n)
            {
                throw new ArgumentOutOfRangeException(nameof(experts), e, $"expert {e} is outside 0..{n - 1}");
            }

            var eu = Matrix(MoeTensorNames.ExpertUp(layer, e), m, w);
            var ed = Matrix(MoeTensorNames.ExpertDown(layer, e), w, m);
            expertWeights[e] = eu is null || ed is null ? null : new ExpertWeights(e, eu, ed);
        }

        return new Located(norm, gate, bias, down, up, sharedUp, sharedDown, expertWeights);
    }

    private static void CheckVector(string name, float[] values, List<string> corrupt)
    {
        int bad = FloatRange.FirstNonFinite(values);
        if (bad >= 0)
        {
            corrupt.Add($"{name} has a NaN or infinity at [{bad}]");
        }
    }

    private sealed record Located(
        TensorRef? Norm,
        WeightMatrix? Gate,
        TensorRef? Bias,
        WeightMatrix? LatentDown,
        WeightMatrix? LatentUp,
        WeightMatrix? SharedUp,
        WeightMatrix? SharedDown,
        ExpertWeights?[] Experts);
}

/// <summary>What one MoE layer of a checkpoint lacks (<see cref="Missing"/>) or holds wrongly (<see cref="Wrong"/>: shape or dtype), by tensor name.</summary>
public sealed record LayerTensorCheck(int Layer, IReadOnlyList<string> Missing, IReadOnlyList<string> Wrong)
{
    /// <summary>Whether the layer's tensors are all there, as its config declares them.</summary>
    public bool IsComplete => Missing.Count == 0 && Wrong.Count == 0;

    /// <summary>One line naming the problems (at most <paramref name="shown"/> tensors of each kind), empty when complete.</summary>
    public string Describe(int shown = 8) => IsComplete ? string.Empty : MoeLayerWeights.Describe(Layer, Missing, Wrong, shown);
}
