using ILGPU;
using ILGPU.Runtime;

namespace MoECluster.Kernels.Gpu;

/// <summary>A device buffer that grows on demand (never shrinks), for per-batch intermediates. Not thread-safe: its owner serialises use.</summary>
internal sealed class DeviceScratch<T>(Accelerator accelerator) : IDisposable
    where T : unmanaged
{
    private MemoryBuffer1D<T, Stride1D.Dense>? _buffer;

    /// <summary>The first <paramref name="length"/> elements; reallocates (contents lost) when the buffer is shorter.</summary>
    public ArrayView<T> View(long length)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        if (_buffer is null || _buffer.Length < length)
        {
            _buffer?.Dispose();
            _buffer = accelerator.Allocate1D<T>(Math.Max(length, 1));
        }

        return _buffer.View.SubView(0, length);
    }

    /// <summary>As <see cref="View"/>, zero-filled.</summary>
    public ArrayView<T> Zeroed(long length)
    {
        ArrayView<T> view = View(length);
        if (length > 0)
        {
            view.MemSetToZero();
        }

        return view;
    }

    public long AllocatedBytes => _buffer?.LengthInBytes ?? 0;

    public void Dispose()
    {
        _buffer?.Dispose();
        _buffer = null;
    }
}
