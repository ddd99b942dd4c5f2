using MoECluster.Kernels.Cpu;
using MoECluster.Kernels.Gpu;
using MoECluster.Model.Compute;

namespace MoECluster.Cluster.Hosting;

/// <summary>
/// Chooses the compute backend by name: <c>reference</c> (the fp64-accumulating reference path), <c>managed</c>
/// (packed AVX-512/AVX2 SGEMM on the CPU), <c>ilgpu</c> (ILGPU kernels on a CUDA device), or <c>auto</c> — the GPU
/// when one is present, else managed. A GPU that cannot be had falls back to managed with the reason, never a crash.
/// </summary>
public static class ComputeBackends
{
    public static readonly string[] Names = ["auto", "reference", "managed", "ilgpu"];

    /// <summary>Creates the backend named <paramref name="name"/>; <paramref name="note"/> says what was chosen and why.</summary>
    public static IComputeBackend Create(string name, out string note)
    {
        switch (name.ToLowerInvariant())
        {
            case "reference":
                note = "reference backend (fp32 products, fp64 accumulation)";
                return new ReferenceBackend();
            case "managed":
                note = "managed CPU backend";
                return new ManagedCpuBackend();
            case "ilgpu":
            case "auto":
                var gpu = GpuAccelerators.TryCreateCuda(out string reason);
                if (gpu is not null)
                {
                    note = $"ilgpu backend on {gpu.Description}";
                    return new OwningIlgpuBackend(gpu);
                }

                note = $"managed CPU backend ({(name == "auto" ? "no GPU" : "ilgpu asked for, but no GPU")}: {reason})";
                return new ManagedCpuBackend();
            default:
                throw new ArgumentException($"unknown compute backend '{name}'; allowed: {string.Join(", ", Names)}");
        }
    }

    /// <summary>An ILGPU backend that also owns (and disposes) its accelerator and context.</summary>
    private sealed class OwningIlgpuBackend(GpuAccelerator gpu) : IComputeBackend, IDisposable
    {
        private readonly IlgpuBackend _inner = new(gpu.Accelerator);

        public string Name => _inner.Name;

        public IPreparedLinear Prepare(Model.Numerics.WeightMatrix weight) => _inner.Prepare(weight);

        public void Linear(IPreparedLinear weight, ReadOnlySpan<float> x, int tokens, Span<float> y) => _inner.Linear(weight, x, tokens, y);

        public void ExpertFfn(IPreparedLinear up, IPreparedLinear down, ReadOnlySpan<float> z, int tokens, Span<float> output) =>
            _inner.ExpertFfn(up, down, z, tokens, output);

        public void Dispose()
        {
            _inner.Dispose();
            gpu.Dispose();
        }
    }
}
