using System.Buffers;
using MoECluster.Model.Compute;
using MoECluster.Model.Dispatch;
using MoECluster.Model.Numerics;

namespace MoECluster.Model.Experts;

/// <summary>
/// The grouped expert FFN (Megatron-Core's "experts") on a compute backend: for each expert with work, gather its
/// rows, compute down(relu(up(z))²) on the backend, and scatter each result row to its slot. All experts' rows are
/// gathered into one buffer and go to the backend in one grouped call (<see cref="IComputeBackend.ExpertFfns"/>),
/// which decides whether experts run one after another or side by side; the two buffers come from the shared array
/// pool once per call.
/// Slot outputs are combined by <see cref="WeightedSum"/> in a fixed order, so the result does not depend on the
/// thread schedule. An expert output or a combined row outside the float32 range (from finite rows: the input is too
/// large for the model) throws <see cref="ForwardOverflowException"/> naming the layer, the expert and the step.
/// </summary>
public sealed class GroupedExperts
{
    private readonly PreparedExpert?[] _experts;
    private readonly IComputeBackend _backend;

    /// <param name="experts">Expert weights indexed by expert id; null where this process does not hold the expert.</param>
    /// <param name="layer">The backbone layer the experts belong to (named in errors).</param>
    public GroupedExperts(IReadOnlyList<ExpertWeights?> experts, int routedWidth, int intermediate, IComputeBackend backend, int layer)
    {
        Layer = layer;
        _backend = backend;
        _experts = [.. experts.Select(e => e is null ? null : new PreparedExpert(e, backend.Prepare(e.Up), backend.Prepare(e.Down)))];
        Width = routedWidth;
        Intermediate = intermediate;
    }

    public int Layer { get; }

    /// <summary>The layer's routed experts (ids 0 .. RoutedExperts − 1), held here or not.</summary>
    public int RoutedExperts => _experts.Length;

    public int Width { get; }

    public int Intermediate { get; }

    public string Backend => _backend.Name;

    /// <summary>Bytes of the expert weights held (as stored: BF16 in real checkpoints).</summary>
    public long WeightBytes => _experts.Where(e => e is not null).Sum(e => e!.Weights.Up.ByteLength + e.Weights.Down.ByteLength);

    /// <summary>Bytes the backend holds in addition (packed copies, device buffers).</summary>
    public long PreparedBytes => _experts.Where(e => e is not null).Sum(e => e!.Up.PreparedBytes + e.Down.PreparedBytes);

