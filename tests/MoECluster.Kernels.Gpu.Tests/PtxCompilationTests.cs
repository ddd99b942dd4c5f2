using System.Reflection;
using System.Text.RegularExpressions;
using ILGPU;
using ILGPU.Runtime.Cuda;

namespace MoECluster.Kernels.Gpu.Tests;

/// <summary>The device code, checked without a GPU: ILGPU's PTX backend runs on any machine.</summary>
public sealed partial class PtxCompilationTests
{
    private static readonly Lazy<IReadOnlyDictionary<string, string>> Sm80 = new(() => KernelCatalog.CompileToPtx());

    [Fact]
    public void Every_kernel_compiles_to_PTX_for_sm_80_with_an_entry_and_no_undefined_external_function()
    {
        IReadOnlyDictionary<string, string> ptx = Sm80.Value;

        Assert.Equal(KernelCatalog.All.Select(k => k.Name).Order(), ptx.Keys.Order());
        foreach (var (name, code) in ptx)
        {
            Assert.Contains(".target sm_80", code, StringComparison.Ordinal);
            Assert.True(EntryPattern().IsMatch(code), $"{name}: no .entry in its PTX");
            Assert.DoesNotContain(".extern .func", code, StringComparison.Ordinal);
        }
    }

    [Fact]
    public void Every_kernel_compiles_for_sm_90_with_PTX_ISA_8_0_too()
    {
        // ILGPU targets the lowest architecture that has the features a kernel uses (sm_80 here); the driver
        // JIT-compiles that PTX for the Hopper device.
        IReadOnlyDictionary<string, string> ptx = KernelCatalog.CompileToPtx(CudaArchitecture.SM_90, CudaInstructionSet.ISA_80);

        Assert.Equal(KernelCatalog.All.Length, ptx.Count);
        Assert.All(ptx.Values, code => Assert.Contains(".version 8.0", code, StringComparison.Ordinal));
        Assert.All(ptx.Values, code => Assert.DoesNotContain(".extern .func", code, StringComparison.Ordinal));
    }

    [Fact]
    public void The_catalog_lists_every_kernel_method_of_the_assembly()
    {
        // A kernel is any static method taking an ILGPU view; each must be compiled by the catalog.
        MethodInfo[] kernels = [.. typeof(KernelCatalog).Assembly.GetTypes()
            .SelectMany(t => t.GetMethods(BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Static | BindingFlags.DeclaredOnly))
            .Where(m => m.GetParameters().Any(p => p.ParameterType.IsGenericType && p.ParameterType.GetGenericTypeDefinition() == typeof(ArrayView<>)))
            .Where(m => m.Name.EndsWith("Kernel", StringComparison.Ordinal))];
        var listed = KernelCatalog.All.Select(k => k.Method.IsGenericMethod ? k.Method.GetGenericMethodDefinition() : k.Method).ToHashSet();

        Assert.NotEmpty(kernels);
        Assert.All(kernels, k => Assert.Contains(k, listed));
    }

    [Fact]
    public void Gemv_kernel_keeps_its_token_accumulators_in_registers_and_loads_vectors()
    {
        foreach (string format in new[] { "Bf16Format", "F32Format" })
        {
            string code = Sm80.Value[$"LinearKernels.GemvKernel<{format}>"];
            Assert.DoesNotContain(".local", code, StringComparison.Ordinal);
            Assert.Contains("shfl.sync", code, StringComparison.Ordinal);
            Assert.Contains("ld.global.v4.f32", code, StringComparison.Ordinal); // x as 16-byte vectors
        }
    }

    [GeneratedRegex(@"^\s*\.visible\s+\.entry\s+\S+", RegexOptions.Multiline)]
    private static partial Regex EntryPattern();
}
