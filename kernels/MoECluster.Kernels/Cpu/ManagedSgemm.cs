using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Globalization;

namespace MoECluster.Kernels.Cpu;

/// <summary>
/// Y[T, N] = X[T, K] · Wᵀ for a packed W (N = W's rows, K = W's columns), row-major fp32 X and Y. W's panels
/// hold fp32 or bfloat16 (<see cref="PackedMatrix"/>); the micro-kernels widen bfloat16 in registers and always
/// accumulate in fp32, one kernel body per panel format (<see cref="IPanelFormat"/>).
/// <para>
/// Work split: the outputs are cut into contiguous panel ranges, one per core (with fewer panels than cores,
/// the tokens are cut too, in whole MR tiles). Within a range: for each K block (K cut into equal blocks of at
/// most <see cref="KBlock"/>), for each block of <see cref="TokenBlock"/> tokens, for each weight panel, the
/// micro-kernel sweeps the block's MR-token tiles: the panel's kc × NR weights stream from L2 as the vector
/// operand, the tile's token values are broadcast straight from X's rows (no copy of X), and the MR × NR
/// outputs stay in registers until the K block ends. The first K block writes Y, later ones add to it.
/// A partial last panel goes through a scratch tile on the stack.
/// </para>
/// <para>
/// Each output element is summed in the same order whatever the thread count or partition, so results are
/// deterministic. Nothing is allocated but the parallel loop's own bookkeeping.
/// </para>
/// </summary>
public static unsafe class ManagedSgemm
{
    /// <summary>
    /// Most inputs per K block; K is cut into equal blocks of at most this many. Large blocks mean few passes
    /// over Y; the weight panel (kc × NR) then lives in L2, which on the AVX-512 parts measured keeps the FMA
    /// units fed (bench/RESULTS.md).
    /// </summary>
    internal const int KBlock = 1024;

    /// <summary>Tokens per block (a multiple of every kernel's MR): the block's X rows are reused across the weight panels.</summary>
    internal const int TokenBlock = 240;

    /// <summary>Below this many flops the call runs on the calling thread alone.</summary>
    private const long ParallelMinFlops = 1L << 19;

    /// <summary>Y = X · Wᵀ on all cores. <paramref name="x"/> is [tokens, w.Cols], <paramref name="y"/> [tokens, w.Rows].</summary>
    public static void Multiply(PackedMatrix w, ReadOnlySpan<float> x, int tokens, Span<float> y) =>
        Multiply(w, x, tokens, y, Environment.ProcessorCount);

    /// <summary>
    /// Y = X · Wᵀ on at most <paramref name="maxThreads"/> threads; with <paramref name="squaredRelu"/>, Y = relu(X · Wᵀ)²,
    /// applied to each tile right after its last K block while it is still in cache (the values equal
    /// <c>Activations.Relu2</c> over the product, bit for bit).
    /// </summary>
    internal static void Multiply(PackedMatrix w, ReadOnlySpan<float> x, int tokens, Span<float> y, int maxThreads, bool squaredRelu = false)
    {
        ArgumentNullException.ThrowIfNull(w);
        ArgumentOutOfRangeException.ThrowIfNegative(tokens);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxThreads);
        if (x.Length != (long)tokens * w.Cols)
        {
            throw new ArgumentException(string.Create(
                CultureInfo.InvariantCulture, $"The input has {x.Length} values, expected {tokens} x {w.Cols}."), nameof(x));
        }

        if (y.Length != (long)tokens * w.Rows)
        {
            throw new ArgumentException(string.Create(
                CultureInfo.InvariantCulture, $"The output has {y.Length} values, expected {tokens} x {w.Rows}."), nameof(y));
        }

        if (tokens == 0)
        {
            return;
        }

