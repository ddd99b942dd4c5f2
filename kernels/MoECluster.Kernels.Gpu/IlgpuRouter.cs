using ILGPU;
using ILGPU.Runtime;
using MoECluster.Kernels.Gpu.Kernels;
using MoECluster.Model.Configuration;
using MoECluster.Model.Routing;

namespace MoECluster.Kernels.Gpu;

/// <summary>
/// <see cref="TopKRouter"/> on the device (<see cref="RoutingKernels.TopKSigmoidKernel"/>): the same plan from the
/// same fp32 gate logits. Supported: sigmoid scoring without group limiting (n_group = 1, or every group kept),
/// which is Nemotron-H's router; softmax and DeepSeek-style group limiting stay on the CPU router. On a GPU,
/// e^x may differ from the CPU's by an ulp, so a selection decided by that ulp (a near-tie) can differ.
/// </summary>
public sealed class IlgpuRouter : IDisposable
{
    private readonly Accelerator _accelerator;
    private readonly Lock _gate = new();
    private readonly MemoryBuffer1D<float, Stride1D.Dense> _bias;
    private readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<float>, int, int, int, float> _kernel;
    private readonly DeviceScratch<float> _logits;
    private readonly DeviceScratch<float> _scores;
    private readonly DeviceScratch<int> _experts;
    private readonly DeviceScratch<float> _weights;
    private readonly bool _normalize;
    private readonly float _scale;

    public IlgpuRouter(Accelerator accelerator, MoeModelConfig config, ReadOnlySpan<float> correctionBias)
    {
        ArgumentNullException.ThrowIfNull(accelerator);
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        if (!IsSupported(config, out string why))
        {
            throw new NotSupportedException(why);
        }

        if (correctionBias.Length != 0 && correctionBias.Length != config.NRoutedExperts)
        {
            throw new ArgumentException(
                $"e_score_correction_bias has {correctionBias.Length} entries, expected n_routed_experts = {config.NRoutedExperts}",
                nameof(correctionBias));
        }

        if (accelerator.WarpSize < 2 || (accelerator.WarpSize & (accelerator.WarpSize - 1)) != 0)
        {
            throw new NotSupportedException($"{accelerator.Name} has warp size {accelerator.WarpSize}; the router kernel needs a power of two");
        }

        _accelerator = accelerator;
        ExpertCount = config.NRoutedExperts;
        TopK = config.NumExpertsPerTok;
        _normalize = config.NormTopkProb;
        _scale = (float)config.RoutedScalingFactor;
        _bias = accelerator.Allocate1D<float>(ExpertCount);
        _bias.View.CopyFromCPU(correctionBias.Length == 0 ? new float[ExpertCount] : correctionBias.ToArray());
        _kernel = accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<float>, int, int, int, float>(
            RoutingKernels.TopKSigmoidKernel);
        _logits = new(accelerator);
        _scores = new(accelerator);
        _experts = new(accelerator);
        _weights = new(accelerator);
    }

    public int ExpertCount { get; }

    public int TopK { get; }

    /// <summary>Whether the device router implements <paramref name="config"/>'s routing; if not, why.</summary>
    public static bool IsSupported(MoeModelConfig config, out string reason)
    {
        ArgumentNullException.ThrowIfNull(config);
        if (config.ScoringFunc != ScoringFunction.Sigmoid)
        {
            reason = $"the device router implements sigmoid scoring only (config has {config.ScoringFunc})";
            return false;
        }

        if (config.NGroup > 1 && config.TopkGroup < config.NGroup)
        {
            reason = $"the device router does not implement group-limited routing (n_group = {config.NGroup}, topk_group = {config.TopkGroup})";
            return false;
        }

        reason = "";
        return true;
    }

    /// <summary>Routes [tokens, N] gate logits from the host; the plan comes back to the host.</summary>
    public RoutingPlan Route(ReadOnlySpan<float> logits, int tokens)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(tokens);
        if (logits.Length != (long)tokens * ExpertCount)
        {
            throw new ArgumentException($"logits have {logits.Length} values, expected tokens ({tokens}) x experts ({ExpertCount})", nameof(logits));
        }

        var plan = new RoutingPlan(tokens, TopK);
        if (tokens == 0)
        {
            return plan;
        }

        lock (_gate)
        {
            ArrayView<float> dl = _logits.View(logits.Length);
            dl.CopyFromCPU(logits);
            ArrayView<int> de = _experts.View(plan.Experts.Length);
            ArrayView<float> dw = _weights.View(plan.Weights.Length);
            RouteOnDevice(dl, tokens, _scores.View(logits.Length), de, dw);
            _accelerator.DefaultStream.Synchronize();
            de.CopyToCPU(plan.Experts.AsSpan());
            dw.CopyToCPU(plan.Weights.AsSpan());
        }

        return plan;
    }

    /// <summary>
    /// Enqueues the routing of device logits [tokens, N]: scores [tokens, N] (sigmoid), experts and weights
    /// [tokens, K] (slot t·K + k, best first).
    /// </summary>
    public void RouteOnDevice(ArrayView<float> logits, int tokens, ArrayView<float> scores, ArrayView<int> experts, ArrayView<float> weights)
    {
        if (tokens == 0)
        {
            return;
        }

        _kernel(
            new KernelConfig(tokens, _accelerator.WarpSize),
            logits, _bias.View, scores, experts, weights, ExpertCount, TopK, _normalize ? 1 : 0, _scale);
    }

    public void Dispose()
    {
        _accelerator.Synchronize();
        _bias.Dispose();
        _logits.Dispose();
        _scores.Dispose();
        _experts.Dispose();
        _weights.Dispose();
    }
}
