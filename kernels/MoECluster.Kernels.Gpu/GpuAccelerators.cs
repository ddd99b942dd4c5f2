using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using ILGPU.Runtime.Cuda;

namespace MoECluster.Kernels.Gpu;

/// <summary>An ILGPU context and one accelerator on it, disposed together.</summary>
public sealed class GpuAccelerator : IDisposable
{
    internal GpuAccelerator(Context context, Accelerator accelerator, string description)
    {
        Context = context;
        Accelerator = accelerator;
        Description = description;
    }

    public Context Context { get; }

    public Accelerator Accelerator { get; }

    /// <summary>What was created, for logs: the device's name and limits.</summary>
    public string Description { get; }

    public override string ToString() => Description;

    public void Dispose()
    {
        Accelerator.Dispose();
        Context.Dispose();
    }
}

/// <summary>
/// Creates the accelerators the backend runs on: a CUDA device when the driver and a device are present
/// (never throwing where they are not — the reason comes back instead), or ILGPU's CPU accelerator, which runs
/// the same kernels thread by thread (for tests and machines without a GPU; slow).
/// </summary>
public static class GpuAccelerators
{
    /// <summary>The CPU accelerator's simulated warp: 32 lanes, as on NVIDIA hardware.</summary>
    public const int CpuWarpSize = 32;

    /// <summary>The CPU accelerator's warps per group: 32, so 1024-thread groups are allowed, as on NVIDIA hardware.</summary>
    public const int CpuWarpsPerGroup = 32;

    /// <summary>The CUDA device <paramref name="deviceIndex"/>, or null and why not (no driver library, no device, a failed start).</summary>
    public static GpuAccelerator? TryCreateCuda(out string reason, int deviceIndex = 0)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(deviceIndex);
        CudaDriverLibrary.EnsureRegistered();
        if (!CudaDriverLibrary.TryLoad(out _, out string tried))
        {
            reason = $"no CUDA driver library could be loaded (tried {tried}; set {CudaDriverLibrary.OverrideVariable} to its path): no NVIDIA driver on this machine";
            return null;
        }

        Context? context = null;
        try
        {
            if (!CudaAPI.CurrentAPI.IsSupported)
            {
                reason = $"the CUDA driver library ({tried}) loaded but did not initialise (cuInit failed: no device visible, or driver error)";
                return null;
            }

            context = Configure(Context.Create(), b => b.Cuda());
            int count = context.GetCudaDevices().Count;
            if (count <= deviceIndex)
            {
                reason = count == 0
                    ? $"the CUDA driver ({tried}) reports no device ILGPU {typeof(Context).Assembly.GetName().Version} supports"
                    : $"CUDA device {deviceIndex} requested but only {count} present";
                context.Dispose();
                return null;
            }

            CudaAccelerator accelerator = context.CreateCudaAccelerator(deviceIndex);
            reason = "";
            return new GpuAccelerator(context, accelerator,
                $"CUDA {accelerator.Name} (sm_{accelerator.Architecture.Major}{accelerator.Architecture.Minor}, PTX ISA {accelerator.InstructionSet}, " +
                $"{accelerator.MemorySize >> 20} MiB, {accelerator.NumMultiprocessors} SMs)");
        }
        catch (Exception ex)
        {
            // Whatever the driver or ILGPU throws (CudaException, NotSupportedException for an unsupported
            // driver or architecture, a type initialiser failing), the answer is "no CUDA here", with why.
            context?.Dispose();
            reason = $"CUDA accelerator could not be created: {ex.GetType().Name}: {ex.Message}";
            return null;
        }
    }

    /// <summary>
    /// ILGPU's CPU accelerator with a simulated NVIDIA-like device (warp 32, groups up to 1024 threads), so every
    /// kernel runs with the group shapes it uses on a GPU.
    /// </summary>
    public static GpuAccelerator CreateCpu()
    {
        var device = new CPUDevice(CpuWarpSize, CpuWarpsPerGroup, numMultiprocessors: 1);
        Context context = Configure(Context.Create(), b => b.CPU(device));
        try
        {
            CPUAccelerator accelerator = device.CreateCPUAccelerator(context, CPUAcceleratorMode.Parallel);
            return new GpuAccelerator(context, accelerator,
                $"ILGPU CPU accelerator (warp {accelerator.WarpSize}, {accelerator.MaxNumThreadsPerGroup} threads a group)");
        }
        catch
        {
            context.Dispose();
            throw;
        }
    }

    /// <summary>The context settings every accelerator (and the offline PTX compiler) uses.</summary>
    internal static Context Configure(Context.Builder builder, Action<Context.Builder> devices)
    {
        devices(builder);
        return builder.EnableAlgorithms().Optimize(OptimizationLevel.O2).ToContext();
    }
}
