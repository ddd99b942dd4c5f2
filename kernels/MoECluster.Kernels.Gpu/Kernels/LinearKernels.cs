using ILGPU;

namespace MoECluster.Kernels.Gpu.Kernels;

/// <summary>
/// The Linear kernels, y[t, o] = Σ_i W[o, i] · x[t, i], over weights prepared by <see cref="DeviceLinear"/> (rows
/// padded with zeros to <see cref="DeviceLinear.ColumnAlignment"/> columns) and activations x [tokens, xStride],
/// 16-byte aligned, whose pad columns are zero too (so 0 · pad never meets a NaN). fp32 products, fp32
/// accumulation (ptxas fuses the multiply-adds).
/// </summary>
public static class LinearKernels
{
    /// <summary>Tokens one GEMV pass keeps in registers; more tokens run as further passes (grid Y).</summary>
    public const int GemvTokenBlock = 16;

    /// <summary>Tokens per tile of the tiled kernel.</summary>
    public const int TileTokens = 32;

    /// <summary>Output rows per tile of the tiled kernel.</summary>
    public const int TileRows = 64;

    /// <summary>Columns per step of the tiled kernel.</summary>
    public const int TileK = 32;

    /// <summary>Threads per group of the tiled kernel (16 × 16, each 2 tokens × 4 rows).</summary>
    public const int TiledGroupSize = 256;

    private const int Pitch = TileK + 1;

    /// <summary>
    /// The small-batch (memory-bound) kernel: one warp per output row, each weight byte read once per pass,
    /// coalesced (lane q reads 16-column chunk q, q+32, ... as 16-byte vectors), widened in registers and dotted with up to
    /// <see cref="GemvTokenBlock"/> token rows held in registers, then reduced across the warp with shuffles.
    /// Explicitly grouped: group = k warps (k rows), grid = (⌈rows / k⌉, ⌈tokens / 16⌉). Needs 32-lane warps.
    /// </summary>
    public static void GemvKernel<TFormat>(
        ArrayView<ulong> w, ArrayView<float> x, ArrayView<float> y, int rows, int chunksPerRow, int xStride, int tokens, int yStride)
        where TFormat : struct, IWeightFormat
    {
        int warpsPerGroup = Group.DimX / Warp.WarpSize;
        int row = (Grid.IdxX * warpsPerGroup) + Warp.WarpIdx;
        int t0 = Grid.IdxY * GemvTokenBlock;
        if (row >= rows || t0 >= tokens)
        {
            return;
        }

        int n = tokens - t0 < GemvTokenBlock ? tokens - t0 : GemvTokenBlock;
        GemvBlock<TFormat>(w.Cast<ULong2>(), (long)row * (chunksPerRow / 4) * 2, chunksPerRow / 4, x.Cast<Float4>(), t0 * (long)(xStride / 4), xStride / 4, n, y,
            ((long)t0 * yStride) + row, yStride);
    }

    /// <summary>
    /// The GEMV over a group of experts in one launch (the expert FFN's up or down projection for every expert
    /// at once): weights stacked [slots, rows, padded cols], x the gathered rows ordered by expert, expert e's rows
    /// at x[offsets[e] .. offsets[e+1]) and its weights in stack slot slotOf[e] (&lt; 0: not held, skipped).
    /// Each warp loops over its expert's rows 16 at a time. Explicitly grouped: grid = (⌈rows / k⌉, experts).
    /// </summary>
    public static void GroupedGemvKernel<TFormat>(
        ArrayView<ulong> w, ArrayView<int> slotOf, ArrayView<int> offsets, ArrayView<float> x, ArrayView<float> y, int rows, int chunksPerRow, int xStride,
        int yStride)
        where TFormat : struct, IWeightFormat
    {
        int warpsPerGroup = Group.DimX / Warp.WarpSize;
        int row = (Grid.IdxX * warpsPerGroup) + Warp.WarpIdx;
        int expert = Grid.IdxY;
        int slot = slotOf[expert];
        if (row >= rows || slot < 0)
        {
            return;
        }

        int first = offsets[expert];
        int count = offsets[expert + 1] - first;
        int chunks16 = chunksPerRow / 4;
        long wRow = (((long)slot * rows) + row) * chunks16 * 2;
        long s4 = xStride / 4;
        for (int t0 = 0; t0 < count; t0 += GemvTokenBlock)
        {
            int n = count - t0 < GemvTokenBlock ? count - t0 : GemvTokenBlock;
            GemvBlock<TFormat>(w.Cast<ULong2>(), wRow, chunks16, x.Cast<Float4>(), (first + t0) * s4, s4, n, y,
                ((long)(first + t0) * yStride) + row, yStride);
        }
    }

