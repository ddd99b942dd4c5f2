using System.Runtime.InteropServices;

namespace MoECluster.Model.Checkpoints;

/// <summary>Advice to the OS about pages of a read-only file mapping.</summary>
internal static unsafe partial class MappedPages
{
    /// <summary>Linux madvise advice MADV_DONTNEED.</summary>
    private const int DontNeed = 4;

    /// <summary>
    /// Drops the whole pages inside [<paramref name="start"/>, <paramref name="start"/> + <paramref name="length"/>)
    /// from this process's resident set (Linux <c>madvise(MADV_DONTNEED)</c>). For a read-only file mapping nothing
    /// is lost: the pages stay in the page cache and a later read maps them in again. Pages shared with data
    /// outside the range are left alone. A no-op on other systems, and when the system declines.
    /// </summary>
    public static void Release(byte* start, long length)
    {
        if (!OperatingSystem.IsLinux() || length <= 0)
        {
            return;
        }

        long page = Environment.SystemPageSize;
        long first = ((long)start + page - 1) & ~(page - 1);
        long end = ((long)start + length) & ~(page - 1);
        if (end <= first)
        {
            return;
        }

        try
        {
            _ = Madvise((nint)first, (nuint)(end - first), DontNeed);
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            // Advice only: without it the pages merely stay resident.
        }
    }

    [LibraryImport("libc", EntryPoint = "madvise")]
    private static partial int Madvise(nint address, nuint length, int advice);
}
