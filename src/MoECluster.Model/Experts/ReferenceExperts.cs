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

    /// <summary>
    /// For every slot s of <paramref name="permutation"/> whose expert is held here, writes E(z[token(s)]) into
    /// row s of <paramref name="slotOutputs"/> ([slots, w]). <paramref name="z"/> is [tokens, w] with token(s) = s / topK.
    /// </summary>
    public void Compute(ReadOnlyMemory<float> z, int topK, TokenPermutation permutation, Memory<float> slotOutputs)
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
            int n = slots.Length;
            var gathered = new float[n * w];
            ReadOnlySpan<float> zs = z.Span;
            for (int i = 0; i < n; i++)
            {
                zs.Slice(slots[i] / topK * w, w).CopyTo(gathered.AsSpan(i * w, w));
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
}