    /// <summary>
    /// One warp's dot products of one weight row (16-column chunks from <paramref name="wRow"/>) with
    /// <paramref name="n"/> ≤ 16 consecutive x rows (x row j at Float4 index xBase + j·s4), written to
    /// y[yb + j·yStride].
    /// </summary>
    private static void GemvBlock<TFormat>(
        ArrayView<ULong2> w16, long wRow, int chunks16, ArrayView<Float4> x4, long xBase, long s4, int n, ArrayView<float> y, long yb, int yStride)
        where TFormat : struct, IWeightFormat
    {
        int lane = Warp.LaneIdx;
        TFormat format = default;
        float a0 = 0f;
        float a1 = 0f;
        float a2 = 0f;
        float a3 = 0f;
        float a4 = 0f;
        float a5 = 0f;
        float a6 = 0f;
        float a7 = 0f;
        float a8 = 0f;
        float a9 = 0f;
        float a10 = 0f;
        float a11 = 0f;
        float a12 = 0f;
        float a13 = 0f;
        float a14 = 0f;
        float a15 = 0f;
        for (int q = lane; q < chunks16; q += Warp.WarpSize)
        {
            // 16 columns a lane: both weight loads issue before any use, two 16-byte loads in flight per lane.
            format.Load8(w16, wRow + (2L * q), out float w0, out float w1, out float w2, out float w3, out float w4, out float w5, out float w6, out float w7);
            format.Load8(w16, wRow + (2L * q) + 1, out float v0, out float v1, out float v2, out float v3, out float v4, out float v5, out float v6, out float v7);
            long xq = xBase + (4L * q);
            a0 += Dot16(x4, xq, w0, w1, w2, w3, w4, w5, w6, w7, v0, v1, v2, v3, v4, v5, v6, v7);
            if (n > 1)
            {
                a1 += Dot16(x4, xq + (1 * s4), w0, w1, w2, w3, w4, w5, w6, w7, v0, v1, v2, v3, v4, v5, v6, v7);
            }

            if (n > 2)
            {
                a2 += Dot16(x4, xq + (2 * s4), w0, w1, w2, w3, w4, w5, w6, w7, v0, v1, v2, v3, v4, v5, v6, v7);
            }

            if (n > 3)
            {
                a3 += Dot16(x4, xq + (3 * s4), w0, w1, w2, w3, w4, w5, w6, w7, v0, v1, v2, v3, v4, v5, v6, v7);
            }

            if (n > 4)
            {
                a4 += Dot16(x4, xq + (4 * s4), w0, w1, w2, w3, w4, w5, w6, w7, v0, v1, v2, v3, v4, v5, v6, v7);
            }

            if (n > 5)
            {
                a5 += Dot16(x4, xq + (5 * s4), w0, w1, w2, w3, w4, w5, w6, w7, v0, v1, v2, v3, v4, v5, v6, v7);
            }

            if (n > 6)
            {
                a6 += Dot16(x4, xq + (6 * s4), w0, w1, w2, w3, w4, w5, w6, w7, v0, v1, v2, v3, v4, v5, v6, v7);
            }

            if (n > 7)
            {
                a7 += Dot16(x4, xq + (7 * s4), w0, w1, w2, w3, w4, w5, w6, w7, v0, v1, v2, v3, v4, v5, v6, v7);
            }

            if (n > 8)
            {
                a8 += Dot16(x4, xq + (8 * s4), w0, w1, w2, w3, w4, w5, w6, w7, v0, v1, v2, v3, v4, v5, v6, v7);
            }

            if (n > 9)
            {
                a9 += Dot16(x4, xq + (9 * s4), w0, w1, w2, w3, w4, w5, w6, w7, v0, v1, v2, v3, v4, v5, v6, v7);
            }

            if (n > 10)
            {
                a10 += Dot16(x4, xq + (10 * s4), w0, w1, w2, w3, w4, w5, w6, w7, v0, v1, v2, v3, v4, v5, v6, v7);
            }

            if (n > 11)
            {
                a11 += Dot16(x4, xq + (11 * s4), w0, w1, w2, w3, w4, w5, w6, w7, v0, v1, v2, v3, v4, v5, v6, v7);
            }

            if (n > 12)
            {
                a12 += Dot16(x4, xq + (12 * s4), w0, w1, w2, w3, w4, w5, w6, w7, v0, v1, v2, v3, v4, v5, v6, v7);
            }

            if (n > 13)
            {
                a13 += Dot16(x4, xq + (13 * s4), w0, w1, w2, w3, w4, w5, w6, w7, v0, v1, v2, v3, v4, v5, v6, v7);
            }

            if (n > 14)
            {
                a14 += Dot16(x4, xq + (14 * s4), w0, w1, w2, w3, w4, w5, w6, w7, v0, v1, v2, v3, v4, v5, v6, v7);
            }

            if (n > 15)
            {
                a15 += Dot16(x4, xq + (15 * s4), w0, w1, w2, w3, w4, w5, w6, w7, v0, v1, v2, v3, v4, v5, v6, v7);
            }

        }

        if (n > 3)
        {
            // Transposed butterfly: each step halves the accumulators a lane keeps, sending the other half to
            // its partner, so 16 token sums take 8 + 4 + 2 + 1 + 1 shuffles instead of 16 × 5. Afterwards
            // lanes 2m and 2m + 1 both hold token m's sum.
            float b0 = Exchange(a0, a8, (lane & 16) != 0, 16);
            float b1 = Exchange(a1, a9, (lane & 16) != 0, 16);
            float b2 = Exchange(a2, a10, (lane & 16) != 0, 16);
            float b3 = Exchange(a3, a11, (lane & 16) != 0, 16);
            float b4 = Exchange(a4, a12, (lane & 16) != 0, 16);
            float b5 = Exchange(a5, a13, (lane & 16) != 0, 16);
            float b6 = Exchange(a6, a14, (lane & 16) != 0, 16);
            float b7 = Exchange(a7, a15, (lane & 16) != 0, 16);
            float c0 = Exchange(b0, b4, (lane & 8) != 0, 8);
            float c1 = Exchange(b1, b5, (lane & 8) != 0, 8);
            float c2 = Exchange(b2, b6, (lane & 8) != 0, 8);
            float c3 = Exchange(b3, b7, (lane & 8) != 0, 8);
            float d0 = Exchange(c0, c2, (lane & 4) != 0, 4);
            float d1 = Exchange(c1, c3, (lane & 4) != 0, 4);
            float e0 = Exchange(d0, d1, (lane & 2) != 0, 2);
            float sum = e0 + Warp.ShuffleXor(e0, 1);
            int token = (lane >> 1) & 15;
            if ((lane & 1) == 0 && token < n)
            {
                y[yb + ((long)token * yStride)] = sum;
            }
        }
        else
        {
            // Up to 3 tokens: a plain shuffle-down reduction per token (≤ 15 shuffles).
            Store(y, a0, yb, lane);
            if (n > 1)
            {
                Store(y, a1, yb + (1L * yStride), lane);
            }

            if (n > 2)
            {
                Store(y, a2, yb + (2L * yStride), lane);
            }
        }
    }

