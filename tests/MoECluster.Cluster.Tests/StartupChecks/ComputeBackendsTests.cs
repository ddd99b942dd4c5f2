using MoECluster.Cluster.Hosting;
using MoECluster.Kernels.Gpu;

namespace MoECluster.Cluster.Tests.StartupChecks;

/// <summary>The one compute-backend catalog: its names, cublas among them, and what a silo gets where a GPU is missing.</summary>
public sealed class ComputeBackendsTests
{
    [Fact]
    public void The_catalog_names_every_backend_including_cublas()
    {
        Assert.Equal(["auto", "reference", "managed", "ilgpu", "cublas"], ComputeBackends.Names);
        Assert.Equal(ComputeBackends.Names.Skip(1), ComputeBackends.Concrete);
        foreach (string name in ComputeBackends.Names)
        {
            Assert.True(ComputeBackends.IsKnown(name));
            Assert.True(ComputeBackends.IsKnown(name.ToUpperInvariant()));
            Assert.Contains(name, ComputeBackends.Description, StringComparison.Ordinal);
        }

        Assert.False(ComputeBackends.IsKnown("gpu"));
        Assert.False(ComputeBackends.IsKnown(null));
    }

    [Theory]
    [InlineData("reference", "reference")]
    [InlineData("managed", "managed")]
    public void Cpu_backends_are_created_by_name(string name, string created)
    {
        var backend = ComputeBackends.Create(name, out string note);
        Assert.Equal(created, backend.Name);
        Assert.False(string.IsNullOrWhiteSpace(note));
        (backend as IDisposable)?.Dispose();
    }

    [Theory]
    [InlineData("ilgpu")]
    [InlineData("cublas")]
    [InlineData("auto")]
    public void A_gpu_backend_without_a_gpu_falls_back_to_managed_with_the_reason(string name)
    {
        using (var gpu = GpuAccelerators.TryCreateCuda(out _))
        {
            if (gpu is not null)
            {
                return; // a machine with a GPU gets the GPU backend: nothing to fall back from
            }
        }

        var backend = ComputeBackends.Create(name, out string note);
        Assert.Equal("managed", backend.Name);
        Assert.Contains("managed CPU backend", note, StringComparison.Ordinal);
        Assert.Contains("GPU", note, StringComparison.Ordinal);
    }

    [Fact]
    public void Exact_creation_says_why_a_gpu_backend_cannot_be_had()
    {
        Assert.Null(ComputeBackends.TryCreateExact("cublas", () => null, out string why));
        Assert.Equal("no CUDA GPU", why);
        Assert.Null(ComputeBackends.TryCreateExact("ilgpu", () => null, out _));
        Assert.Equal("managed", ComputeBackends.TryCreateExact("managed", () => null, out _)!.Name);
        Assert.Throws<ArgumentException>(() => ComputeBackends.TryCreateExact("auto", () => null, out _));
        var e = Assert.Throws<ArgumentException>(() => ComputeBackends.Create("tpu", out _));
        Assert.Contains("allowed: auto, reference, managed, ilgpu, cublas", e.Message, StringComparison.Ordinal);
    }
}