        fixed (float* px = x)
        fixed (float* py = y)
        {
            switch (w.Path, w.Element)
            {
                case (KernelPath.Vector512, PanelElement.BFloat16):
                    Run<Avx512Kernel, BFloat16Panels>(w, px, tokens, py, maxThreads, squaredRelu);
                    break;
                case (KernelPath.Vector512, _):
                    Run<Avx512Kernel, Float32Panels>(w, px, tokens, py, maxThreads, squaredRelu);
                    break;
                case (KernelPath.Vector256, PanelElement.BFloat16):
                    Run<Vector256Kernel, BFloat16Panels>(w, px, tokens, py, maxThreads, squaredRelu);
                    break;
                case (KernelPath.Vector256, _):
                    Run<Vector256Kernel, Float32Panels>(w, px, tokens, py, maxThreads, squaredRelu);
                    break;
                case (_, PanelElement.BFloat16):
                    Run<ScalarKernel, BFloat16Panels>(w, px, tokens, py, maxThreads, squaredRelu);
                    break;
                default:
                    Run<ScalarKernel, Float32Panels>(w, px, tokens, py, maxThreads, squaredRelu);
                    break;
            }
        }

        GC.KeepAlive(w);
    }

    private static void Run<TKernel, TFormat>(PackedMatrix w, float* x, int tokens, float* y, int maxThreads, bool squaredRelu)
        where TKernel : struct, IMicroKernel
        where TFormat : struct, IPanelFormat
    {
        int mr = TKernel.TileRows;
        int panels = w.Panels;
        int tokenTiles = (tokens + mr - 1) / mr;
        long flops = 2L * tokens * w.Cols * w.Rows;
        int threads = flops < ParallelMinFlops ? 1 : Math.Min(maxThreads, panels * tokenTiles);
        if (threads <= 1)
        {
            Range<TKernel, TFormat>(w, x, y, 0, panels, 0, tokens, squaredRelu);
            return;
        }

        // Split the outputs first (each core streams its own share of W, X is shared); with fewer panels than
        // cores, split each panel range's tokens too, in whole MR tiles.
        int panelSplit = Math.Min(threads, panels);
        int tokenSplit = Math.Min(tokenTiles, Math.Max(1, threads / panelSplit));
        int chunks = panelSplit * tokenSplit;
        nint xa = (nint)x;
        nint ya = (nint)y;
        Parallel.For(0, chunks, new ParallelOptions { MaxDegreeOfParallelism = chunks }, chunk =>
        {
            int pi = chunk / tokenSplit;
            int ti = chunk % tokenSplit;
            int p0 = (int)((long)panels * pi / panelSplit);
            int p1 = (int)((long)panels * (pi + 1) / panelSplit);
            int t0 = Math.Min(tokens, (int)((long)tokenTiles * ti / tokenSplit) * mr);
            int t1 = Math.Min(tokens, (int)((long)tokenTiles * (ti + 1) / tokenSplit) * mr);
            Range<TKernel, TFormat>(w, (float*)xa, (float*)ya, p0, p1, t0, t1, squaredRelu);
        });
    }

    /// <summary>Outputs of panels [p0, p1) for tokens [t0, t1); with <paramref name="squaredRelu"/>, relu² on each tile after its last K block.</summary>
    // Fully optimized from the first call: a one-shot forward must not run these loops as tier-0 code.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Range<TKernel, TFormat>(PackedMatrix w, float* x, float* y, int p0, int p1, int t0, int t1, bool squaredRelu)
        where TKernel : struct, IMicroKernel
        where TFormat : struct, IPanelFormat
    {
        if (p0 >= p1 || t0 >= t1)
        {
            return;
        }

        int mr = TKernel.TileRows;
        int nr = TKernel.TileCols;
        int k = w.Cols;
        int n = w.Rows;
        int kBlocks = (k + KBlock - 1) / KBlock;
        int kBlock = (k + kBlocks - 1) / kBlocks;
        float* edge = stackalloc float[mr * nr];
        nint stepBytes = (nint)nr * TFormat.ElementBytes;
        for (int k0 = 0; k0 < k; k0 += kBlock)
        {
            int kc = Math.Min(kBlock, k - k0);
            bool accumulate = k0 > 0;
            bool activate = squaredRelu && k0 + kc == k;
            for (int tb = t0; tb < t1; tb += TokenBlock)
            {
                int mc = Math.Min(TokenBlock, t1 - tb);
                float* xBlock = x + ((long)tb * k) + k0;
                float* yBlock = y + ((long)tb * n);
                for (int p = p0; p < p1; p++)
                {
                    byte* wp = w.Panel(p) + ((long)k0 * nr * TFormat.ElementBytes);

                    // The next panel of this range (or the range's first in the next K block) comes from memory while this
                    // panel's tiles compute, each tile asking for a share in proportion to its rows, so the memory stream is
                    // spread evenly over the arithmetic (a short last tile that asked for the whole panel left memory idle
                    // during the full tiles and stalled itself: 8 rows ran at half the speed of 6).
                    byte* next = p + 1 < p1 ? w.Panel(p + 1) + ((long)k0 * nr * TFormat.ElementBytes)
                        : k0 + kc < k ? w.Panel(p0) + ((long)(k0 + kc) * nr * TFormat.ElementBytes)
                        : null;
                    int cols = Math.Min(nr, n - (p * nr));
                    float* yPanel = yBlock + ((long)p * nr);
                    if (cols == nr)
                    {
                        for (int i = 0; i < mc; i += mr)
                        {
                            TKernel.Run<TFormat>(Math.Min(mr, mc - i), xBlock + ((long)i * k), k, wp, kc, yPanel + ((long)i * n), n, accumulate, PrefetchShare(next, i, Math.Min(mr, mc - i), mc, kc, stepBytes, out nint share), share);
                            if (activate)
                            {
                                SquaredRelu(yPanel + ((long)i * n), n, Math.Min(mr, mc - i), cols);
                            }
                        }
                    }
                    else
                    {
                        for (int i = 0; i < mc; i += mr)
                        {
                            EdgeTile<TKernel, TFormat>(Math.Min(mr, mc - i), cols, xBlock + ((long)i * k), k, wp, kc, yPanel + ((long)i * n), n, accumulate, edge);
                            if (activate)
                            {
                                SquaredRelu(yPanel + ((long)i * n), n, Math.Min(mr, mc - i), cols);
                            }
                        }
                    }
                }
            }
        }
    }

    /// <summary>
    /// Where the tile of <paramref name="rows"/> rows starting at row <paramref name="row"/> of an <paramref name="mc"/>-row
    /// block starts prefetching <paramref name="next"/> (kc steps of <paramref name="stepBytes"/>), and how many bytes a
    /// step (<paramref name="share"/>): its rows' share of the panel, after the shares of the rows above it.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static byte* PrefetchShare(byte* next, int row, int rows, int mc, int kc, nint stepBytes, out nint share)
    {
        if (next == null)
        {
            share = 0;
            return null;
        }

        share = ((stepBytes * rows) + mc - 1) / mc;
        return next + (stepBytes * kc * row / mc);
    }

    /// <summary>
    /// y ← relu(y)² over a rows × cols tile (row stride <paramref name="ldy"/>), as <c>Activations.Relu2</c> does it:
    /// v &gt; 0 ? v·v : 0 (a NaN gives 0).
    /// </summary>
    private static void SquaredRelu(float* y, nint ldy, int rows, int cols)
    {
        for (int r = 0; r < rows; r++)
        {
            float* row = y + (r * ldy);
            int j = 0;
            for (; j <= cols - Vector256<float>.Count; j += Vector256<float>.Count)
            {
                var v = Vector256.Load(row + j);
                var positive = Vector256.ConditionalSelect(Vector256.GreaterThan(v, Vector256<float>.Zero), v, Vector256<float>.Zero);
                (positive * positive).Store(row + j);
            }

            for (; j < cols; j++)
            {
                float v = row[j] > 0f ? row[j] : 0f;
                row[j] = v * v;
            }
        }
    }

    /// <summary>A tile of the last, partial panel: run the full-width kernel on a scratch tile, copy the real columns.</summary>
    // Fully optimized from the first call: a one-shot forward must not run these loops as tier-0 code.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void EdgeTile<TKernel, TFormat>(int rows, int cols, float* x, nint ldx, byte* wp, int kc, float* y, int n, bool accumulate, float* scratch)
        where TKernel : struct, IMicroKernel
        where TFormat : struct, IPanelFormat
    {
        int nr = TKernel.TileCols;
        if (accumulate)
        {
            for (int r = 0; r < rows; r++)
            {
                new ReadOnlySpan<float>(y + ((long)r * n), cols).CopyTo(new Span<float>(scratch + (r * nr), cols));
            }
        }

        TKernel.Run<TFormat>(rows, x, ldx, wp, kc, scratch, nr, accumulate, null, 0);
        for (int r = 0; r < rows; r++)
        {
            new ReadOnlySpan<float>(scratch + (r * nr), cols).CopyTo(new Span<float>(y + ((long)r * n), cols));
        }
    }
}
