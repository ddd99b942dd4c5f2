using ILGPU;

namespace MoECluster.Kernels.Gpu.Kernels;

/// <summary>The layer's data movement and pointwise steps. Implicitly grouped: one thread per element.</summary>
public static class ElementwiseKernels
{
    /// <summary>values[i] = fill.</summary>
    public static void FillKernel(Index1D i, ArrayView<int> values, int fill) => values[i] = fill;

    /// <summary>relu(v)² in place, as <see cref="Model.Numerics.Activations.Relu2"/> (NaN → 0).</summary>
    public static void Relu2Kernel(Index1D i, ArrayView<float> values)
    {
        float v = values[i] > 0f ? values[i] : 0f;
        values[i] = v * v;
    }

    /// <summary>bfloat16 bits → fp32 (exact).</summary>
    public static void WidenBf16Kernel(Index1D i, ArrayView<ushort> source, ArrayView<float> destination) =>
        destination[i] = Interop.IntAsFloat((uint)source[i] << 16);

    /// <summary>
    /// destination[r, c] = source[slots[r] / slotsPerRow, c] for r over the permuted slots, c over
    /// <paramref name="stride"/> columns (pad columns included, so zero pads stay zero). A slot index outside
    /// 0..slotCount-1 (the unused tail of a permutation that left slots out) gives a zero row.
    /// </summary>
    public static void GatherRowsKernel(
        Index1D i, ArrayView<float> source, ArrayView<int> slots, ArrayView<float> destination, int stride, int slotsPerRow, int slotCount)
    {
        int r = i / stride;
        int c = i - (r * stride);
        int slot = slots[r];
        destination[i] = (uint)slot < (uint)slotCount ? source[((long)(slot / slotsPerRow) * stride) + c] : 0f;
    }

    /// <summary>
    /// positions[s] = -1 where slot s names an expert outside the map or one not held (slotOf[e] &lt; 0), so the
    /// combine leaves it out: an expert shard's partial sum over the experts it holds.
    /// </summary>
    public static void DropUnheldSlotsKernel(Index1D s, ArrayView<int> slotExperts, ArrayView<int> slotOf, ArrayView<int> positions)
    {
        int e = slotExperts[s];
        if ((uint)e >= (uint)slotOf.IntLength || slotOf[e] < 0)
        {
            positions[s] = -1;
        }
    }

    /// <summary>
    /// The weighted combine ("unpermute" + scatter-add, as a gather so it needs no float atomics and sums in
    /// slot order like <see cref="Model.Experts.WeightedSum"/>): output[t, c] = Σ_k weights[t·K+k] ·
    /// slotOutputs[positions[t·K+k], c] over the slots with a position (≥ 0). output is [tokens, width], dense.
    /// </summary>
    public static void CombineKernel(
        Index1D i, ArrayView<float> slotOutputs, ArrayView<int> positions, ArrayView<float> weights, ArrayView<float> output, int width, int slotStride, int topK)
    {
        int t = i / width;
        int c = i - (t * width);
        float acc = 0f;
        long s0 = (long)t * topK;
        for (int k = 0; k < topK; k++)
        {
            int p = positions[s0 + k];
            if (p >= 0)
            {
                acc += weights[s0 + k] * slotOutputs[((long)p * slotStride) + c];
            }
        }

        output[i] = acc;
    }

    /// <summary>fp32 → BF16 bits, round to nearest even (inputs are finite: the gateway and shards refuse others).</summary>
    public static void ToBFloat16Kernel(Index1D i, ArrayView<float> source, ArrayView<ushort> destination)
    {
        uint bits = (uint)Interop.FloatAsInt(source[i]);
        uint rounding = 0x7FFFu + ((bits >> 16) & 1u);
        destination[i] = (ushort)((bits + rounding) >> 16);
    }
}
