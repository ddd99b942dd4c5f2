using MoECluster.Model.Numerics;

namespace MoECluster.Model.Compute;

/// <summary>A Linear's weights prepared once, at load, for one backend (as stored, packed, or uploaded to a device).</summary>
public interface IPreparedLinear
{
    /// <summary>Output features (the weight's rows).</summary>
    int Rows { get; }

    /// <summary>Input features (the weight's columns).</summary>
    int Cols { get; }

    /// <summary>Bytes this preparation holds beyond the checkpoint's mapping (packed copies, device buffers).</summary>
    long PreparedBytes { get; }
}

/// <summary>
/// Where the MoE layer's matrix work runs. Every projection of the layer — gate logits, the latent projections,
/// each expert's up and down projections, the shared expert — is a Linear y = x Wᵀ over [tokens, in] rows with
/// W = [out, in]; backends differ in how they prepare W (once) and multiply (every batch). A backend decides its
/// own threading inside <see cref="Linear"/>.
/// </summary>
public interface IComputeBackend
{
    /// <summary>A short name for logs, benchmarks and configuration ("reference", "managed", "ilgpu", "cublas").</summary>
    string Name { get; }

    IPreparedLinear Prepare(WeightMatrix weight);

    /// <summary>y[t, o] = Σ_i W[o, i] · x[t, i] for x [tokens, Cols] and y [tokens, Rows] (row-major, fp32).</summary>
    void Linear(IPreparedLinear weight, ReadOnlySpan<float> x, int tokens, Span<float> y);

    /// <summary>
    /// One expert's FFN on its gathered rows: output = down(relu(up(z))²), z [tokens, up.Cols], output [tokens, down.Rows].
    /// The default runs two Linears around relu²; a backend may fuse them.
    /// </summary>
    void ExpertFfn(IPreparedLinear up, IPreparedLinear down, ReadOnlySpan<float> z, int tokens, Span<float> output)
    {
        var hidden = new float[tokens * up.Rows];
        Linear(up, z, tokens, hidden);
        Activations.Relu2(hidden);
        Linear(down, hidden, tokens, output);
    }

    /// <summary>
    /// Several experts' FFNs over one gathered buffer: for each group g, rows [g.FirstRow, g.FirstRow + g.Rows) of
    /// <paramref name="output"/> = down(relu(up(the same rows of <paramref name="z"/>))²). All groups share the widths:
    /// z is [rows, up.Cols], output [rows, down.Rows]. The default runs <see cref="ExpertFfn"/> group by group; a
    /// backend may run groups concurrently, but each group's result must not depend on how (deterministic output).
    /// </summary>
    void ExpertFfns(ReadOnlySpan<ExpertFfnGroup> groups, ReadOnlySpan<float> z, Span<float> output)
    {
        foreach (var g in groups)
        {
            int input = g.Up.Cols;
            int width = g.Down.Rows;
            ExpertFfn(g.Up, g.Down, z.Slice(g.FirstRow * input, g.Rows * input), g.Rows, output.Slice(g.FirstRow * width, g.Rows * width));
        }
    }
}

/// <summary>One expert's share of a grouped FFN call (<see cref="IComputeBackend.ExpertFfns"/>): its weights and its rows.</summary>
public readonly record struct ExpertFfnGroup(IPreparedLinear Up, IPreparedLinear Down, int FirstRow, int Rows);

/// <summary>
/// The reference path: weights stay as stored in the memory-mapped checkpoint and are widened row by row;
/// fp32 products with fp64 accumulation (<see cref="ReferenceLinear"/>). The accuracy anchor the fast backends
/// are measured against.
/// </summary>
public sealed class ReferenceBackend : IComputeBackend
{
    public string Name => "reference";

    public IPreparedLinear Prepare(WeightMatrix weight) => new Stored(weight);

    public void Linear(IPreparedLinear weight, ReadOnlySpan<float> x, int tokens, Span<float> y) =>
        ReferenceLinear.Apply(((Stored)weight).Weight, x, tokens, y);

    private sealed record Stored(WeightMatrix Weight) : IPreparedLinear
    {
        public int Rows => Weight.Rows;

        public int Cols => Weight.Cols;

        public long PreparedBytes => 0;
    }
}
