using System.Runtime.InteropServices;

namespace MoECluster.Kernels.Gpu.Tests;

public sealed class GpuAcceleratorsTests
{
    [Fact]
    public void TryCreateCuda_never_throws_and_without_a_driver_returns_null_naming_the_libraries_tried()
    {
        bool driverPresent = CudaDriverLibrary.Candidates.Any(name => NativeLibrary.TryLoad(name, out _));

        using GpuAccelerator? cuda = GpuAccelerators.TryCreateCuda(out string reason);

        if (driverPresent)
        {
            // A GPU machine: either a device came up, or the reason says why not.
            Assert.True(cuda is not null || reason.Length > 0);
            return;
        }

        Assert.Null(cuda);
        Assert.Contains("libcuda.so.1", reason, StringComparison.Ordinal);
        Assert.Contains("no NVIDIA driver", reason, StringComparison.Ordinal);
    }

    [Fact]
    public void The_driver_library_is_tried_unversioned_then_as_libcuda_so_1()
    {
        IReadOnlyList<string> candidates = CudaDriverLibrary.Candidates;

        if (OperatingSystem.IsLinux())
        {
            Assert.Equal(["libcuda.so", "libcuda.so.1"], candidates.TakeLast(2));
        }

        Assert.NotEmpty(candidates);
    }

    [Fact]
    public void A_library_named_by_the_override_variable_is_tried_first()
    {
        if (!OperatingSystem.IsLinux())
        {
            return;
        }

        string? saved = Environment.GetEnvironmentVariable(CudaDriverLibrary.OverrideVariable);
        try
        {
            // Any loadable library stands in for the driver: only the order of the attempts is checked here.
            Environment.SetEnvironmentVariable(CudaDriverLibrary.OverrideVariable, "libm.so.6");

            Assert.Equal("libm.so.6", CudaDriverLibrary.Candidates[0]);
            Assert.True(CudaDriverLibrary.TryLoad(out IntPtr handle, out string loaded));
            Assert.NotEqual(IntPtr.Zero, handle);
            Assert.Equal("libm.so.6", loaded);
        }
        finally
        {
            Environment.SetEnvironmentVariable(CudaDriverLibrary.OverrideVariable, saved);
        }
    }

    [Fact]
    public void The_cpu_accelerator_simulates_32_lane_warps_and_allows_1024_thread_groups()
    {
        using GpuAccelerator cpu = GpuAccelerators.CreateCpu();

        Assert.Equal(32, cpu.Accelerator.WarpSize);
        Assert.Equal(1024, cpu.Accelerator.MaxNumThreadsPerGroup);
        Assert.Contains("CPU", cpu.Description, StringComparison.Ordinal);
    }
}
