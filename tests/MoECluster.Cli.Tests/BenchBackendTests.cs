using MoECluster.Cluster.Hosting;
using MoECluster.Testing;

namespace MoECluster.Cli.Tests;

/// <summary><c>moecluster bench</c> takes its backends from the one compute-backend catalog (cublas included).</summary>
public sealed class BenchBackendTests
{
    [Fact]
    public void An_unknown_backend_is_refused_with_the_catalog_names()
    {
        var r = ChildProcess.Moecluster("bench", "--backend", "tpu", "--gemm-only");
        Assert.True(r.ExitCode == 2, r.ToString());
        foreach (string name in ComputeBackends.Concrete)
        {
            Assert.Contains(name, r.Stderr, StringComparison.Ordinal);
        }
    }

    [Fact]
    public void A_gpu_backend_that_cannot_be_had_is_skipped_with_the_reason()
    {
        using (var gpu = MoECluster.Kernels.Gpu.GpuAccelerators.TryCreateCuda(out _))
        {
            if (gpu is not null)
            {
                return; // with a GPU, cublas may well run: this pins the machine without one
            }
        }

        var r = ChildProcess.Moecluster("bench", "--backend", "cublas", "--gemm-only", "--tokens", "1", "--seconds", "0.01");
        Assert.True(r.ExitCode == 2, r.ToString());
        string skipped = Assert.Single(r.Stderr.Split('\n'), l => l.StartsWith("bench: cublas skipped: ", StringComparison.Ordinal));
        Assert.True(skipped.Trim().Length > "bench: cublas skipped: ".Length + 5, skipped);
        Assert.Contains("moecluster bench: error: no backend to benchmark", r.Stderr, StringComparison.Ordinal);
    }
}