    /// <summary>
    /// The larger-batch kernel: a [<see cref="TileTokens"/> × <see cref="TileRows"/>] output tile per group of
    /// <see cref="TiledGroupSize"/> threads, x and widened W staged through shared memory <see cref="TileK"/>
    /// columns at a time. Explicitly grouped: grid = (⌈rows / 64⌉, ⌈tokens / 32⌉), group = 256.
    /// </summary>
    public static void TiledKernel<TFormat>(
        ArrayView<ulong> w, ArrayView<float> x, ArrayView<float> y, int rows, int chunksPerRow, int xStride, int tokens, int yStride)
        where TFormat : struct, IWeightFormat
    {
        var xs = SharedMemory.Allocate<float>(TileTokens * Pitch);
        var ws = SharedMemory.Allocate<float>(TileRows * Pitch);
        TFormat format = default;
        int tid = Group.IdxX;
        int tx = tid & 15;
        int ty = tid >> 4;
        int rowBase = Grid.IdxX * TileRows;
        int tokenBase = Grid.IdxY * TileTokens;
        int cols = chunksPerRow * 4;
        float c00 = 0f, c01 = 0f, c02 = 0f, c03 = 0f;
        float c10 = 0f, c11 = 0f, c12 = 0f, c13 = 0f;

        for (int k0 = 0; k0 < cols; k0 += TileK)
        {
            for (int i = tid; i < TileTokens * TileK; i += TiledGroupSize)
            {
                int tt = i / TileK;
                int kk = i - (tt * TileK);
                int t = tokenBase + tt;
                int k = k0 + kk;
                xs[(tt * Pitch) + kk] = t < tokens && k < cols ? x[((long)t * xStride) + k] : 0f;
            }

            for (int i = tid; i < TileRows * (TileK / 4); i += TiledGroupSize)
            {
                int rr = i / (TileK / 4);
                int cc = i - (rr * (TileK / 4));
                int r = rowBase + rr;
                int q = (k0 / 4) + cc;
                float w0 = 0f, w1 = 0f, w2 = 0f, w3 = 0f;
                if (r < rows && q < chunksPerRow)
                {
                    format.Load4(w, ((long)r * chunksPerRow) + q, out w0, out w1, out w2, out w3);
                }

                int at = (rr * Pitch) + (cc * 4);
                ws[at] = w0;
                ws[at + 1] = w1;
                ws[at + 2] = w2;
                ws[at + 3] = w3;
            }

            Group.Barrier();
            for (int kk = 0; kk < TileK; kk++)
            {
                float xa = xs[(ty * Pitch) + kk];
                float xb = xs[((ty + 16) * Pitch) + kk];
                float b0 = ws[(tx * Pitch) + kk];
                float b1 = ws[((tx + 16) * Pitch) + kk];
                float b2 = ws[((tx + 32) * Pitch) + kk];
                float b3 = ws[((tx + 48) * Pitch) + kk];
                c00 += xa * b0;
                c01 += xa * b1;
                c02 += xa * b2;
                c03 += xa * b3;
                c10 += xb * b0;
                c11 += xb * b1;
                c12 += xb * b2;
                c13 += xb * b3;
            }

            Group.Barrier();
        }

        int ta = tokenBase + ty;
        int tb = ta + 16;
        int r0 = rowBase + tx;
        StoreTile(y, ta, r0, c00, c01, c02, c03, tokens, rows, yStride);
        StoreTile(y, tb, r0, c10, c11, c12, c13, tokens, rows, yStride);
    }

