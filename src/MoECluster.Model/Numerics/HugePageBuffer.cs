using System.Runtime.InteropServices;

namespace MoECluster.Model.Numerics;

/// <summary>
/// Native memory for a large buffer that is streamed end to end (packed weight panels, the read probe): aligned to
/// <see cref="PageBytes"/> (2 MiB) and, on Linux, advised as transparent huge pages (<c>madvise(MADV_HUGEPAGE)</c>) before
/// it is first touched, so the kernel backs it with 2 MiB pages where it can. Streaming weights through 4 KiB pages costs
/// a TLB miss every 4 KiB; on the 2-core Zen 5 build machine one core's 8-token super-shape layer ran 5% faster on huge
/// pages (bench/RESULTS.md). Where the advice is refused (another OS, THP off) the memory is ordinary memory, as
/// <see cref="HugePagesAdvised"/> says. The memory is not zeroed; it is freed when the handle is released (disposed or
/// finalized), and the GC is told about it (memory pressure) so unreachable buffers are finalized in time.
/// </summary>
public sealed unsafe partial class HugePageBuffer : SafeHandle
{
    /// <summary>The huge page size advised for and aligned to (x86-64 and arm64 Linux with 4 KiB base pages).</summary>
    public const long PageBytes = 2L << 20;

    private const int MadvHugePage = 14;

    /// <summary>An empty (invalid) handle; <see cref="Allocate"/> makes a buffer.</summary>
    public HugePageBuffer()
        : base(IntPtr.Zero, ownsHandle: true)
    {
    }

    /// <summary>Bytes the caller asked for (the allocation itself is this, aligned to <see cref="PageBytes"/>).</summary>
    public long Length { get; private set; }

    /// <summary>Whether the operating system accepted the huge-page advice for the buffer's whole 2 MiB pages.</summary>
    public bool HugePagesAdvised { get; private set; }

    /// <summary>The buffer's first byte (valid while the handle is alive and not released).</summary>
    public byte* Pointer => (byte*)handle;

    public override bool IsInvalid => handle == IntPtr.Zero;

    /// <summary>Allocates <paramref name="bytes"/> (at least one), 2 MiB-aligned, huge pages advised where the OS supports it.</summary>
    public static HugePageBuffer Allocate(long bytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(bytes);
        var buffer = new HugePageBuffer();
        void* memory = NativeMemory.AlignedAlloc((nuint)bytes, (nuint)PageBytes);
        buffer.SetHandle((IntPtr)memory);
        buffer.Length = bytes;
        GC.AddMemoryPressure(bytes);

        // Only whole huge pages can be backed by one: advise the aligned part that is a multiple of 2 MiB (the tail, if any,
        // stays on base pages rather than rounding the allocation up by as much as 2 MiB).
        long whole = bytes / PageBytes * PageBytes;
        if (whole > 0 && OperatingSystem.IsLinux())
        {
            buffer.HugePagesAdvised = Madvise(memory, (nuint)whole, MadvHugePage) == 0;
        }

        return buffer;
    }

    protected override bool ReleaseHandle()
    {
        NativeMemory.AlignedFree((void*)handle);
        GC.RemoveMemoryPressure(Length);
        return true;
    }

    [LibraryImport("libc", EntryPoint = "madvise", SetLastError = true)]
    private static partial int Madvise(void* address, nuint length, int advice);
}
