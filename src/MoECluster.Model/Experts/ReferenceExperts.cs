using MoECluster.Model.Dispatch;
using MoECluster.Model.Numerics;

namespace MoECluster.Model.Experts;

/// <summary>
/// The grouped expert FFN on the reference path: for each expert, gather its tokens' routed rows, compute
/// down(relu(up(z))²), and scatter each result row to its (token, slot). Experts run in parallel, each with
/// its own buffers; the per-slot outputs are combined by <see cref="Layers.MoeMixer"/> in a fixed order,
/// so the result does not depend on the thread schedule.
/// </summary>
public sealed class ReferenceExperts
{
    private readonly ExpertWeights?[] _experts;

    /// <param name="experts">Expert weights indexed by expert id; null where this process does not hold the expert.</param>
    public ReferenceExperts(IReadOnlyList<ExpertWeights?> experts, int routedWidth, int intermediate)
    {
        _experts = [.. experts];
        Width = routedWidth;
        Intermediate = intermediate;
    }

    public int Width { get; }

    public int Intermediate { get; }

    /// <summary>Bytes of the expert weights held (as stored: BF16 in real checkpoints).</summary>
    public long WeightBytes => _experts.Where(e => e is not null).Sum(e => e!.Up.ByteLength + e.Down.ByteLength);

    /// <summary>
    /// For every slot s of <paramref name="permutation"/>, writes E(z[slotRows[s]]) into row s of
    /// <paramref name="slotOutputs"/> ([slots, w]); <paramref name="z"/> is [rows, w].
    /// </summary>
    public void Compute(ReadOnlyMemory<float> z, ReadOnlyMemory<int> slotRows, TokenPermutation permutation, Memory<float> slotOutputs)
    {
        int w = Width;
        int[] active = [.. Enumerable.Range(0, permutation.Experts).Where(e => permutation.CountOf(e) > 0)];
        foreach (int e in active)
        {
            if (_experts[e] is null)
            {
                throw new InvalidOperationException($"expert {e} is routed to but not held by this process");
            }
        }

        Parallel.ForEach(active, e =>
        {
            ExpertWeights expert = _experts[e]!;
            ReadOnlySpan<int> slots = permutation.SlotsOf(e);
            ReadOnlySpan<int> rowOf = slotRows.Span;
            int n = slots.Length;
            var gathered = new float[n * w];
            ReadOnlySpan<float> zs = z.Span;
            for (int i = 0; i < n; i++)
            {
                zs.Slice(rowOf[slots[i]] * w, w).CopyTo(gathered.AsSpan(i * w, w));
            }

            var hidden = new float[n * Intermediate];
            ReferenceLinear.Apply(expert.Up, gathered, n, hidden, parallel: false);
            Activations.Relu2(hidden);
            var output = new float[n * w];
            ReferenceLinear.Apply(expert.Down, hidden, n, output, parallel: false);
            Span<float> outs = slotOutputs.Span;
            for (int i = 0; i < n; i++)
            {
                output.AsSpan(i * w, w).CopyTo(outs.Slice(slots[i] * w, w));
            }
        });
    }

    /// <summary>
    /// The partial sums of an expert shard: for each row r, Σ_j w_j · E_{e_j}(z[r]) over the row's pairs
    /// <c>[pairOffsets[r], pairOffsets[r+1])</c>, accumulated in fp64 in pair order. Returns [rows, w].
    /// </summary>
    public float[] ComputePartials(ReadOnlyMemory<float> z, int rows, ReadOnlySpan<int> pairOffsets, ReadOnlySpan<int> experts, ReadOnlySpan<float> weights)
    {
        int w = Width;
        int pairs = experts.Length;
        var slotRows = new int[pairs];
        for (int r = 0; r < rows; r++)
        {
            slotRows.AsSpan(pairOffsets[r], pairOffsets[r + 1] - pairOffsets[r]).Fill(r);
        }

        var slotOutputs = new float[pairs * w];
        Compute(z, slotRows, new TokenPermutation(experts, _experts.Length), slotOutputs);
        return WeightedSum.OverSlots(rows, pairOffsets, weights, slotOutputs, w);
    }
}
