using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace MoECluster.Model.Analysis;

/// <summary>
/// A STREAM-like read probe: every thread sums its own contiguous slice of one buffer (64-bit integer adds over
/// 256-bit loads, four accumulators), all threads at once; the wall time of the slowest gives bytes / second, and the
/// best of several runs counts. Over a buffer far larger than the caches (1 GiB by default) this is the machine's
/// memory read bandwidth, the bytes floor's denominator.
/// </summary>
public static class MemoryReadBandwidth
{
    /// <summary>The default buffer: 1 GiB, far larger than any last-level cache this runs on.</summary>
    public const long DefaultBytes = 1L << 30;

    /// <summary>
    /// Measures the read bandwidth over a fresh buffer of <paramref name="bytes"/> (rounded down to a multiple of
    /// 128 per thread) with <paramref name="threads"/> threads (default: every core), best of at least <paramref name="runs"/>
    /// after one warm-up pass, and of as many more as fit in <paramref name="minSeconds"/> (a shared machine's bandwidth
    /// swings within seconds; a benchmark that keeps its best repetition over a second should be compared with a probe
    /// that does the same).
    /// </summary>
    public static unsafe MemoryReadResult Measure(long bytes = DefaultBytes, int threads = 0, int runs = 5, double minSeconds = 0)
    {
        threads = threads > 0 ? threads : Environment.ProcessorCount;
        ArgumentOutOfRangeException.ThrowIfLessThan(runs, 1);
        long slice = bytes / threads / 128 * 128;
        if (slice < 128)
        {
            throw new ArgumentOutOfRangeException(nameof(bytes), bytes, $"the buffer must hold at least 128 bytes per thread ({threads} threads)");
        }

        long total = slice * threads;
        byte* buffer = (byte*)NativeMemory.AlignedAlloc((nuint)total, 64);
        try
        {
            // Touch every page (with a pattern the sum can check) so that the runs read memory, not the zero page.
            Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads }, i =>
            {
                const long Chunk = 1L << 27; // bytes per span
                for (long at = 0; at < slice; at += Chunk)
                {
                    new Span<ulong>(buffer + (i * slice) + at, (int)(Math.Min(Chunk, slice - at) / 8)).Fill(1UL);
                }
            });

            var sums = new ulong[threads];
            double best = double.MaxValue;
            int done = 0;
            var window = Stopwatch.StartNew();
            for (int run = 0; run <= runs || window.Elapsed.TotalSeconds < minSeconds; run++)
            {
                done = run;
                long started = Stopwatch.GetTimestamp();
                Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads }, i => sums[i] = Sum(buffer + (i * slice), slice));
                double seconds = Stopwatch.GetElapsedTime(started).TotalSeconds;
                if (run > 0)
                {
                    best = Math.Min(best, seconds);
                }
            }

            ulong sum = 0;
            foreach (ulong s in sums)
            {
                sum += s;
            }

            if (sum != (ulong)(total / 8))
            {
                throw new InvalidOperationException($"the read probe summed {sum}, expected {total / 8}");
            }

            return new MemoryReadResult(total / best, total, threads, done);
        }
        finally
        {
            NativeMemory.AlignedFree(buffer);
        }
    }

    private static unsafe ulong Sum(byte* p, long bytes)
    {
        Vector256<ulong> a = Vector256<ulong>.Zero, b = a, c = a, d = a;
        byte* end = p + bytes;
        for (; p < end; p += 128)
        {
            a += Vector256.Load((ulong*)p);
            b += Vector256.Load((ulong*)(p + 32));
            c += Vector256.Load((ulong*)(p + 64));
            d += Vector256.Load((ulong*)(p + 96));
        }

        return Vector256.Sum(a + b + c + d);
    }
}

/// <summary>The result of <see cref="MemoryReadBandwidth.Measure"/>: the best run's bytes per second over a buffer of <see cref="BufferBytes"/>.</summary>
public sealed record MemoryReadResult(double BytesPerSecond, long BufferBytes, int Threads, int Runs);