    /// <summary>
    /// For every slot s of <paramref name="permutation"/>, writes E(z[slotRows[s]]) into row s of
    /// <paramref name="slotOutputs"/> ([slots, w]); <paramref name="z"/> is [rows, w].
    /// </summary>
    public void Compute(ReadOnlySpan<float> z, ReadOnlySpan<int> slotRows, TokenPermutation permutation, Span<float> slotOutputs)
    {
        ArgumentNullException.ThrowIfNull(permutation);
        int w = Width;
        int[] order = permutation.Slots;
        int length = checked(order.Length * w);
        float[] outputBuffer = ArrayPool<float>.Shared.Rent(length);
        try
        {
            Span<float> output = outputBuffer.AsSpan(0, length);
            RunExperts(z, slotRows, permutation, output);
            for (int i = 0; i < order.Length; i++)
            {
                output.Slice(i * w, w).CopyTo(slotOutputs.Slice(order[i] * w, w));
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(outputBuffer);
        }
    }

    /// <summary>
    /// The combined sums of <paramref name="pairs"/>' rows: u[r] = Σ_j w_j · E_{e_j}(z[r]) over row r's pairs,
    /// accumulated in fp64 in pair order and rounded once (<see cref="WeightedSum"/>), read straight from where the
    /// experts wrote their outputs. <paramref name="z"/> is [rows, w]; returns [rows, w]. The sums are not checked for
    /// the float32 range (the caller names its own input in that error).
    /// </summary>
    public float[] ComputeCombined(ReadOnlySpan<float> z, RoutedPairs pairs)
    {
        ArgumentNullException.ThrowIfNull(pairs);
        int w = Width;
        int rows = pairs.Rows;
        if (z.Length != (long)rows * w)
        {
            throw new ArgumentException($"layer {Layer}: {pairs.Rows} rows of pairs need [{rows}, {w}] routed rows; got {z.Length} values", nameof(z));
        }

        var slotRows = new int[pairs.Count];
        for (int r = 0; r < rows; r++)
        {
            slotRows.AsSpan(pairs.Offsets[r], pairs.CountOf(r)).Fill(r);
        }

        var permutation = new TokenPermutation(pairs.Experts, _experts.Length);
        int[] order = permutation.Slots;
        var outputRows = new int[order.Length];
        for (int i = 0; i < order.Length; i++)
        {
            outputRows[order[i]] = i;
        }

        int length = checked(order.Length * w);
        float[] outputBuffer = ArrayPool<float>.Shared.Rent(length);
        try
        {
            Span<float> output = outputBuffer.AsSpan(0, length);
            RunExperts(z, slotRows, permutation, output);
            return WeightedSum.OverSlots(rows, pairs.Offsets, pairs.Weights, output, outputRows, w);
        }
        finally
        {
            ArrayPool<float>.Shared.Return(outputBuffer);
        }
    }

    /// <summary>The experts' outputs grouped by expert: row i of <paramref name="output"/> is slot permutation.Slots[i]'s.</summary>
    private void RunExperts(ReadOnlySpan<float> z, ReadOnlySpan<int> slotRows, TokenPermutation permutation, Span<float> output)
    {
        int w = Width;
        for (int e = 0; e < permutation.Experts; e++)
        {
            if (permutation.CountOf(e) > 0 && _experts[e] is null)
            {
                throw new InvalidOperationException($"expert {e} is routed to but not held by this process");
            }
        }

        // One gathered buffer in permutation order (expert by expert) and one grouped backend call.
        int[] offsets = permutation.Offsets;
        int[] order = permutation.Slots;
        int slots = order.Length;
        int active = 0;
        for (int e = 0; e < permutation.Experts; e++)
        {
            active += permutation.CountOf(e) > 0 ? 1 : 0;
        }

        var groups = new ExpertFfnGroup[active];
        for (int e = 0, g = 0; e < permutation.Experts; e++)
        {
            if (permutation.CountOf(e) > 0)
            {
                var expert = _experts[e]!;
                groups[g++] = new ExpertFfnGroup(expert.Up, expert.Down, offsets[e], permutation.CountOf(e));
            }
        }

        int length = checked(slots * w);
        float[] gatheredBuffer = ArrayPool<float>.Shared.Rent(length);
        try
        {
            Span<float> gathered = gatheredBuffer.AsSpan(0, length);
            for (int i = 0; i < slots; i++)
            {
                z.Slice(slotRows[order[i]] * w, w).CopyTo(gathered.Slice(i * w, w));
            }

            _backend.ExpertFfns(groups, gathered, output);
            int bad = FloatRange.FirstNonFinite(output);
            if (bad >= 0)
            {
                int row = bad / w;
                int e = 0;
                while (offsets[e + 1] <= row)
                {
                    e++;
                }

                throw ForwardOverflowException.At(Layer, $"the output of expert {e} (its FFN down(relu(up(z))²))", FloatRange.MaxAbs(z));
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(gatheredBuffer);
        }
    }

    /// <summary>
    /// The partial sums of an expert shard: for each row r of <paramref name="pairs"/>, Σ_j w_j · E_{e_j}(z[r]) over
    /// the row's pairs, accumulated in fp64 in pair order. <paramref name="z"/> is [rows, w]; returns [rows, w].
    /// </summary>
    public float[] ComputePartials(ReadOnlySpan<float> z, RoutedPairs pairs)
    {
        float[] partials = ComputeCombined(z, pairs);
        ForwardOverflowException.ThrowIfNonFinite(partials, Layer, "the weighted sum of the routed experts' outputs", z);
        return partials;
    }

    private sealed record PreparedExpert(ExpertWeights Weights, IPreparedLinear Up, IPreparedLinear Down);
}