    /// <summary>Σ of 16 weights times x[4i .. 4i+15] (four 16-byte loads).</summary>
    private static float Dot16(
        ArrayView<Float4> x, long i, float w0, float w1, float w2, float w3, float w4, float w5, float w6, float w7,
        float v0, float v1, float v2, float v3, float v4, float v5, float v6, float v7)
    {
        Float4 p = x[i];
        Float4 q = x[i + 1];
        Float4 r = x[i + 2];
        Float4 t = x[i + 3];
        return (p.X * w0) + (p.Y * w1) + (p.Z * w2) + (p.W * w3) + (q.X * w4) + (q.Y * w5) + (q.Z * w6) + (q.W * w7)
            + (r.X * v0) + (r.Y * v1) + (r.Z * v2) + (r.W * v3) + (t.X * v4) + (t.Y * v5) + (t.Z * v6) + (t.W * v7);
    }

    /// <summary>
    /// One transposed butterfly step: a lane in the lower half of each 2·mask block keeps <paramref name="low"/>
    /// and sends <paramref name="high"/>, its partner the reverse; each returns its kept value plus the partner's.
    /// </summary>
    private static float Exchange(float low, float high, bool upper, int mask)
    {
        float received = Warp.ShuffleXor(upper ? low : high, mask);
        return (upper ? high : low) + received;
    }

    /// <summary>Sums <paramref name="value"/> over the warp; lane 0 writes it.</summary>
    private static void Store(ArrayView<float> y, float value, long index, int lane)
    {
        for (int d = Warp.WarpSize / 2; d > 0; d >>= 1)
        {
            value += Warp.ShuffleDown(value, d);
        }

        if (lane == 0)
        {
            y[index] = value;
        }
    }

    private static void StoreTile(ArrayView<float> y, int t, int r0, float v0, float v1, float v2, float v3, int tokens, int rows, int yStride)
    {
        if (t >= tokens)
        {
            return;
        }

        long b = (long)t * yStride;
        if (r0 < rows)
        {
            y[b + r0] = v0;
        }

        if (r0 + 16 < rows)
        {
            y[b + r0 + 16] = v1;
        }

        if (r0 + 32 < rows)
        {
            y[b + r0 + 32] = v2;
        }

        if (r0 + 48 < rows)
        {
            y[b + r0 + 48] = v3;
        }
    }
}

/// <summary>Four consecutive floats, loaded as one 16-byte vector.</summary>
public readonly record struct Float4(float X, float Y, float Z, float W);
