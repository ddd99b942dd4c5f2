using System.Runtime.Intrinsics;

namespace MoECluster.Kernels.Cpu;

/// <summary>Which micro-kernel a <see cref="PackedMatrix"/> is packed for (the panel width follows from it).</summary>
internal enum KernelPath
{
    /// <summary>Vector512 FMA: 6 token rows × 64 outputs (4 vectors) per register block.</summary>
    Vector512,

    /// <summary>Vector256 FMA: 6 token rows × 16 outputs (2 vectors) per register block.</summary>
    Vector256,

    /// <summary>Plain scalar arithmetic, same 16-wide panels as Vector256; for hardware with neither.</summary>
    Scalar,
}

internal static class KernelPaths
{
    /// <summary>The widest path this machine accelerates.</summary>
    public static KernelPath Best =>
        Vector512.IsHardwareAccelerated ? KernelPath.Vector512
        : Vector256.IsHardwareAccelerated ? KernelPath.Vector256
        : KernelPath.Scalar;

    /// <summary>Outputs per packed panel (NR).</summary>
    public static int PanelWidth(KernelPath path) => path == KernelPath.Vector512 ? Avx512Kernel.NR : Vector256Kernel.NR;
}
