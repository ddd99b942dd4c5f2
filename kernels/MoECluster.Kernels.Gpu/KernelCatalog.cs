using System.Collections.Immutable;
using System.Reflection;
using ILGPU;
using ILGPU.Backends;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using MoECluster.Kernels.Gpu.Kernels;

namespace MoECluster.Kernels.Gpu;

/// <summary>One device entry point as the backend launches it (generic kernels instantiated per weight format).</summary>
public sealed record KernelEntry(string Name, MethodInfo Method, bool ExplicitlyGrouped);

/// <summary>
/// Every kernel the backend launches, and an offline PTX compiler for them: ILGPU's PTX backend needs no GPU or
/// driver, so the kernels' device code is checked wherever the project builds.
/// </summary>
public static class KernelCatalog
{
    /// <summary>The kernel classes: every public static method in them named *Kernel is a device entry point.</summary>
    public static ImmutableArray<Type> KernelTypes { get; } =
        [typeof(LinearKernels), typeof(RoutingKernels), typeof(PermutationKernels), typeof(ElementwiseKernels)];

    public static ImmutableArray<KernelEntry> All { get; } = Build();

    /// <summary>
    /// Compiles every kernel to PTX for <paramref name="architecture"/> / <paramref name="instructionSet"/>
    /// (defaults: sm_80, PTX ISA 7.0) with the accelerators' own context settings. Returns kernel name → PTX.
    /// </summary>
    public static ImmutableDictionary<string, string> CompileToPtx(CudaArchitecture? architecture = null, CudaInstructionSet? instructionSet = null)
    {
        CudaArchitecture arch = architecture ?? CudaArchitecture.SM_80;
        CudaInstructionSet isa = instructionSet ?? CudaInstructionSet.ISA_70;
        using Context context = GpuAccelerators.Configure(Context.Create(), _ => { });
        using var backend = new PTXBackend(context, new CudaCapabilityContext(arch), arch, isa, nvvmAPI: null);
        var result = ImmutableDictionary.CreateBuilder<string, string>();
        foreach (KernelEntry entry in All)
        {
            EntryPointDescription description = entry.ExplicitlyGrouped
                ? EntryPointDescription.FromExplicitlyGroupedKernel(entry.Method)
                : EntryPointDescription.FromImplicitlyGroupedKernel(entry.Method);
            var compiled = (PTXCompiledKernel)backend.Compile(description, new KernelSpecialization());
            result.Add(entry.Name, compiled.PTXAssembly);
        }

        return result.ToImmutable();
    }

    private static ImmutableArray<KernelEntry> Build()
    {
        Type[] formats = [typeof(Bf16Format), typeof(F32Format)];
        var entries = ImmutableArray.CreateBuilder<KernelEntry>();
        foreach (Type type in KernelTypes)
        {
            foreach (MethodInfo method in type.GetMethods(BindingFlags.Public | BindingFlags.Static)
                .Where(m => m.Name.EndsWith("Kernel", StringComparison.Ordinal)).OrderBy(m => m.Name, StringComparer.Ordinal))
            {
                bool explicitlyGrouped = method.GetParameters() is not [{ ParameterType: var first }, ..] || first != typeof(Index1D);
                if (method.IsGenericMethodDefinition)
                {
                    foreach (Type format in formats)
                    {
                        entries.Add(new($"{type.Name}.{method.Name}<{format.Name}>", method.MakeGenericMethod(format), explicitlyGrouped));
                    }
                }
                else
                {
                    entries.Add(new($"{type.Name}.{method.Name}", method, explicitlyGrouped));
                }
            }
        }

        return entries.ToImmutable();
    }
}
