using System.Diagnostics;
using ILGPU;
using ILGPU.Runtime;

namespace MoECluster.Kernels.Gpu;

/// <summary>
/// The device's copy bandwidth: one device-to-device copy of a buffer, timed to the accelerator's synchronisation,
/// best of several runs, counted as bytes read plus bytes written per second (what a bandwidth-bound kernel moves).
/// The yardstick of <c>bench</c>'s decode weight-read bandwidth on a GPU.
/// </summary>
public static class DeviceCopyBandwidth
{
    /// <summary>The default buffer: 256 MiB per side, far larger than any GPU's L2.</summary>
    public const long DefaultBytes = 256L << 20;

    public static DeviceCopyResult Measure(Accelerator accelerator, long bytes = DefaultBytes, int runs = 5)
    {
        ArgumentNullException.ThrowIfNull(accelerator);
        ArgumentOutOfRangeException.ThrowIfLessThan(bytes, 4L);
        ArgumentOutOfRangeException.ThrowIfLessThan(runs, 1);
        long count = bytes / sizeof(int);
        using var source = accelerator.Allocate1D<int>(count);
        using var target = accelerator.Allocate1D<int>(count);
        source.MemSetToZero();
        accelerator.Synchronize();
        double best = double.MaxValue;
        for (int run = 0; run <= runs; run++)
        {
            long started = Stopwatch.GetTimestamp();
            source.View.CopyTo(target.View);
            accelerator.Synchronize();
            double seconds = Stopwatch.GetElapsedTime(started).TotalSeconds;
            if (run > 0)
            {
                best = Math.Min(best, seconds);
            }
        }

        long moved = count * sizeof(int);
        return new DeviceCopyResult(2.0 * moved / best, moved, runs);
    }
}

/// <summary>A device copy of <see cref="BufferBytes"/>: (read + written) bytes per second of the best run.</summary>
public sealed record DeviceCopyResult(double BytesPerSecond, long BufferBytes, int Runs);
