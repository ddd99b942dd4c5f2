using System.Globalization;
using MoECluster.Model.Analysis;
using MoECluster.Model.Numerics;

namespace MoECluster.Model.Tests.Numerics;

/// <summary>Native buffers for streamed weights and the read probe: 2 MiB-aligned, advised as transparent huge pages on Linux.</summary>
public sealed class HugePageBufferTests
{
    [Fact]
    public unsafe void A_buffer_is_aligned_to_a_huge_page_and_holds_what_is_written_to_every_byte()
    {
        const long bytes = (5L << 20) + 12_345; // two whole huge pages and a ragged tail
        using var buffer = HugePageBuffer.Allocate(bytes);
        Assert.Equal(0L, (long)buffer.Pointer % HugePageBuffer.PageBytes);
        Assert.Equal(bytes, buffer.Length);
        var span = new Span<byte>(buffer.Pointer, checked((int)bytes));
        for (int i = 0; i < span.Length; i++)
        {
            span[i] = (byte)(i * 31);
        }

        for (int i = 0; i < span.Length; i++)
        {
            Assert.True(span[i] == (byte)(i * 31), $"byte {i}");
        }
    }

    [Fact]
    public unsafe void On_linux_with_transparent_huge_pages_the_whole_pages_are_advised_and_the_kernel_marks_them()
    {
        // The kernel shows madvise(MADV_HUGEPAGE) as the "hg" flag of the mapping (/proc/self/smaps VmFlags).
        using var buffer = HugePageBuffer.Allocate(4L << 20);
        if (!OperatingSystem.IsLinux() || !File.Exists("/sys/kernel/mm/transparent_hugepage/enabled"))
        {
            Assert.False(buffer.HugePagesAdvised && !OperatingSystem.IsLinux());
            return;
        }

        Assert.True(buffer.HugePagesAdvised);
        Assert.Contains("hg", VmFlags((long)buffer.Pointer));
    }

    [Fact]
    public void A_buffer_smaller_than_a_huge_page_is_not_advised_and_release_frees_it()
    {
        var buffer = HugePageBuffer.Allocate(4096);
        Assert.False(buffer.HugePagesAdvised);
        Assert.False(buffer.IsInvalid);
        buffer.Dispose();
        Assert.True(buffer.IsClosed);
        Assert.Throws<ArgumentOutOfRangeException>(() => HugePageBuffer.Allocate(0));
    }

    [Fact]
    public void The_read_probe_counts_its_passes_and_checks_each_sum()
    {
        using var probe = new MemoryReadProbe(4L << 20, threads: 2);
        double a = probe.Pass();
        double b = probe.Pass();
        Assert.Equal(2, probe.Passes);
        Assert.True(a > 1e7 && b > 1e7 && double.IsFinite(a) && double.IsFinite(b), $"{a:E3}, {b:E3} B/s");
        probe.Dispose();
        Assert.Throws<ObjectDisposedException>(() => probe.Pass());
    }

    /// <summary>The VmFlags of the mapping that holds <paramref name="address"/>.</summary>
    private static string[] VmFlags(long address)
    {
        bool inside = false;
        foreach (string line in File.ReadLines("/proc/self/smaps"))
        {
            int dash = line.IndexOf('-', StringComparison.Ordinal);
            int space = line.IndexOf(' ', StringComparison.Ordinal);
            if (dash > 0 && space > dash && long.TryParse(line.AsSpan(0, dash), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out long start)
                && long.TryParse(line.AsSpan(dash + 1, space - dash - 1), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out long end))
            {
                inside = address >= start && address < end;
            }
            else if (inside && line.StartsWith("VmFlags:", StringComparison.Ordinal))
            {
                return line["VmFlags:".Length..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
            }
        }

        throw new InvalidOperationException($"no mapping holds 0x{address:x}");
    }
}
