using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Algorithms.ScanReduceOperations;

namespace MoECluster.Kernels.Gpu.Kernels;

/// <summary>
/// The dispatcher's permutation on the device (<see cref="Model.Dispatch.TokenPermutation"/>'s result for a
/// routing plan): slots s = t·K + k grouped by expert, in slot order within an expert. Deterministic, no atomics:
/// a [rows, experts] mark table (slot + 1 where row t chose expert e; a row names an expert at most once, as
/// top-K guarantees), per-expert counts down its column, an exclusive scan of the counts, then each expert
/// walks its column in row order and writes its slots.
/// </summary>
public static class PermutationKernels
{
    /// <summary>marks[s / K, expert(s)] = s + 1 (marks zeroed beforehand). Experts outside 0..N-1 are skipped.</summary>
    public static void MarkSlotsKernel(Index1D slot, ArrayView<int> slotExperts, ArrayView<int> marks, int topK, int expertCount)
    {
        int s = slot;
        int e = slotExperts[s];
        if ((uint)e < (uint)expertCount)
        {
            marks[((long)(s / topK) * expertCount) + e] = s + 1;
        }
    }

    /// <summary>counts[e] = number of rows whose mark in column e is set.</summary>
    public static void CountKernel(Index1D expert, ArrayView<int> marks, ArrayView<int> counts, int rows, int expertCount)
    {
        int e = expert;
        int count = 0;
        for (int t = 0; t < rows; t++)
        {
            if (marks[((long)t * expertCount) + e] != 0)
            {
                count++;
            }
        }

        counts[e] = count;
    }

    /// <summary>
    /// offsets[i] = Σ_{j &lt; i} values[j] for i ≤ length (offsets has length + 1 entries). One group, any size:
    /// ILGPU.Algorithms' group scan over group-sized chunks, with a running carry.
    /// </summary>
    public static void ExclusiveScanKernel(ArrayView<int> values, ArrayView<int> offsets, int length)
    {
        int carry = 0;
        for (int start = 0; start < length; start += Group.DimX)
        {
            int i = start + Group.IdxX;
            int v = i < length ? values[i] : 0;
            int before = GroupExtensions.ExclusiveScan<int, AddInt32>(v);
            if (i < length)
            {
                offsets[i] = carry + before;
            }

            carry += Group.Broadcast(before + v, Group.DimX - 1);
            Group.Barrier();
        }

        if (Group.IdxX == 0)
        {
            offsets[length] = carry;
        }
    }

    /// <summary>
    /// Expert e writes its slots, in row order, to slots[offsets[e] ..], and for each the inverse
    /// positions[slot] = its index in the permuted order (positions prefilled with -1 for unrouted slots).
    /// </summary>
    public static void ScatterSlotsKernel(
        Index1D expert, ArrayView<int> marks, ArrayView<int> offsets, ArrayView<int> slots, ArrayView<int> positions, int rows, int expertCount)
    {
        int e = expert;
        int next = offsets[e];
        for (int t = 0; t < rows; t++)
        {
            int mark = marks[((long)t * expertCount) + e];
            if (mark != 0)
            {
                slots[next] = mark - 1;
                positions[mark - 1] = next;
                next++;
            }
        }
    }
}
