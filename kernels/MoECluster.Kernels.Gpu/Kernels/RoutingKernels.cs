using ILGPU;

namespace MoECluster.Kernels.Gpu.Kernels;

/// <summary>
/// Gating on the device, with <see cref="Model.Routing.TopKRouter"/>'s semantics for sigmoid scoring and a single
/// expert group (n_group = 1): score = 1 / (1 + e^-logit), selection on score + bias, top-K by (value desc,
/// index asc) with NaN below everything, combine weights = scores of the chosen, summed in slot order,
/// times scale / (sum + 1e-20) when normalising, else times scale. The same fp32 operations in the same order
/// as the CPU router, so the plans agree wherever e^x rounds the same (always on the CPU accelerator).
/// </summary>
public static class RoutingKernels
{
    /// <summary>
    /// One warp per token (group = warp, grid = tokens). Lanes stride over the experts; each of the K rounds
    /// picks, per lane, the best expert strictly below the previous round's pick in the selection order, then
    /// a butterfly of shuffles agrees on the warp's best. Lane 0 recomputes the chosen expert's score (the
    /// same expression on the same input, so the same bits) rather than reading another lane's store. <paramref name="scores"/> [tokens, experts] receives
    /// the sigmoid scores; <paramref name="experts"/> and <paramref name="weights"/> are [tokens, topK].
    /// </summary>
    public static void TopKSigmoidKernel(
        ArrayView<float> logits,
        ArrayView<float> bias,
        ArrayView<float> scores,
        ArrayView<int> experts,
        ArrayView<float> weights,
        int expertCount,
        int topK,
        int normalize,
        float scale)
    {
        int token = Grid.IdxX;
        int lane = Group.IdxX;
        int width = Group.DimX;
        long b = (long)token * expertCount;
        for (int e = lane; e < expertCount; e += width)
        {
            scores[b + e] = 1f / (1f + MathF.Exp(-logits[b + e]));
        }

        // Selection keys: one ulong per expert whose unsigned order is the router's order (see Key), so a
        // round is a max over keys strictly below the previous round's pick, and the warp agrees on it with
        // one 64-bit shuffle per butterfly step.
        ulong previous = ulong.MaxValue;
        float sum = 0f;
        long o = (long)token * topK;
        for (int k = 0; k < topK; k++)
        {
            ulong best = 0;
            for (int e = lane; e < expertCount; e += width)
            {
                ulong key = Key(scores[b + e] + bias[e], e);
                if (key < previous && key > best)
                {
                    best = key;
                }
            }

            for (int d = width / 2; d > 0; d >>= 1)
            {
                ulong other = Warp.ShuffleXor(best, d);
                if (other > best)
                {
                    best = other;
                }
            }

            previous = best;
            if (lane == 0)
            {
                int chosen = (int)~(uint)best;
                float score = 1f / (1f + MathF.Exp(-logits[b + chosen]));
                experts[o + k] = chosen;
                weights[o + k] = score;
                sum += score;
            }
        }

        if (lane == 0)
        {
            float factor = normalize != 0 ? scale / (sum + 1e-20f) : scale;
            for (int k = 0; k < topK; k++)
            {
                weights[o + k] *= factor;
            }
        }
    }

    /// <summary>
    /// The selection key of (value, index): high word the value's bits mapped so unsigned order is numeric
    /// order (−0 taken as +0, so zeros tie; NaN below −∞), low word ~index (lower index, larger key). Keys
    /// are distinct for distinct indices and never 0 (0 means "none").
    /// </summary>
    private static ulong Key(float value, int index)
    {
        uint ordered;
        if (float.IsNaN(value))
        {
            ordered = 0;
        }
        else
        {
            uint bits = Interop.FloatAsInt(value == 0f ? 0f : value);
            ordered = (bits & 0x8000_0000u) != 0 ? ~bits : bits | 0x8000_0000u;
        }

        return ((ulong)ordered << 32) | ~(uint)index;
    }
}
