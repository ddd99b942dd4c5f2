using MoECluster.Model.Configuration;
using MoECluster.Model.Layers;
using MoECluster.Model.Routing;

namespace MoECluster.Model.Analysis;

/// <summary>
/// The arithmetic of a MoE layer's floors: the FLOPs a batch costs, the experts it routes to, and the weight bytes it
/// must read at their stored precision. A layer cannot run faster than its compute floor (FLOPs / GEMM throughput) nor
/// than its bytes floor (weight bytes / memory read bandwidth); its efficiency is the larger floor over the measured
/// time. Only the matrix products count (the router's top-K, relu² and the combine are not FLOPs here).
/// </summary>
public static class LayerFloors
{
    /// <summary>
    /// FLOPs of one token through one MoE layer: gate 2·N·d, W_down and W_up 2·2·ℓ·d (latent only), K experts 2·2·w·m
    /// each (w = ℓ, or d for a standard MoE), shared expert 2·2·d·ms.
    /// </summary>
    public static long FlopsPerToken(MoeModelConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        long d = config.HiddenSize;
        long gate = 2L * config.NRoutedExperts * d;
        long latent = config.MoeLatentSize is int l ? 2L * 2 * l * d : 0;
        long experts = config.NumExpertsPerTok * 2L * 2 * config.RoutedWidth * config.MoeIntermediateSize;
        long shared = config.HasSharedExpert ? 2L * 2 * d * config.MoeSharedExpertIntermediateSize : 0;
        return gate + latent + experts + shared;
    }

    /// <summary>Rows each expert receives from <paramref name="plan"/>: index e holds how many (token, slot) pairs chose expert e.</summary>
    public static int[] RowsPerExpert(RoutingPlan plan, int experts)
    {
        ArgumentNullException.ThrowIfNull(plan);
        ArgumentOutOfRangeException.ThrowIfLessThan(experts, 1);
        var rows = new int[experts];
        foreach (int e in plan.Experts)
        {
            if ((uint)e >= (uint)experts)
            {
                throw new ArgumentOutOfRangeException(nameof(plan), e, $"the plan routes to expert {e}, outside 0..{experts - 1}");
            }

            rows[e]++;
        }

        return rows;
    }

    /// <summary>The distinct experts <paramref name="plan"/> routes to, in ascending order (each one's weights are read once per batch).</summary>
    public static int[] DistinctExperts(RoutingPlan plan)
    {
        ArgumentNullException.ThrowIfNull(plan);
        return [.. plan.Experts.Distinct().Order()];
    }

    /// <summary>
    /// Weight bytes a batch reads, by element size: gate N·d, W_down and W_up 2·ℓ·d (latent only), shared expert 2·d·ms,
    /// and 2·w·m per distinct expert, each at <paramref name="bytesPerElement"/> (2 for BF16).
    /// </summary>
    public static long WeightBytes(MoeModelConfig config, int bytesPerElement, int distinctExperts)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentOutOfRangeException.ThrowIfLessThan(bytesPerElement, 1);
        ArgumentOutOfRangeException.ThrowIfNegative(distinctExperts);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(distinctExperts, config.NRoutedExperts);
        long d = config.HiddenSize;
        long elements = (config.NRoutedExperts * d)
            + (config.MoeLatentSize is int l ? 2L * l * d : 0)
            + (config.HasSharedExpert ? 2L * d * config.MoeSharedExpertIntermediateSize : 0)
            + (distinctExperts * 2L * config.RoutedWidth * config.MoeIntermediateSize);
        return elements * bytesPerElement;
    }

    /// <summary>
    /// Weight bytes a batch routed to <paramref name="experts"/> reads from <paramref name="weights"/> at their stored
    /// precision (the checkpoint's dtype, tensor by tensor): gate, W_down, W_up, shared expert and each expert's up and
    /// down. Every expert named must be loaded.
    /// </summary>
    public static long WeightBytes(MoeLayerWeights weights, IEnumerable<int> experts)
    {
        ArgumentNullException.ThrowIfNull(weights);
        ArgumentNullException.ThrowIfNull(experts);
        long bytes = weights.Gate.ByteLength
            + (weights.LatentDown?.ByteLength ?? 0) + (weights.LatentUp?.ByteLength ?? 0)
            + (weights.SharedUp?.ByteLength ?? 0) + (weights.SharedDown?.ByteLength ?? 0);
        foreach (int e in experts.Distinct())
        {
            var expert = (uint)e < (uint)weights.Experts.Count ? weights.Experts[e] : null;
            if (expert is null)
            {
                throw new ArgumentException($"expert {e} of layer {weights.Layer} is not loaded", nameof(experts));
            }

            bytes += expert.Up.ByteLength + expert.Down.ByteLength;
        }

        return bytes;
    }

    /// <summary>
    /// The throughput of a set of GEMMs run one after the other: total FLOPs over the sum of each one's FLOPs at its own
    /// rate (the FLOP-weighted harmonic mean), so that total FLOPs / this = the time they take.
    /// </summary>
    public static double CombinedThroughput(IEnumerable<(double Flops, double FlopsPerSecond)> gemms)
    {
        ArgumentNullException.ThrowIfNull(gemms);
        double flops = 0, seconds = 0;
        foreach (var (f, rate) in gemms)
        {
            if (!(f >= 0) || !(rate > 0) || double.IsInfinity(rate))
            {
                throw new ArgumentOutOfRangeException(nameof(gemms), $"a GEMM needs FLOPs ≥ 0 and a finite positive rate (got {f}, {rate})");
            }

            flops += f;
            seconds += f / rate;
        }

        return seconds > 0 ? flops / seconds : throw new ArgumentException("no GEMM with FLOPs", nameof(gemms));
    }

    /// <summary>The floors of one measured batch: compute = FLOPs / GEMM throughput, bytes = weight bytes / read bandwidth.</summary>
    public static LayerFloor Of(double flops, long weightBytes, double gemmFlopsPerSecond, double readBytesPerSecond, double measuredSeconds)
    {
        if (!(flops >= 0) || weightBytes < 0 || !(gemmFlopsPerSecond > 0) || !(readBytesPerSecond > 0) || !(measuredSeconds > 0))
        {
            throw new ArgumentOutOfRangeException(nameof(flops), "floors need FLOPs and bytes ≥ 0 and positive rates and time");
        }

        return new LayerFloor(flops / gemmFlopsPerSecond, weightBytes / readBytesPerSecond, measuredSeconds);
    }
}

/// <summary>A batch's compute and bytes floors (seconds) against the time it took.</summary>
public sealed record LayerFloor(double ComputeSeconds, double BytesSeconds, double MeasuredSeconds)
{
    /// <summary>The larger floor: no implementation can take less.</summary>
    public double FloorSeconds => Math.Max(ComputeSeconds, BytesSeconds);

    /// <summary>max(floors) / measured time: 1 at the floor.</summary>
    public double Efficiency => FloorSeconds / MeasuredSeconds;

    /// <summary>"compute" or "bytes": which floor binds.</summary>
    public string Bound => ComputeSeconds >= BytesSeconds ? "compute" : "bytes";
}
