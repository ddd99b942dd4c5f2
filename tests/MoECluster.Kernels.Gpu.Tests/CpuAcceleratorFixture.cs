using MoECluster.Kernels.Gpu;

namespace MoECluster.Kernels.Gpu.Tests;

/// <summary>One ILGPU CPU accelerator (warp 32, 1024-thread groups) shared by the kernel tests, which run one at a time.</summary>
public sealed class CpuAcceleratorFixture : IDisposable
{
    public CpuAcceleratorFixture()
    {
        Device = GpuAccelerators.CreateCpu();
        Backend = new IlgpuBackend(Device.Accelerator);
        GemvBackend = new IlgpuBackend(Device.Accelerator, maxGemvTokens: int.MaxValue);
        TiledBackend = new IlgpuBackend(Device.Accelerator, maxGemvTokens: 0);
    }

    public GpuAccelerator Device { get; }

    /// <summary>A backend with the default dispatch (GEMV up to 16 tokens, tiled above).</summary>
    public IlgpuBackend Backend { get; }

    /// <summary>A backend that runs every Linear on the GEMV kernel (several 16-token passes above 16 tokens).</summary>
    public IlgpuBackend GemvBackend { get; }

    /// <summary>A backend that runs every Linear on the tiled kernel.</summary>
    public IlgpuBackend TiledBackend { get; }

    public void Dispose()
    {
        Backend.Dispose();
        GemvBackend.Dispose();
        TiledBackend.Dispose();
        Device.Dispose();
    }
}

[CollectionDefinition(Name)]
public sealed class CpuAcceleratorGroup : ICollectionFixture<CpuAcceleratorFixture>
{
    public const string Name = "ILGPU CPU accelerator";
}
