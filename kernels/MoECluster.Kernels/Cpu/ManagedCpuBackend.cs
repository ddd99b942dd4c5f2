using System.Buffers;
using MoECluster.Model.Compute;
using MoECluster.Model.Numerics;

namespace MoECluster.Kernels.Cpu;

/// <summary>
/// The managed CPU backend: weights packed once into panels (<see cref="PackedMatrix"/>: BF16 weights as bfloat16,
/// widened to fp32 in the micro-kernel; other dtypes as fp32), every Linear a cache-blocked, register-blocked SGEMM
/// (<see cref="ManagedSgemm"/>) over all cores, with Vector512 FMA where the hardware has it and Vector256
/// otherwise. fp32 accumulation. Once packed, a weight's mapped checkpoint pages leave the resident set.
/// </summary>
public sealed class ManagedCpuBackend : IComputeBackend
{
    private readonly KernelPath _path;
    private readonly int _threads;

    public ManagedCpuBackend()
        : this(KernelPaths.Best)
    {
    }

    /// <summary>A backend pinned to one micro-kernel (tests use it to exercise the narrower paths).</summary>
    internal ManagedCpuBackend(KernelPath path)
        : this(path, Environment.ProcessorCount, DefaultExpertParallelMaxRows)
    {
    }

    /// <summary>A backend on at most <paramref name="threads"/> cores that runs experts in parallel up to <paramref name="expertParallelMaxRows"/> rows each (tests pin both).</summary>
    internal ManagedCpuBackend(KernelPath path, int threads, int expertParallelMaxRows)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(threads);
        _path = path;
        _threads = threads;
        ExpertParallelMaxRows = expertParallelMaxRows;
    }

    /// <summary>
    /// Experts with at most this many rows each run whole on separate cores (<see cref="ExpertFfns"/>); above it,
    /// one after another with each GEMM split over the cores.
    /// </summary>
    internal const int DefaultExpertParallelMaxRows = 512;

    internal int ExpertParallelMaxRows { get; }

    public string Name => "managed";

    public IPreparedLinear Prepare(WeightMatrix weight)
    {
        ArgumentNullException.ThrowIfNull(weight);
        PackedMatrix packed = PackedMatrix.FromWeight(weight, _path);

        // The panels are the copy every Linear reads; the checkpoint's mapped pages need not stay resident too.
        weight.ReleaseResidentPages();
        return packed;
    }

    public void Linear(IPreparedLinear weight, ReadOnlySpan<float> x, int tokens, Span<float> y) =>
        ManagedSgemm.Multiply(AsPacked(weight), x, tokens, y, _threads);

    /// <summary>
    /// down(relu(up(z))²) with relu² applied to each tile of the up projection as it is stored (no extra pass) and
    /// the hidden activations in pooled scratch rather than a fresh array.
    /// </summary>
    public void ExpertFfn(IPreparedLinear up, IPreparedLinear down, ReadOnlySpan<float> z, int tokens, Span<float> output)
    {
        PackedMatrix upPacked = AsPacked(up);
        PackedMatrix downPacked = AsPacked(down);
        int hiddenLength = checked(tokens * upPacked.Rows);
        float[] rented = ArrayPool<float>.Shared.Rent(hiddenLength);
        try
        {
            Span<float> hidden = rented.AsSpan(0, hiddenLength);
            ManagedSgemm.Multiply(upPacked, z, tokens, hidden, _threads, squaredRelu: true);
            ManagedSgemm.Multiply(downPacked, hidden, tokens, output, _threads);
        }
        finally
        {
            ArrayPool<float>.Shared.Return(rented);
        }
    }

    /// <summary>
    /// The experts' FFNs over one gathered buffer. When every expert has at most <see cref="ExpertParallelMaxRows"/>
    /// rows and the experts keep the cores evenly busy (<see cref="SideBySide"/>), whole experts run on separate cores, each on one thread
    /// (largest rows × weights first, each core taking the next when it is done): no fork and join per small GEMM.
    /// Otherwise the experts run one after another, each GEMM over all cores. Either way each expert's output is
    /// summed in the same order, so the result is the same bit for bit. One scratch buffer per call.
    /// </summary>
    public unsafe void ExpertFfns(ReadOnlySpan<ExpertFfnGroup> groups, ReadOnlySpan<float> z, Span<float> output)
    {
        if (groups.IsEmpty)
        {
            return;
        }

        var packed = new (PackedMatrix Up, PackedMatrix Down, int FirstRow, int Rows)[groups.Length];
        int input = AsPacked(groups[0].Up).Cols;
        int width = AsPacked(groups[0].Down).Rows;
        int hiddenWidth = 0;
        int maxRows = 0;
        for (int i = 0; i < groups.Length; i++)
        {
            var g = groups[i];
            PackedMatrix up = AsPacked(g.Up);
            PackedMatrix down = AsPacked(g.Down);
            if (up.Cols != input || down.Rows != width || down.Cols != up.Rows || g.FirstRow < 0 || g.Rows < 0
                || ((long)g.FirstRow + g.Rows) * input > z.Length || ((long)g.FirstRow + g.Rows) * width > output.Length)
            {
                throw new ArgumentException($"expert group {i} ([{g.FirstRow}, +{g.Rows}) rows of up [{up.Rows}, {up.Cols}], down [{down.Rows}, {down.Cols}]) does not fit z [{z.Length / input}, {input}] and output [{output.Length / width}, {width}]", nameof(groups));
            }

            packed[i] = (up, down, g.FirstRow, g.Rows);
            hiddenWidth = Math.Max(hiddenWidth, up.Rows);
            maxRows = Math.Max(maxRows, g.Rows);
        }

        bool expertParallel = SideBySide(groups);
        int workers = expertParallel ? Math.Min(_threads, groups.Length) : 1;
        int hiddenLength = checked(maxRows * hiddenWidth);
        float[] scratch = ArrayPool<float>.Shared.Rent(checked(workers * hiddenLength));
        try
        {
            fixed (float* pz = z)
            fixed (float* po = output)
            fixed (float* ph = scratch)
            {
                if (!expertParallel)
                {
                    foreach (var g in packed)
                    {
                        Run(g, pz, po, ph, _threads);
                    }

                    return;
                }

                // Longest first (rows × weights), ties in group order; each worker takes the next group when it is done.
                int[] order = new int[packed.Length];
                long[] costs = new long[packed.Length];
                for (int i = 0; i < order.Length; i++)
                {
                    order[i] = i;
                    costs[i] = Cost(groups[i]);
                }

                Array.Sort(order, (a, b) => costs[a] != costs[b] ? costs[b].CompareTo(costs[a]) : a.CompareTo(b));
                int next = -1;
                nint za = (nint)pz, oa = (nint)po, ha = (nint)ph;
                Parallel.For(0, workers, new ParallelOptions { MaxDegreeOfParallelism = workers }, worker =>
                {
                    float* hidden = (float*)ha + ((long)worker * hiddenLength);
                    for (int i = Interlocked.Increment(ref next); i < order.Length; i = Interlocked.Increment(ref next))
                    {
                        Run(packed[order[i]], (float*)za, (float*)oa, hidden, 1);
                    }
                });
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(scratch);
        }

        void Run((PackedMatrix Up, PackedMatrix Down, int FirstRow, int Rows) g, float* pz, float* po, float* hidden, int threads)
        {
            var rowsIn = new ReadOnlySpan<float>(pz + ((long)g.FirstRow * input), g.Rows * input);
            var rowsOut = new Span<float>(po + ((long)g.FirstRow * width), g.Rows * width);
            var h = new Span<float>(hidden, g.Rows * g.Up.Rows);
            ManagedSgemm.Multiply(g.Up, rowsIn, g.Rows, h, threads, squaredRelu: true);
            ManagedSgemm.Multiply(g.Down, h, g.Rows, rowsOut, threads);
        }
    }

    /// <summary>
    /// Whether <see cref="ExpertFfns"/> runs these groups side by side: more than one core, no expert above
    /// <see cref="ExpertParallelMaxRows"/> rows, and the cores evenly busy — handing the experts out largest first,
    /// each to the least loaded core, ends within <see cref="SideBySideSlack"/> of a perfect split (22 one-row
    /// experts on 2 cores do; on 16 cores they do not, and each GEMM is split over the cores instead).
    /// </summary>
    internal bool SideBySide(ReadOnlySpan<ExpertFfnGroup> groups)
    {
        if (_threads <= 1 || groups.Length < 2)
        {
            return false;
        }

        var costs = new long[groups.Length];
        long total = 0;
        for (int i = 0; i < groups.Length; i++)
        {
            if (groups[i].Rows > ExpertParallelMaxRows)
            {
                return false;
            }

            costs[i] = Cost(groups[i]);
            total += costs[i];
        }

        Array.Sort(costs);
        var loads = new long[Math.Min(_threads, groups.Length)];
        for (int i = costs.Length - 1; i >= 0; i--)
        {
            int least = 0;
            for (int c = 1; c < loads.Length; c++)
            {
                least = loads[c] < loads[least] ? c : least;
            }

            loads[least] += costs[i];
        }

        return loads.Max() <= (1 + SideBySideSlack) * total / _threads;
    }

    /// <summary>How far past a perfect split of the work over the cores side by side may end (0.1: 10%).</summary>
    internal const double SideBySideSlack = 0.1;

    /// <summary>An expert's work: rows × its weights (up and down).</summary>
    private static long Cost(ExpertFfnGroup g) => (long)g.Rows * (((long)g.Up.Rows * g.Up.Cols) + ((long)g.Down.Rows * g.Down.Cols));

    private static PackedMatrix AsPacked(IPreparedLinear weight)
    {
        ArgumentNullException.ThrowIfNull(weight);
        return weight as PackedMatrix
            ?? throw new ArgumentException($"{weight.GetType().Name} was not prepared by the managed backend.", nameof(weight));
    }
}
