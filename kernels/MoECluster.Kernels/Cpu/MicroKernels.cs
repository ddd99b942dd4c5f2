using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace MoECluster.Kernels.Cpu;

/// <summary>
/// A register-blocked micro-kernel: C[rows, NR] (+)= X[rows, kc] · Wpᵀ, where X is read in place (row stride
/// ldx) and Wp is a packed weight panel (kc × NR weights: step k holds W[0..NR, k], stored as the panel format
/// <c>TFormat</c> says and widened to fp32 in registers). Token values are broadcast, weights are the vector
/// operand, the rows × NR sums stay in registers (fp32) for the whole K range.
/// </summary>
internal unsafe interface IMicroKernel
{
    /// <summary>Token rows per register block (MR).</summary>
    static abstract int TileRows { get; }

    /// <summary>Outputs per register block, the packed panel width (NR).</summary>
    static abstract int TileCols { get; }

    /// <summary>
    /// Runs the block for <paramref name="rows"/> ≤ MR token rows, writing (or with <paramref name="accumulate"/>,
    /// adding to) all NR outputs of each row at <paramref name="c"/> + r·<paramref name="ldc"/>. With a
    /// <paramref name="prefetch"/> address, the kernel asks for the cache lines from there on, <paramref name="prefetchStep"/>
    /// bytes per k step (up to 4 lines a step), into L2 while it computes: the caller points it at the panel it runs next, so
    /// that panel's trip from memory overlaps this tile's arithmetic (kernels may ignore it).
    /// </summary>
    static abstract void Run<TFormat>(int rows, float* x, nint ldx, byte* wp, int kc, float* c, nint ldc, bool accumulate, byte* prefetch, nint prefetchStep)
        where TFormat : struct, IPanelFormat;
}

/// <summary>A row count as a type, so the JIT specializes one kernel body per count and drops the unused rows.</summary>
internal interface IRowCount
{
    static abstract int Value { get; }
}

internal readonly struct Rows1 : IRowCount
{
    public static int Value => 1;
}

internal readonly struct Rows2 : IRowCount
{
    public static int Value => 2;
}

internal readonly struct Rows3 : IRowCount
{
    public static int Value => 3;
}

internal readonly struct Rows4 : IRowCount
{
    public static int Value => 4;
}

internal readonly struct Rows5 : IRowCount
{
    public static int Value => 5;
}

internal readonly struct Rows6 : IRowCount
{
    public static int Value => 6;
}

