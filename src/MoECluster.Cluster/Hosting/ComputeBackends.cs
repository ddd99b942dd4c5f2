using MoECluster.Kernels.Cpu;
using MoECluster.Kernels.Gpu;
using MoECluster.Model.Compute;

namespace MoECluster.Cluster.Hosting;

/// <summary>
/// The one catalog of compute backends, by name, used by silos (MoECluster:Compute:Backend), every CLI option list and
/// <c>moecluster bench</c>: <c>reference</c> (the fp64-accumulating reference path), <c>managed</c> (packed AVX-512/AVX2
/// SGEMM on the CPU), <c>ilgpu</c> (ILGPU kernels on a CUDA device), <c>cublas</c> (cuBLAS GEMMs on a CUDA device), or
/// <c>auto</c> — the GPU when one is present, else managed. A silo's GPU backend that cannot be had falls back (cublas to
/// ilgpu, a GPU to managed) with the reason, never a crash; the bench, which compares backends, skips it instead.
/// </summary>
public static class ComputeBackends
{
    public const string Auto = "auto";
    public const string Reference = "reference";
    public const string Managed = "managed";
    public const string Ilgpu = "ilgpu";
    public const string Cublas = "cublas";

    /// <summary>Every name a silo, a CLI verb or the configuration accepts.</summary>
    public static IReadOnlyList<string> Names { get; } = [Auto, Reference, Managed, Ilgpu, Cublas];

    /// <summary>The backends themselves (every name but auto): what <c>moecluster bench</c> compares.</summary>
    public static IReadOnlyList<string> Concrete { get; } = [Reference, Managed, Ilgpu, Cublas];

    /// <summary>The names with what they mean, for option descriptions.</summary>
    public static string Description =>
        $"{Auto} (GPU if present, else managed), {Managed} (CPU), {Reference} (fp64 accumulation), {Ilgpu} (ILGPU kernels on CUDA) or {Cublas} (cuBLAS on CUDA)";

    /// <summary>Whether <paramref name="name"/> is a backend name (case-insensitive, as <see cref="Create"/> reads it).</summary>
    public static bool IsKnown(string? name) => name is not null && Names.Contains(name.Trim(), StringComparer.OrdinalIgnoreCase);

    /// <summary>Creates the backend named <paramref name="name"/>; <paramref name="note"/> says what was chosen and why.</summary>
    public static IComputeBackend Create(string name, out string note)
    {
        string key = name.Trim().ToLowerInvariant();
        switch (key)
        {
            case Reference:
            case Managed:
                return TryCreateExact(key, () => null, out note)!;
            case Ilgpu:
            case Auto:
            case Cublas:
                var gpu = GpuAccelerators.TryCreateCuda(out string reason);
                if (gpu is null)
                {
                    note = $"managed CPU backend ({(key == Auto ? "no GPU" : $"{key} asked for, but no GPU")}: {reason})";
                    return new ManagedCpuBackend();
                }

                if (key == Cublas)
                {
                    if (CublasBackend.TryCreate(gpu.Accelerator, out string why) is { } cublas)
                    {
                        note = $"cublas backend on {gpu.Description} ({why})";
                        return new OwningBackend(cublas, gpu);
                    }

                    note = $"ilgpu backend on {gpu.Description} (cublas asked for, but {why})";
                    return new OwningBackend(new IlgpuBackend(gpu.Accelerator), gpu);
                }

                note = $"ilgpu backend on {gpu.Description}";
                return new OwningBackend(new IlgpuBackend(gpu.Accelerator), gpu);
            default:
                throw new ArgumentException($"unknown compute backend '{name}'; allowed: {string.Join(", ", Names)}");
        }
    }

    /// <summary>
    /// Creates exactly the backend named <paramref name="name"/> (one of <see cref="Concrete"/>), a GPU one on the
    /// accelerator <paramref name="gpu"/> gives (shared, not owned: the caller disposes it after the backend); null and
    /// why not where that backend cannot be had here. <paramref name="note"/> says what was created, or why not.
    /// </summary>
    public static IComputeBackend? TryCreateExact(string name, Func<GpuAccelerator?> gpu, out string note)
    {
        ArgumentNullException.ThrowIfNull(gpu);
        switch (name.Trim().ToLowerInvariant())
        {
            case Reference:
                note = "reference backend (fp32 products, fp64 accumulation)";
                return new ReferenceBackend();
            case Managed:
                note = "managed CPU backend";
                return new ManagedCpuBackend();
            case Ilgpu:
                if (gpu() is not { } device)
                {
                    note = "no CUDA GPU";
                    return null;
                }

                note = $"ilgpu backend on {device.Description}";
                return new IlgpuBackend(device.Accelerator);
            case Cublas:
                if (gpu() is not { } cuda)
                {
                    note = "no CUDA GPU";
                    return null;
                }

                var cublas = CublasBackend.TryCreate(cuda.Accelerator, out string why);
                note = cublas is null ? why : $"cublas backend on {cuda.Description} ({why})";
                return cublas;
            default:
                throw new ArgumentException($"unknown compute backend '{name}'; allowed: {string.Join(", ", Concrete)}");
        }
    }

    /// <summary>A GPU backend that also owns (and disposes, after itself) its accelerator and context.</summary>
    private sealed class OwningBackend(IComputeBackend inner, GpuAccelerator gpu) : IComputeBackend, IDisposable
    {
        public string Name => inner.Name;

        public IPreparedLinear Prepare(Model.Numerics.WeightMatrix weight) => inner.Prepare(weight);

        public void Linear(IPreparedLinear weight, ReadOnlySpan<float> x, int tokens, Span<float> y) => inner.Linear(weight, x, tokens, y);

        public void ExpertFfn(IPreparedLinear up, IPreparedLinear down, ReadOnlySpan<float> z, int tokens, Span<float> output) =>
            inner.ExpertFfn(up, down, z, tokens, output);

        public void ExpertFfns(ReadOnlySpan<ExpertFfnGroup> groups, ReadOnlySpan<float> z, Span<float> output) =>
            inner.ExpertFfns(groups, z, output);

        public void Dispose()
        {
            (inner as IDisposable)?.Dispose();
            gpu.Dispose();
        }
    }
}
