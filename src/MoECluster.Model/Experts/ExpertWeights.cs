using MoECluster.Model.Numerics;

namespace MoECluster.Model.Experts;

/// <summary>One routed expert: up_proj [m, w] and down_proj [w, m], w the routed width (ℓ or d).</summary>
public sealed record ExpertWeights(int Index, WeightMatrix Up, WeightMatrix Down);