/// <summary>Vector512 FMA micro-kernel: 6 rows × 64 outputs, 24 zmm accumulators.</summary>
internal readonly unsafe struct Avx512Kernel : IMicroKernel
{
    public const int MR = 6;
    public const int NR = 64;

    public static int TileRows => MR;

    public static int TileCols => NR;

    // Fully optimized from the first call: a one-shot forward must not run these loops as tier-0 code.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Run<TFormat>(int rows, float* x, nint ldx, byte* wp, int kc, float* c, nint ldc, bool accumulate, byte* prefetch, nint prefetchStep)
        where TFormat : struct, IPanelFormat
    {
        switch (rows)
        {
            case 6: Block<Rows6, TFormat>(x, ldx, wp, kc, c, ldc, accumulate, prefetch, prefetchStep); break;
            case 5: Block<Rows5, TFormat>(x, ldx, wp, kc, c, ldc, accumulate, prefetch, prefetchStep); break;
            case 4: Block<Rows4, TFormat>(x, ldx, wp, kc, c, ldc, accumulate, prefetch, prefetchStep); break;
            case 3: Block<Rows3, TFormat>(x, ldx, wp, kc, c, ldc, accumulate, prefetch, prefetchStep); break;
            case 2: Block<Rows2, TFormat>(x, ldx, wp, kc, c, ldc, accumulate, prefetch, prefetchStep); break;
            default: Block<Rows1, TFormat>(x, ldx, wp, kc, c, ldc, accumulate, prefetch, prefetchStep); break;
        }
    }

    // Fully optimized from the first call: a one-shot forward must not run these loops as tier-0 code.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Block<TRows, TFormat>(float* x, nint ldx, byte* wp, int kc, float* c, nint ldc, bool accumulate, byte* prefetch, nint prefetchStep)
        where TRows : struct, IRowCount
        where TFormat : struct, IPanelFormat
    {
        Vector512<float> c00 = default, c01 = default, c02 = default, c03 = default;
        Vector512<float> c10 = default, c11 = default, c12 = default, c13 = default;
        Vector512<float> c20 = default, c21 = default, c22 = default, c23 = default;
        Vector512<float> c30 = default, c31 = default, c32 = default, c33 = default;
        Vector512<float> c40 = default, c41 = default, c42 = default, c43 = default;
        Vector512<float> c50 = default, c51 = default, c52 = default, c53 = default;

        // Y rows are usually far away (an L2 or L3 miss): fetch the tile now, it is read or written after the K loop.
        Prefetch(c);
        if (TRows.Value > 1)
        {
            Prefetch(c + ldc);
        }

        if (TRows.Value > 2)
        {
            Prefetch(c + (2 * ldc));
        }

        if (TRows.Value > 3)
        {
            Prefetch(c + (3 * ldc));
        }

        if (TRows.Value > 4)
        {
            Prefetch(c + (4 * ldc));
        }

        if (TRows.Value > 5)
        {
            Prefetch(c + (5 * ldc));
        }

        float* x0 = x;
        float* x1 = x + ldx;
        float* x2 = x + (2 * ldx);
        float* x3 = x + (3 * ldx);
        float* x4 = x + (4 * ldx);
        float* x5 = x + (5 * ldx);
        for (int k = 0; k < kc; k++)
        {
            TFormat.Load(wp, out Vector512<float> w0, out Vector512<float> w1, out Vector512<float> w2, out Vector512<float> w3);
            if (prefetch != null)
            {
                PrefetchStep(prefetch, prefetchStep);
                prefetch += prefetchStep;
            }

            Vector512<float> b = Vector512.Create(x0[k]);
            c00 = Vector512.FusedMultiplyAdd(w0, b, c00);
            c01 = Vector512.FusedMultiplyAdd(w1, b, c01);
            c02 = Vector512.FusedMultiplyAdd(w2, b, c02);
            c03 = Vector512.FusedMultiplyAdd(w3, b, c03);
            if (TRows.Value > 1)
            {
                b = Vector512.Create(x1[k]);
                c10 = Vector512.FusedMultiplyAdd(w0, b, c10);
                c11 = Vector512.FusedMultiplyAdd(w1, b, c11);
                c12 = Vector512.FusedMultiplyAdd(w2, b, c12);
                c13 = Vector512.FusedMultiplyAdd(w3, b, c13);
            }

            if (TRows.Value > 2)
            {
                b = Vector512.Create(x2[k]);
                c20 = Vector512.FusedMultiplyAdd(w0, b, c20);
                c21 = Vector512.FusedMultiplyAdd(w1, b, c21);
                c22 = Vector512.FusedMultiplyAdd(w2, b, c22);
                c23 = Vector512.FusedMultiplyAdd(w3, b, c23);
            }

            if (TRows.Value > 3)
            {
                b = Vector512.Create(x3[k]);
                c30 = Vector512.FusedMultiplyAdd(w0, b, c30);
                c31 = Vector512.FusedMultiplyAdd(w1, b, c31);
                c32 = Vector512.FusedMultiplyAdd(w2, b, c32);
                c33 = Vector512.FusedMultiplyAdd(w3, b, c33);
            }

            if (TRows.Value > 4)
            {
                b = Vector512.Create(x4[k]);
                c40 = Vector512.FusedMultiplyAdd(w0, b, c40);
                c41 = Vector512.FusedMultiplyAdd(w1, b, c41);
                c42 = Vector512.FusedMultiplyAdd(w2, b, c42);
                c43 = Vector512.FusedMultiplyAdd(w3, b, c43);
            }

            if (TRows.Value > 5)
            {
                b = Vector512.Create(x5[k]);
                c50 = Vector512.FusedMultiplyAdd(w0, b, c50);
                c51 = Vector512.FusedMultiplyAdd(w1, b, c51);
                c52 = Vector512.FusedMultiplyAdd(w2, b, c52);
                c53 = Vector512.FusedMultiplyAdd(w3, b, c53);
            }

            wp += NR * TFormat.ElementBytes;
        }

        Store(c, c00, c01, c02, c03, accumulate);
        if (TRows.Value > 1)
        {
            Store(c + ldc, c10, c11, c12, c13, accumulate);
        }

        if (TRows.Value > 2)
        {
            Store(c + (2 * ldc), c20, c21, c22, c23, accumulate);
        }

        if (TRows.Value > 3)
        {
            Store(c + (3 * ldc), c30, c31, c32, c33, accumulate);
        }

        if (TRows.Value > 4)
        {
            Store(c + (4 * ldc), c40, c41, c42, c43, accumulate);
        }

        if (TRows.Value > 5)
        {
            Store(c + (5 * ldc), c50, c51, c52, c53, accumulate);
        }
    }

    /// <summary>Up to 4 cache lines from <paramref name="p"/> on, <paramref name="step"/> bytes' worth, into L2.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void PrefetchStep(byte* p, nint step)
    {
        if (Sse.IsSupported)
        {
            Sse.Prefetch1(p);
            if (step > 64)
            {
                Sse.Prefetch1(p + 64);
            }

            if (step > 128)
            {
                Sse.Prefetch1(p + 128);
            }

            if (step > 192)
            {
                Sse.Prefetch1(p + 192);
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Prefetch(float* c)
    {
        if (Sse.IsSupported)
        {
            Sse.Prefetch0(c);
            Sse.Prefetch0(c + 16);
            Sse.Prefetch0(c + 32);
            Sse.Prefetch0(c + 48);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store(float* c, Vector512<float> a0, Vector512<float> a1, Vector512<float> a2, Vector512<float> a3, bool accumulate)
    {
        if (accumulate)
        {
            a0 += Vector512.Load(c);
            a1 += Vector512.Load(c + 16);
            a2 += Vector512.Load(c + 32);
            a3 += Vector512.Load(c + 48);
        }

        a0.Store(c);
        a1.Store(c + 16);
        a2.Store(c + 32);
        a3.Store(c + 48);
    }
}

/// <summary>Vector256 FMA micro-kernel: 6 rows × 16 outputs, 12 ymm accumulators (fits AVX2's 16 registers).</summary>
internal readonly unsafe struct Vector256Kernel : IMicroKernel
{
    public const int MR = 6;
    public const int NR = 16;

    public static int TileRows => MR;

    public static int TileCols => NR;

    // Fully optimized from the first call: a one-shot forward must not run these loops as tier-0 code.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Run<TFormat>(int rows, float* x, nint ldx, byte* wp, int kc, float* c, nint ldc, bool accumulate, byte* prefetch, nint prefetchStep)
        where TFormat : struct, IPanelFormat
    {
        switch (rows)
        {
            case 6: Block<Rows6, TFormat>(x, ldx, wp, kc, c, ldc, accumulate); break;
            case 5: Block<Rows5, TFormat>(x, ldx, wp, kc, c, ldc, accumulate); break;
            case 4: Block<Rows4, TFormat>(x, ldx, wp, kc, c, ldc, accumulate); break;
            case 3: Block<Rows3, TFormat>(x, ldx, wp, kc, c, ldc, accumulate); break;
            case 2: Block<Rows2, TFormat>(x, ldx, wp, kc, c, ldc, accumulate); break;
            default: Block<Rows1, TFormat>(x, ldx, wp, kc, c, ldc, accumulate); break;
        }
    }

    // Fully optimized from the first call: a one-shot forward must not run these loops as tier-0 code.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Block<TRows, TFormat>(float* x, nint ldx, byte* wp, int kc, float* c, nint ldc, bool accumulate)
        where TRows : struct, IRowCount
        where TFormat : struct, IPanelFormat
    {
        Vector256<float> c00 = default, c01 = default;
        Vector256<float> c10 = default, c11 = default;
        Vector256<float> c20 = default, c21 = default;
        Vector256<float> c30 = default, c31 = default;
        Vector256<float> c40 = default, c41 = default;
        Vector256<float> c50 = default, c51 = default;

        float* x0 = x;
        float* x1 = x + ldx;
        float* x2 = x + (2 * ldx);
        float* x3 = x + (3 * ldx);
        float* x4 = x + (4 * ldx);
        float* x5 = x + (5 * ldx);
        for (int k = 0; k < kc; k++)
        {
            TFormat.Load(wp, out Vector256<float> w0, out Vector256<float> w1);

            Vector256<float> b = Vector256.Create(x0[k]);
            c00 = Vector256.FusedMultiplyAdd(w0, b, c00);
            c01 = Vector256.FusedMultiplyAdd(w1, b, c01);
            if (TRows.Value > 1)
            {
                b = Vector256.Create(x1[k]);
                c10 = Vector256.FusedMultiplyAdd(w0, b, c10);
                c11 = Vector256.FusedMultiplyAdd(w1, b, c11);
            }

            if (TRows.Value > 2)
            {
                b = Vector256.Create(x2[k]);
                c20 = Vector256.FusedMultiplyAdd(w0, b, c20);
                c21 = Vector256.FusedMultiplyAdd(w1, b, c21);
            }

            if (TRows.Value > 3)
            {
                b = Vector256.Create(x3[k]);
                c30 = Vector256.FusedMultiplyAdd(w0, b, c30);
                c31 = Vector256.FusedMultiplyAdd(w1, b, c31);
            }

            if (TRows.Value > 4)
            {
                b = Vector256.Create(x4[k]);
                c40 = Vector256.FusedMultiplyAdd(w0, b, c40);
                c41 = Vector256.FusedMultiplyAdd(w1, b, c41);
            }

            if (TRows.Value > 5)
            {
                b = Vector256.Create(x5[k]);
                c50 = Vector256.FusedMultiplyAdd(w0, b, c50);
                c51 = Vector256.FusedMultiplyAdd(w1, b, c51);
            }

            wp += NR * TFormat.ElementBytes;
        }

        Store(c, c00, c01, accumulate);
        if (TRows.Value > 1)
        {
            Store(c + ldc, c10, c11, accumulate);
        }

        if (TRows.Value > 2)
        {
            Store(c + (2 * ldc), c20, c21, accumulate);
        }

        if (TRows.Value > 3)
        {
            Store(c + (3 * ldc), c30, c31, accumulate);
        }

        if (TRows.Value > 4)
        {
            Store(c + (4 * ldc), c40, c41, accumulate);
        }

        if (TRows.Value > 5)
        {
            Store(c + (5 * ldc), c50, c51, accumulate);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store(float* c, Vector256<float> a0, Vector256<float> a1, bool accumulate)
    {
        if (accumulate)
        {
            a0 += Vector256.Load(c);
            a1 += Vector256.Load(c + 8);
        }

        a0.Store(c);
        a1.Store(c + 8);
    }
}

/// <summary>
/// Scalar micro-kernel over the same 16-wide panels as <see cref="Vector256Kernel"/>: for machines without
/// 256-bit SIMD. Sums in the same order (one fused multiply-add per step) so every path agrees closely.
/// </summary>
internal readonly unsafe struct ScalarKernel : IMicroKernel
{
    public const int MR = 6;
    public const int NR = Vector256Kernel.NR;

    public static int TileRows => MR;

    public static int TileCols => NR;

    // Fully optimized from the first call: a one-shot forward must not run these loops as tier-0 code.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Run<TFormat>(int rows, float* x, nint ldx, byte* wp, int kc, float* c, nint ldc, bool accumulate, byte* prefetch, nint prefetchStep)
        where TFormat : struct, IPanelFormat
    {
        float* acc = stackalloc float[MR * NR];
        new Span<float>(acc, MR * NR).Clear();
        for (int k = 0; k < kc; k++)
        {
            for (int r = 0; r < rows; r++)
            {
                float xv = x[(r * ldx) + k];
                float* a = acc + (r * NR);
                for (int j = 0; j < NR; j++)
                {
                    a[j] = MathF.FusedMultiplyAdd(TFormat.Load(wp, j), xv, a[j]);
                }
            }

            wp += NR * TFormat.ElementBytes;
        }

        for (int r = 0; r < rows; r++)
        {
            float* dst = c + (r * ldc);
            float* a = acc + (r * NR);
            for (int j = 0; j < NR; j++)
            {
                dst[j] = accumulate ? dst[j] + a[j] : a[j];
            }
        }
    }
}
