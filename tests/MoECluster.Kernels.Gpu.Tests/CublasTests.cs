using ILGPU;
using ILGPU.Runtime;
using MoECluster.Kernels.Gpu;
using MoECluster.Kernels.Gpu.Kernels;
using MoECluster.Model.Numerics;

namespace MoECluster.Kernels.Gpu.Tests;

/// <summary>cuBLAS is optional: where it or a CUDA device is missing, the backend is refused with a reason, never a crash.</summary>
[Collection(CpuAcceleratorGroup.Name)]
public sealed class CublasTests(CpuAcceleratorFixture cpu)
{
    [Fact]
    public void Without_the_library_loading_reports_every_name_tried()
    {
        if (CublasLibrary.TryLoad(out string loaded) is not null)
        {
            Assert.Fail($"this test expects a machine without cuBLAS, but {loaded}");
        }

        var library = CublasLibrary.TryLoad(out string reason);
        Assert.Null(library);
        Assert.Contains("libcublas.so.13", reason, StringComparison.Ordinal);
        Assert.Contains("libcublas.so.12", reason, StringComparison.Ordinal);
        Assert.True(reason.IndexOf("libcublas.so.13", StringComparison.Ordinal) < reason.IndexOf("libcublas.so.12", StringComparison.Ordinal), "13 is tried before 12");
        Assert.Contains(CublasLibrary.OverrideVariable, reason, StringComparison.Ordinal);
    }

    [Fact]
    public void On_a_non_cuda_accelerator_the_backend_is_refused_with_a_reason()
    {
        var backend = CublasBackend.TryCreate(cpu.Device.Accelerator, out string reason);
        Assert.Null(backend);
        Assert.Contains("needs a CUDA accelerator", reason, StringComparison.Ordinal);
    }

    [Fact]
    public void The_device_bf16_narrowing_rounds_like_the_host_conversion()
    {
        var rng = new Random();
        float[] values = [.. Enumerable.Range(0, 4099).Select(_ => (float)((rng.NextDouble() - 0.5) * Math.Pow(2, rng.Next(-20, 20))))];
        values[0] = 1.00390625f; // a tie: rounds to even (1.0)
        values[1] = 1.01171875f; // a tie: rounds up to even
        var accelerator = cpu.Device.Accelerator;
        var kernel = accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<ushort>>(ElementwiseKernels.ToBFloat16Kernel);
        using var source = accelerator.Allocate1D(values);
        using var destination = accelerator.Allocate1D<ushort>(values.Length);
        destination.MemSet(0xFF);
        kernel(values.Length, source.View, destination.View);
        accelerator.Synchronize();
        ushort[] device = destination.GetAsArray1D();
        var host = new ushort[values.Length];
        ElementConversions.SingleToBFloat16(values, host);
        Assert.Equal(host, device);
        Assert.Equal((ushort)0x3F80, device[0]);
        Assert.Equal((ushort)0x3F82, device[1]);
    }
}
