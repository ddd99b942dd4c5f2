using System.Runtime.InteropServices;

namespace MoECluster.Kernels.Gpu;

/// <summary>
/// cuBLAS, resolved at run time: libcublas.so.13, then libcublas.so.12, then the unversioned name (or the path in
/// MOECLUSTER_LIBCUBLAS). Entry points are bound as unmanaged function pointers; a missing library or entry point
/// is reported as a reason, never thrown, so callers fall back cleanly.
/// </summary>
public sealed unsafe class CublasLibrary
{
    public const string OverrideVariable = "MOECLUSTER_LIBCUBLAS";

    // cudaDataType and cuBLAS enums (cublas_api.h, library_types.h).
    internal const int CudaR32F = 0;
    internal const int CudaR16BF = 14;
    internal const int OpN = 0;
    internal const int OpT = 1;
    internal const int Compute32F = 68;
    internal const int GemmDefault = -1;

    private CublasLibrary(IntPtr handle, string name)
    {
        Handle = handle;
        Name = name;
        Create = (delegate* unmanaged<IntPtr*, int>)Export(handle, "cublasCreate_v2");
        Destroy = (delegate* unmanaged<IntPtr, int>)Export(handle, "cublasDestroy_v2");
        SetStream = (delegate* unmanaged<IntPtr, IntPtr, int>)Export(handle, "cublasSetStream_v2");
        GemmEx = (delegate* unmanaged<IntPtr, int, int, int, int, int, float*, IntPtr, int, int, IntPtr, int, int, float*, IntPtr, int, int, int, int, int>)Export(handle, "cublasGemmEx");
        GemmStridedBatchedEx = (delegate* unmanaged<IntPtr, int, int, int, int, int, float*, IntPtr, int, int, long, IntPtr, int, int, long, float*, IntPtr, int, int, long, int, int, int, int>)Export(handle, "cublasGemmStridedBatchedEx");
    }

    public IntPtr Handle { get; }

    /// <summary>The library file that was loaded.</summary>
    public string Name { get; }

    internal delegate* unmanaged<IntPtr*, int> Create { get; }

    internal delegate* unmanaged<IntPtr, int> Destroy { get; }

    internal delegate* unmanaged<IntPtr, IntPtr, int> SetStream { get; }

    internal delegate* unmanaged<IntPtr, int, int, int, int, int, float*, IntPtr, int, int, IntPtr, int, int, float*, IntPtr, int, int, int, int, int> GemmEx { get; }

    internal delegate* unmanaged<IntPtr, int, int, int, int, int, float*, IntPtr, int, int, long, IntPtr, int, int, long, float*, IntPtr, int, int, long, int, int, int, int> GemmStridedBatchedEx { get; }

    /// <summary>The names tried, in order.</summary>
    public static IReadOnlyList<string> Candidates
    {
        get
        {
            string? overridePath = Environment.GetEnvironmentVariable(OverrideVariable);
            string[] names = OperatingSystem.IsWindows() ? ["cublas64_13.dll", "cublas64_12.dll"] : ["libcublas.so.13", "libcublas.so.12", "libcublas.so"];
            return string.IsNullOrWhiteSpace(overridePath) ? names : [overridePath, .. names];
        }
    }

    /// <summary>Loads cuBLAS, or returns null and why not.</summary>
    public static CublasLibrary? TryLoad(out string reason)
    {
        foreach (string name in Candidates)
        {
            if (!NativeLibrary.TryLoad(name, out IntPtr handle))
            {
                continue;
            }

            try
            {
                reason = $"loaded {name}";
                return new CublasLibrary(handle, name);
            }
            catch (EntryPointNotFoundException e)
            {
                reason = $"{name} lacks {e.Message}";
                NativeLibrary.Free(handle);
                return null;
            }
        }

        reason = $"no cuBLAS library could be loaded (tried {string.Join(", ", Candidates)}; set {OverrideVariable} to its path)";
        return null;
    }

    private static IntPtr Export(IntPtr library, string name) =>
        NativeLibrary.TryGetExport(library, name, out IntPtr address) ? address : throw new EntryPointNotFoundException(name);

    internal static void Check(int status, string call)
    {
        if (status != 0)
        {
            throw new InvalidOperationException($"{call} failed with cuBLAS status {status}");
        }
    }
}
