using MoECluster.Model.Configuration;

namespace MoECluster.Model.Analysis;

/// <summary>
/// The LatentMoE paper's accounting (its Section 2) of one MoE layer under expert parallelism, per GPU: the roofline of
/// one expert GEMM and the three times a layer cannot beat — reading its weights, doing its FLOPs, and moving its
/// routed rows over the link. Every (token, expert) pair crosses the link once out (dispatch) and once back
/// (combine), as the paper counts it; MoECluster's dispatcher, which sends a row once per shard, moves at most that.
/// docs/COST.md derives each formula.
/// </summary>
public static class RoutingCost
{
    /// <summary>Weight matrices per expert: up and down (relu², as Nemotron-3; the paper counts two as well).</summary>
    public const int ExpertMatrices = 2;

    /// <summary>
    /// Arithmetic intensity of one expert GEMM [w → m] over <paramref name="tokensPerExpert"/> rows, in FLOPs per byte:
    /// 2·t·w·m FLOPs over the bytes of its weights (w·m) and activations in and out (t·(w + m)) at
    /// <paramref name="elementBytes"/> each.
    /// </summary>
    public static double ArithmeticIntensity(long width, long intermediate, double tokensPerExpert, double elementBytes)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(width, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(intermediate, 1);
        ArgumentOutOfRangeException.ThrowIfNegative(tokensPerExpert);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(elementBytes);
        double wm = (double)width * intermediate;
        return 2 * tokensPerExpert * wm / (elementBytes * (wm + (tokensPerExpert * (width + intermediate))));
    }

    /// <summary>
    /// Tokens per expert from which an expert GEMM is compute-bound on <paramref name="profile"/>: the t where the
    /// intensity reaches peak FLOP/s ÷ bandwidth, t* = X·w·m / (2·w·m − X·(w + m)) with X the FLOPs per element read;
    /// +∞ when the intensity's limit 2·w·m / (w + m) per element stays below X (never compute-bound).
    /// </summary>
    public static double ComputeBoundTokensPerExpert(long width, long intermediate, HardwareProfile profile)
    {
        ArgumentNullException.ThrowIfNull(profile);
        double x = profile.FlopsPerElementRead;
        double wm = (double)width * intermediate;
        double denominator = (2 * wm) - (x * (width + intermediate));
        return denominator <= 0 ? double.PositiveInfinity : x * wm / denominator;
    }

    /// <summary>
    /// Communication ÷ computation of the routed experts: a routed row costs w·(b_dispatch + b_combine) bytes on the
    /// link and 2·matrices·w·m FLOPs in its expert, so the ratio (b_d + b_c)·peak / (2·matrices·m·link) does not depend
    /// on the width — LatentMoE lowers both by d/ℓ.
    /// </summary>
    public static double CommunicationOverComputation(long intermediate, double dispatchBytes, double combineBytes, HardwareProfile profile, int matrices = ExpertMatrices)
    {
        ArgumentNullException.ThrowIfNull(profile);
        ArgumentOutOfRangeException.ThrowIfLessThan(intermediate, 1);
        return (dispatchBytes + combineBytes) * profile.PeakFlopsPerSecond / (2.0 * matrices * intermediate * profile.NetworkBytesPerSecond);
    }

    /// <summary>
    /// One MoE layer on one GPU of <paramref name="expertParallel"/> that each hold <paramref name="tokens"/> tokens and
    /// N / EP experts (uniform routing): what it reads, computes and routes, and how long each takes on
    /// <paramref name="profile"/>. Dispatch and combine element sizes include block scales (bytes of a row ÷ width).
    /// </summary>
    public static LayerCostEstimate Estimate(MoeModelConfig config, HardwareProfile profile, int tokens, int expertParallel, double dispatchBytes, double combineBytes)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(profile);
        ArgumentOutOfRangeException.ThrowIfLessThan(tokens, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(expertParallel, 1);
        if (config.NRoutedExperts % expertParallel != 0)
        {
            throw new ArgumentException($"{config.NRoutedExperts} experts do not split evenly over EP {expertParallel}", nameof(expertParallel));
        }

        long d = config.HiddenSize, w = config.RoutedWidth, m = config.MoeIntermediateSize;
        int n = config.NRoutedExperts, k = config.NumExpertsPerTok;
        double globalTokens = (double)tokens * expertParallel;
        double tokensPerExpert = globalTokens * k / n;

        // Each GPU reads the replicated weights (gate, W_down and W_up, shared expert) once, and those of its N/EP experts
        // that receive at least one of the global batch's tokens: 1 − (1 − K/N)^(T·EP) of them.
        double replicated = ((double)n * d) + (config.MoeLatentSize is int l ? 2.0 * l * d : 0) + (config.HasSharedExpert ? 2.0 * d * config.MoeSharedExpertIntermediateSize : 0);
        double expertsPerGpu = (double)n / expertParallel;
        double activeExperts = expertsPerGpu * (1 - Math.Pow(1 - ((double)k / n), globalTokens));
        double weightBytes = (replicated + (activeExperts * ExpertMatrices * w * m)) * profile.ElementBytes;

        double flops = (double)tokens * LayerFloors.FlopsPerToken(config);
        double routedBytes = (double)tokens * k * w * (dispatchBytes + combineBytes);
        return new LayerCostEstimate(
            config.IsLatent ? "latent" : "standard",
            tokens,
            expertParallel,
            tokensPerExpert,
            activeExperts,
            FlopsPerToken: flops / tokens,
            WeightBytesPerToken: weightBytes / tokens,
            RoutedBytesPerToken: routedBytes / tokens,
            MemorySeconds: weightBytes / profile.MemoryBytesPerSecond,
            ComputeSeconds: flops / profile.PeakFlopsPerSecond,
            CommunicationSeconds: routedBytes / profile.NetworkBytesPerSecond,
            ArithmeticIntensity: ArithmeticIntensity(w, m, tokensPerExpert, profile.ElementBytes),
            ComputeBoundTokensPerExpert: ComputeBoundTokensPerExpert(w, m, profile),
            CommunicationOverComputation: CommunicationOverComputation(m, dispatchBytes, combineBytes, profile));
    }
}

/// <summary>One MoE layer on one GPU, per <see cref="RoutingCost.Estimate"/>; times in seconds per layer.</summary>
public sealed record LayerCostEstimate(
    string Mode,
    int Tokens,
    int ExpertParallel,
    double TokensPerExpert,
    double ActiveExpertsPerGpu,
    double FlopsPerToken,
    double WeightBytesPerToken,
    double RoutedBytesPerToken,
    double MemorySeconds,
    double ComputeSeconds,
    double CommunicationSeconds,
    double ArithmeticIntensity,
    double ComputeBoundTokensPerExpert,
    double CommunicationOverComputation)
{
    /// <summary>The largest of the three times: what bounds the layer ("memory", "compute" or "communication").</summary>
    public string Bound => CommunicationSeconds >= Math.Max(MemorySeconds, ComputeSeconds) ? "communication"
        : ComputeSeconds >= MemorySeconds ? "compute" : "memory";

    /// <summary>The layer's floor: the largest of the three times (they may overlap, so none adds to another).</summary>
    public double FloorSeconds => Math.Max(CommunicationSeconds, Math.Max(MemorySeconds, ComputeSeconds));
}
