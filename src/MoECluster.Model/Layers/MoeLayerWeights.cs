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
        if (layer < 0 || layer >= config.NumHiddenLayers || config.KindOf(layer) != LayerKind.Moe)
        {
            throw new ArgumentOutOfRangeException(nameof(layer), layer,
                $"layer {layer} is not an MoE layer; MoE layers: {string.Join(", ", config.MoeLayers)}");
        }

        int d = config.HiddenSize;
        int w = config.RoutedWidth;
        int m = config.MoeIntermediateSize;
        int n = config.NRoutedExperts;
        var missing = new List<string>();
        var wrong = new List<string>();

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

        if (missing.Count > 0 || wrong.Count > 0)
        {
            var parts = new List<string>();
            if (missing.Count > 0)
            {
                parts.Add($"checkpoint lacks {missing.Count} tensor(s) of layer {layer}: {string.Join(", ", missing.Take(8))}{(missing.Count > 8 ? $", ... ({missing.Count - 8} more)" : string.Empty)}");
            }

            parts.AddRange(wrong.Take(8));
            throw new InvalidDataException(string.Join("; ", parts));
        }

        // A NaN or infinity in the weights would turn every answer into one and be blamed on the input (a forward
        // whose inputs and weights are finite and whose result is not has overflowed): refuse the checkpoint instead.
        float[] normWeight = norm!.Value.ReadAllAsFloat32();
        float[] gateBias = bias?.ReadAllAsFloat32() ?? new float[n];
        var corrupt = new List<string>();
        CheckVector(MoeTensorNames.Norm(layer), normWeight, corrupt);
        CheckVector(MoeTensorNames.GateBias(layer), gateBias, corrupt);
        foreach (var matrix in new[] { gate, down, up, sharedUp, sharedDown }.Concat(expertWeights.SelectMany(e => e is null ? [] : new[] { e.Up, e.Down })))
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
            Gate = gate!,
            GateBias = gateBias,
            LatentDown = down,
            LatentUp = up,
            SharedUp = sharedUp,
            SharedDown = sharedDown,
            Experts = expertWeights,
        };
    }

    private static void CheckVector(string name, float[] values, List<string> corrupt)
    {
        int bad = FloatRange.FirstNonFinite(values);
        if (bad >= 0)
        {
            corrupt.Add($"{name} has a NaN or infinity at [{bad}]");
        }
    }
}
