using System.Collections.Concurrent;
using MoECluster.Model.Checkpoints;
using MoECluster.Model.Compute;
using MoECluster.Model.Configuration;
using MoECluster.Model.Dispatch;
using MoECluster.Model.Experts;
using MoECluster.Model.Numerics;

namespace MoECluster.Model.Layers;

/// <summary>
/// A model directory opened for in-process forward: its config, its memory-mapped tensors, and the MoE layers,
/// each loaded (and its shapes checked) on first use.
/// </summary>
public sealed class MoeModel : IDisposable
{
    private readonly ConcurrentDictionary<int, Lazy<MoeMixer>> _mixers = new();
    private readonly ConcurrentDictionary<int, Lazy<MoeMixer>> _routerMixers = new();

    private MoeModel(string directory, MoeModelConfig config, CheckpointTensors tensors, IComputeBackend backend)
    {
        Directory = directory;
        Config = config;
        Tensors = tensors;
        Backend = backend;
    }

    /// <summary>Where this model's matrix work runs (the reference path unless another backend was given).</summary>
    public IComputeBackend Backend { get; }

    public string Directory { get; }

    public MoeModelConfig Config { get; }

    public CheckpointTensors Tensors { get; }

    public static MoeModel Open(string directory, IComputeBackend? backend = null)
    {
        if (!System.IO.Directory.Exists(directory))
        {
            throw new DirectoryNotFoundException($"model directory {directory} does not exist");
        }

        string configPath = Path.Combine(directory, "config.json");
        if (!File.Exists(configPath))
        {
            throw new FileNotFoundException($"{configPath} is missing: a model directory holds config.json and model.safetensors (or an index and shards)", configPath);
        }

        var config = MoeModelConfig.Load(configPath);
        var tensors = CheckpointTensors.OpenDirectory(directory);
        try
        {
            ThrowIfIncomplete(directory, config, CheckTensors(tensors, config));
        }
        catch
        {
            tensors.Dispose();
            throw;
        }

        return new MoeModel(directory, config, tensors, backend ?? new ReferenceBackend());
    }

