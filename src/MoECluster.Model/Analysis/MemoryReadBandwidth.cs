using System.Diagnostics;
using System.Runtime.Intrinsics;
using MoECluster.Model.Numerics;

namespace MoECluster.Model.Analysis;

/// <summary>
/// A STREAM-like read probe: every thread sums its own contiguous slice of one buffer (64-bit integer adds over
/// 256-bit loads, four accumulators), all threads at once; the wall time of the slowest gives bytes / second, and the
/// best of several runs counts. Over a buffer far larger than the caches (1 GiB by default, on huge pages where the OS
/// allows, as the weight panels are) this is the machine's memory read bandwidth, the bytes floor's denominator.
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
    public static MemoryReadResult Measure(long bytes = DefaultBytes, int threads = 0, int runs = 5, double minSeconds = 0)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(runs, 1);
        using var probe = new MemoryReadProbe(bytes, threads);
        return probe.Best(runs, minSeconds);
    }

    /// <summary>One thread's slice: 64-bit integer adds over 256-bit loads, four accumulators.</summary>
    internal static unsafe ulong Sum(byte* p, long bytes)
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

/// <summary>
/// The read probe's buffer, kept for passes on demand: <c>bench</c> interleaves single passes with a layer's repetitions so
/// that the probe and the layer meet the same moments of a shared machine. The buffer (huge pages advised, as the weight
/// panels are: <see cref="HugePageBuffer"/>) is filled with a pattern once, so passes read memory, not the zero page,
/// and every pass checks its sum.
/// </summary>
public sealed unsafe class MemoryReadProbe : IDisposable
{
    private readonly HugePageBuffer _buffer;
    private readonly long _slice;
    private readonly ulong[] _sums;

    /// <summary>A probe over <paramref name="bytes"/> (rounded down to 128 per thread) on <paramref name="threads"/> threads (default: every core).</summary>
    public MemoryReadProbe(long bytes = MemoryReadBandwidth.DefaultBytes, int threads = 0)
    {
        Threads = threads > 0 ? threads : Environment.ProcessorCount;
        _slice = bytes / Threads / 128 * 128;
        if (_slice < 128)
        {
            throw new ArgumentOutOfRangeException(nameof(bytes), bytes, $"the buffer must hold at least 128 bytes per thread ({Threads} threads)");
        }

        BufferBytes = _slice * Threads;
        _sums = new ulong[Threads];
        _buffer = HugePageBuffer.Allocate(BufferBytes);
        byte* buffer = _buffer.Pointer;
        long slice = _slice;
        Parallel.For(0, Threads, new ParallelOptions { MaxDegreeOfParallelism = Threads }, i =>
        {
            const long Chunk = 1L << 27; // bytes per span
            for (long at = 0; at < slice; at += Chunk)
            {
                new Span<ulong>(buffer + (i * slice) + at, (int)(Math.Min(Chunk, slice - at) / 8)).Fill(1UL);
            }
        });
    }

    /// <summary>Bytes read by a pass.</summary>
    public long BufferBytes { get; }

    /// <summary>Threads reading at once, each its own contiguous slice.</summary>
    public int Threads { get; }

    /// <summary>Passes run so far.</summary>
    public int Passes { get; private set; }

    /// <summary>One pass over the whole buffer, all threads at once; returns bytes / second (the slowest thread's wall time).</summary>
    public double Pass()
    {
        ObjectDisposedException.ThrowIf(_buffer.IsClosed, this);
        Passes++;
        nint buffer = (nint)_buffer.Pointer;
        long slice = _slice;
        long started = Stopwatch.GetTimestamp();
        Parallel.For(0, Threads, new ParallelOptions { MaxDegreeOfParallelism = Threads }, i => _sums[i] = MemoryReadBandwidth.Sum((byte*)buffer + (i * slice), slice));
        double seconds = Stopwatch.GetElapsedTime(started).TotalSeconds;
        ulong sum = 0;
        foreach (ulong s in _sums)
        {
            sum += s;
        }

        if (sum != (ulong)(BufferBytes / 8))
        {
            throw new InvalidOperationException($"the read probe summed {sum}, expected {BufferBytes / 8}");
        }

        return BufferBytes / seconds;
    }

    /// <summary>One warm-up pass, then the best of at least <paramref name="runs"/> passes and of as many more as fit in <paramref name="minSeconds"/>.</summary>
    public MemoryReadResult Best(int runs = 5, double minSeconds = 0)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(runs, 1);
        double best = 0;
        int done = 0;
        var window = Stopwatch.StartNew();
        for (int run = 0; run <= runs || window.Elapsed.TotalSeconds < minSeconds; run++)
        {
            done = run;
            double rate = Pass();
            if (run > 0)
            {
                best = Math.Max(best, rate);
            }
        }

        return new MemoryReadResult(best, BufferBytes, Threads, done);
    }

    public void Dispose() => _buffer.Dispose();
}

/// <summary>The result of <see cref="MemoryReadBandwidth.Measure"/>: the best run's bytes per second over a buffer of <see cref="BufferBytes"/>.</summary>
public sealed record MemoryReadResult(double BytesPerSecond, long BufferBytes, int Threads, int Runs);
