using System.Reflection;
using System.Runtime.InteropServices;
using System.Runtime.Loader;
using ILGPU;

namespace MoECluster.Kernels.Gpu;

/// <summary>
/// Finds the CUDA driver library for ILGPU. ILGPU P/Invokes "cuda" on Linux ("nvcuda" on Windows), which the
/// runtime probes as libcuda.so / cuda / libcuda — but a driver-only install (a container given the GPU by the
/// NVIDIA runtime, most Debian setups) has only the versioned libcuda.so.1. A handler on ILGPU's load context's
/// <see cref="AssemblyLoadContext.ResolvingUnmanagedDll"/> event, which the runtime raises only after its own
/// probing failed, maps those names to <see cref="Candidates"/> in order. It neither replaces a working default
/// nor conflicts with the DllImport resolver ILGPU installs for itself under WSL.
/// The handler must be in place before ILGPU first touches its CUDA API (that binding is cached for the process):
/// <see cref="GpuAccelerators"/> registers it first thing.
/// </summary>
public static class CudaDriverLibrary
{
    /// <summary>Set to a path to use that library first.</summary>
    public const string OverrideVariable = "MOECLUSTER_LIBCUDA";

    private static readonly string[] ImportNames = ["cuda", "libcuda", "libcuda.so", "nvcuda"];

    /// <summary>The library names tried, in order: the override (if set), then the unversioned and versioned names.</summary>
    public static IReadOnlyList<string> Candidates
    {
        get
        {
            string? overridePath = Environment.GetEnvironmentVariable(OverrideVariable);
            string[] names = OperatingSystem.IsWindows() ? ["nvcuda.dll"] : ["libcuda.so", "libcuda.so.1"];
            return string.IsNullOrWhiteSpace(overridePath) ? names : [overridePath, .. names];
        }
    }

    /// <summary>Registers the fallback (once per process; later calls do nothing).</summary>
    public static void EnsureRegistered() => Registration.Touch();

    /// <summary>Loads the first loadable candidate, or returns false with the names tried.</summary>
    public static bool TryLoad(out IntPtr handle, out string tried)
    {
        foreach (string name in Candidates)
        {
            if (NativeLibrary.TryLoad(name, out handle))
            {
                tried = name;
                return true;
            }
        }

        handle = IntPtr.Zero;
        tried = string.Join(", ", Candidates);
        return false;
    }

    private static IntPtr Resolve(Assembly assembly, string name)
    {
        if (assembly != typeof(Context).Assembly || !ImportNames.Contains(name, StringComparer.OrdinalIgnoreCase))
        {
            return IntPtr.Zero;
        }

        return TryLoad(out IntPtr handle, out _) ? handle : IntPtr.Zero;
    }

    /// <summary>The one-time registration, done by the type initialiser (thread-safe, once).</summary>
    private static class Registration
    {
        static Registration()
        {
            Assembly ilgpu = typeof(Context).Assembly;
            AssemblyLoadContext context = AssemblyLoadContext.GetLoadContext(ilgpu) ?? AssemblyLoadContext.Default;
            context.ResolvingUnmanagedDll += Resolve;
        }

        public static void Touch()
        {
        }
    }
}
