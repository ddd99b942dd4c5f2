using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using MoECluster.Model.Compute;
using MoECluster.Kernels.Gpu.Kernels;
using MoECluster.Model.Numerics;

namespace MoECluster.Kernels.Gpu;

/// <summary>
/// Compute-bound expert GEMMs on cuBLAS (GPU nodes): y = x Wᵀ as <c>cublasGemmEx</c> with BF16 weights and BF16
/// activations (converted on the device, round to nearest even), fp32 accumulation and fp32 output; fp32 weights
/// run as an fp32 GEMM. Weights are uploaded once as <see cref="DeviceLinear"/> (BF16 bits as stored).
/// Row-major y [T, N] is column-major yᵀ [N, T] = W · xᵀ, so the call is GemmEx(op_T, op_N, m = N, n = T, k = K,
/// A = W (lda = padded K), B = x (ldb = K), C = y (ldc = N)). Created only where a CUDA accelerator and the cuBLAS
/// library both exist; <see cref="TryCreate"/> says why not otherwise.
/// </summary>
public sealed unsafe class CublasBackend : IComputeBackend, IDisposable
{
    private readonly Accelerator _accelerator;
    private readonly CublasLibrary _library;
    private readonly IntPtr _handle;
    private readonly Action<Index1D, ArrayView<float>, ArrayView<ushort>> _toBFloat16;
    private readonly List<DeviceLinear> _prepared = [];
    private readonly object _gate = new();
    private bool _disposed;

    private CublasBackend(Accelerator accelerator, CublasLibrary library, IntPtr handle)
    {
        _accelerator = accelerator;
        _library = library;
        _handle = handle;
        _toBFloat16 = accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<ushort>>(ElementwiseKernels.ToBFloat16Kernel);
    }

    public string Name => "cublas";

    /// <summary>The cuBLAS library file in use.</summary>
    public string Library => _library.Name;

    /// <summary>A cuBLAS backend on <paramref name="accelerator"/>, or null and why not (not CUDA, no library, no handle).</summary>
    public static CublasBackend? TryCreate(Accelerator accelerator, out string reason)
    {
        ArgumentNullException.ThrowIfNull(accelerator);
        if (accelerator is not CudaAccelerator || accelerator.DefaultStream is not CudaStream stream)
        {
            reason = $"cuBLAS needs a CUDA accelerator, not {accelerator.AcceleratorType}";
            return null;
        }

        var library = CublasLibrary.TryLoad(out reason);
        if (library is null)
        {
            return null;
        }

        accelerator.Bind();
        IntPtr handle;
        int status = library.Create(&handle);
        if (status != 0)
        {
            reason = $"cublasCreate failed with status {status} ({library.Name})";
            return null;
        }

        status = library.SetStream(handle, stream.StreamPtr);
        if (status != 0)
        {
            library.Destroy(handle);
            reason = $"cublasSetStream failed with status {status}";
            return null;
        }

        reason = $"cuBLAS from {library.Name}";
        return new CublasBackend(accelerator, library, handle);
    }

    public IPreparedLinear Prepare(WeightMatrix weight)
    {
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            var prepared = DeviceLinear.Upload(_accelerator, weight);
            _prepared.Add(prepared);
            return prepared;
        }
    }

    public void Linear(IPreparedLinear weight, ReadOnlySpan<float> x, int tokens, Span<float> y)
    {
        var w = weight as DeviceLinear ?? throw new ArgumentException("the weight was not prepared by a GPU backend", nameof(weight));
        if (x.Length != (long)tokens * w.Cols || y.Length != (long)tokens * w.Rows)
        {
            throw new ArgumentException($"x must be [{tokens}, {w.Cols}] and y [{tokens}, {w.Rows}] for {w.Name}");
        }

        if (tokens == 0)
        {
            return;
        }

        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            _accelerator.Bind();
            using var dx = _accelerator.Allocate1D<float>(x.Length);
            ((ArrayView<float>)dx.View).CopyFromCPU(x);
            using var dy = _accelerator.Allocate1D<float>(y.Length);
            MemoryBuffer1D<ushort, Stride1D.Dense>? dxb = null;
            try
            {
                IntPtr b = dx.NativePtr;
                int bType = CublasLibrary.CudaR32F;
                int aType = CublasLibrary.CudaR32F;
                if (w.Format == DeviceWeightFormat.BFloat16)
                {
                    dxb = _accelerator.Allocate1D<ushort>(x.Length);
                    _toBFloat16(x.Length, dx.View, dxb.View);
                    b = dxb.NativePtr;
                    bType = CublasLibrary.CudaR16BF;
                    aType = CublasLibrary.CudaR16BF;
                }

                float alpha = 1f, beta = 0f;
                int status = _library.GemmEx(_handle, CublasLibrary.OpT, CublasLibrary.OpN, w.Rows, tokens, w.Cols,
                    &alpha, w.DevicePointer, aType, w.PaddedCols, b, bType, w.Cols, &beta, dy.NativePtr, CublasLibrary.CudaR32F, w.Rows,
                    CublasLibrary.Compute32F, CublasLibrary.GemmDefault);
                CublasLibrary.Check(status, "cublasGemmEx");
                _accelerator.Synchronize();
                ((ArrayView<float>)dy.View).CopyToCPU(y);
            }
            finally
            {
                dxb?.Dispose();
            }
        }
    }

    /// <summary>
    /// <c>cublasGemmStridedBatchedEx</c>: <paramref name="batch"/> GEMMs y_b = x_b W_bᵀ of one shape, the weights
    /// of a <see cref="StackedLinear"/>-style buffer at a fixed stride (BF16 bits, rows padded to
    /// <paramref name="paddedCols"/>), x [batch, tokens, cols] and y [batch, tokens, rows] on the host.
    /// </summary>
    public void LinearStridedBatched(IntPtr weights, int rows, int cols, int paddedCols, int batch, ReadOnlySpan<float> x, int tokens, Span<float> y)
    {
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            _accelerator.Bind();
            using var dx = _accelerator.Allocate1D<float>(x.Length);
            ((ArrayView<float>)dx.View).CopyFromCPU(x);
            using var dxb = _accelerator.Allocate1D<ushort>(x.Length);
            _toBFloat16(x.Length, dx.View, dxb.View);
            using var dy = _accelerator.Allocate1D<float>(y.Length);
            float alpha = 1f, beta = 0f;
            int status = _library.GemmStridedBatchedEx(_handle, CublasLibrary.OpT, CublasLibrary.OpN, rows, tokens, cols,
                &alpha, weights, CublasLibrary.CudaR16BF, paddedCols, (long)rows * paddedCols,
                dxb.NativePtr, CublasLibrary.CudaR16BF, cols, (long)tokens * cols,
                &beta, dy.NativePtr, CublasLibrary.CudaR32F, rows, (long)tokens * rows,
                batch, CublasLibrary.Compute32F, CublasLibrary.GemmDefault);
            CublasLibrary.Check(status, "cublasGemmStridedBatchedEx");
            _accelerator.Synchronize();
            ((ArrayView<float>)dy.View).CopyToCPU(y);
        }
    }

    public void Dispose()
    {
        lock (_gate)
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
            _prepared.ForEach(p => p.Dispose());
            _accelerator.Bind();
            _library.Destroy(_handle);
        }
    }
}