    /// <summary>
    /// Every MoE layer the config declares (its hybrid_override_pattern), checked against the checkpoint's header: the
    /// tensors it lacks or holds in a wrong shape or dtype, layer by layer (nothing is read; <see cref="Open"/> refuses a
    /// checkpoint with any, so that a served model fails where it is opened, naming the tensors, not on a request).
    /// </summary>
    public static IReadOnlyList<LayerTensorCheck> CheckTensors(CheckpointTensors tensors, MoeModelConfig config)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        ArgumentNullException.ThrowIfNull(config);
        return [.. config.MoeLayers.Select(layer => MoeLayerWeights.Check(tensors, config, layer))];
    }

    private static void ThrowIfIncomplete(string directory, MoeModelConfig config, IReadOnlyList<LayerTensorCheck> checks)
    {
        var bad = checks.Where(c => !c.IsComplete).ToList();
        if (bad.Count == 0)
        {
            return;
        }

        const int LayersShown = 8;
        int shown = bad.Count == 1 ? 8 : 3;
        string layers = string.Join("; ", bad.Take(LayersShown).Select(c => c.Describe(shown)));
        string more = bad.Count > LayersShown ? $"; ... ({bad.Count - LayersShown} more layers)" : string.Empty;
        throw new InvalidDataException(
            $"model directory {directory}: its config.json declares MoE layers {string.Join(", ", config.MoeLayers)}, but the checkpoint does not hold every tensor of " +
            $"layer(s) {string.Join(", ", bad.Select(c => c.Layer))}: {layers}{more}");
    }

    /// <summary>The first MoE layer's backbone index (the default for a single-layer forward).</summary>
    public int FirstMoeLayer => Config.MoeLayers[0];

    public MoeMixer Mixer(int layer)
    {
        CheckMoeLayer(layer);
        return _mixers.GetOrAdd(layer, l => new Lazy<MoeMixer>(() => new MoeMixer(MoeLayerWeights.Load(Tensors, Config, l), Backend))).Value;
    }

    /// <summary>
    /// What a router holds of layer <paramref name="layer"/>: gate, latent projections and shared expert, no routed
    /// experts. Its <see cref="MoeMixer.Prepare"/> and <see cref="MoeMixer.Finish"/> run; the experts are remote.
    /// </summary>
    public MoeMixer RouterMixer(int layer)
    {
        CheckMoeLayer(layer);
        return _routerMixers.GetOrAdd(layer, l => new Lazy<MoeMixer>(() => new MoeMixer(MoeLayerWeights.Load(Tensors, Config, l, experts: []), Backend))).Value;
    }

    /// <summary>
    /// The bytes one routed expert of <paramref name="layer"/> takes where a shard holds it: its up and down weights at
    /// the checkpoint's precision (read from the header; the largest over the layer's experts).
    /// </summary>
    public long ExpertBytes(int layer)
    {
        CheckMoeLayer(layer);
        long most = 0;
        for (int e = 0; e < Config.NRoutedExperts; e++)
        {
            most = Math.Max(most, Tensors.GetTensor(MoeTensorNames.ExpertUp(layer, e)).ByteLength + Tensors.GetTensor(MoeTensorNames.ExpertDown(layer, e)).ByteLength);
        }

        return most;
    }

    /// <summary>The routed experts [first, first + count) of a layer, and only those.</summary>
    public GroupedExperts ShardExperts(int layer, int first, int count)
    {
        if (first < 0 || count < 1 || first + count > Config.NRoutedExperts)
        {
            throw new ArgumentOutOfRangeException(nameof(count), $"experts {first}..{first + count - 1} are outside 0..{Config.NRoutedExperts - 1}");
        }

        return ShardExperts(layer, ExpertSet.Range(first, count));
    }

    /// <summary>The routed experts <paramref name="experts"/> of a layer, and only those (what an expert shard loads).</summary>
    public GroupedExperts ShardExperts(int layer, ExpertSet experts)
    {
        ArgumentNullException.ThrowIfNull(experts);
        CheckMoeLayer(layer);
        if (experts.End > Config.NRoutedExperts)
        {
            throw new ArgumentOutOfRangeException(nameof(experts), $"expert {experts.End - 1} is outside 0..{Config.NRoutedExperts - 1}");
        }

        var weights = MoeLayerWeights.Load(Tensors, Config, layer, experts);
        return new GroupedExperts(weights.Experts, Config.RoutedWidth, Config.MoeIntermediateSize, Backend, layer);
    }

    private void CheckMoeLayer(int layer)
    {
        if (layer < 0 || layer >= Config.NumHiddenLayers || Config.KindOf(layer) != LayerKind.Moe)
        {
            throw new ArgumentOutOfRangeException(nameof(layer), layer,
                $"layer {layer} is not an MoE layer of this model; MoE layers: {string.Join(", ", Config.MoeLayers)}");
        }
    }

    /// <summary>
    /// The mixer output y = mixer_l(x) of one MoE layer for an already-normed x [tokens, d]. With no
    /// <paramref name="dispatcher"/> the layer's experts run in this process; with one, this process holds only the
    /// router half (<see cref="RouterMixer"/>) and the dispatcher reaches the experts.
    /// </summary>
    public async Task<float[]> ForwardLayerAsync(int layer, ReadOnlyMemory<float> x, int tokens, IExpertDispatcher? dispatcher = null, CancellationToken cancellationToken = default)
    {
        var y = new float[x.Length];
        await MixerFor(layer, dispatcher).ForwardAsync(x, tokens, y, dispatcher, cancellationToken);
        return y;
    }

    /// <summary>
    /// x ← x + mixer_l(RMSNorm_l(x)) over every MoE layer in order: the one stack, in process and on the cluster
    /// (<paramref name="dispatcher"/> as in <see cref="ForwardLayerAsync"/>). A residual sum outside the float32 range
    /// throws <see cref="ForwardOverflowException"/>.
    /// </summary>
    public async Task<float[]> ForwardStackAsync(ReadOnlyMemory<float> x, int tokens, IExpertDispatcher? dispatcher = null, IProgress<int>? progress = null, CancellationToken cancellationToken = default)
    {
        var state = x.ToArray();
        var normed = new float[state.Length];
        var y = new float[state.Length];
        foreach (int layer in Config.MoeLayers)
        {
            MoeMixer mixer = MixerFor(layer, dispatcher);
            RmsNorm.Apply(state, mixer.Weights.NormWeight, Config.LayerNormEpsilon, normed);
            await mixer.ForwardAsync(normed, tokens, y, dispatcher, cancellationToken);
            for (int i = 0; i < state.Length; i++)
            {
                state[i] += y[i];
            }

            ForwardOverflowException.ThrowIfNonFinite(state, layer, "the residual sum x + mixer(RMSNorm(x))", x.Span);

            progress?.Report(layer);
        }

        return state;
    }

    /// <summary><see cref="ForwardLayerAsync"/> in this process, on the calling thread.</summary>
    public float[] ForwardLayer(int layer, float[] x, int tokens) => ForwardLayerAsync(layer, x, tokens).GetAwaiter().GetResult();

    /// <summary><see cref="ForwardStackAsync"/> in this process, on the calling thread.</summary>
    public float[] ForwardStack(ReadOnlySpan<float> x, int tokens, IProgress<int>? progress = null) =>
        ForwardStackAsync(x.ToArray(), tokens, progress: progress).GetAwaiter().GetResult();

    private MoeMixer MixerFor(int layer, IExpertDispatcher? dispatcher) => dispatcher is null ? Mixer(layer) : RouterMixer(layer);

    public void Dispose() => Tensors.Dispose();
}
