using System.Globalization;
using System.Text.Json.Nodes;
using MoECluster.Cluster.Hosting;
using MoECluster.Kernels.Gpu;
using MoECluster.Model.Compute;

namespace MoECluster.Cli.Commands;

/// <summary>
/// <c>bench</c>'s GPU summary (what bench/gpu-check.sh prints): the decode GEMV's weight-read bandwidth (T ≤ 8, device-
/// resident weights read once per call) against the device's copy bandwidth, and ILGPU against cuBLAS GEMM throughput.
/// </summary>
internal sealed class GpuSummary
{
    /// <summary>Batches up to this many tokens count as decode (bound by reading the weights).</summary>
    public const int DecodeTokens = 8;

    private readonly Dictionary<string, List<double>> _decodeRead = [];
    private readonly List<(int Tokens, double Ratio)> _ilgpuOverCublas = [];

    public static bool IsGpu(IComputeBackend backend) => backend.Name is ComputeBackends.Ilgpu or ComputeBackends.Cublas;

    public void AddDecodeRead(string backend, double gbps)
    {
        if (!_decodeRead.TryGetValue(backend, out var list))
        {
            _decodeRead[backend] = list = [];
        }

        list.Add(gbps);
    }

    public void AddGemm(JsonObject entry, int tokens)
    {
        if (entry[ComputeBackends.Ilgpu] is JsonValue ilgpu && entry[ComputeBackends.Cublas] is JsonValue cublas && cublas.GetValue<double>() > 0)
        {
            _ilgpuOverCublas.Add((tokens, ilgpu.GetValue<double>() / cublas.GetValue<double>()));
        }
    }

    public JsonObject Print(TextWriter output, GpuAccelerator gpu)
    {
        var copy = DeviceCopyBandwidth.Measure(gpu.Accelerator);
        double copyGbps = copy.BytesPerSecond / 1e9;
        var json = new JsonObject
        {
            ["device"] = gpu.Description,
            ["copy_gb_per_second"] = copyGbps,
            ["copy_buffer_bytes"] = copy.BufferBytes,
        };
        output.WriteLine($"GPU summary ({gpu.Description}):");
        output.WriteLine(Invariant($"  device copy bandwidth: {copyGbps:F1} GB/s (read + write, {copy.BufferBytes >> 20} MiB, best of {copy.Runs})"));
        foreach (var (backend, reads) in _decodeRead)
        {
            double best = reads.Max();
            double median = reads.Order().ElementAt(reads.Count / 2);
            output.WriteLine(Invariant($"  decode weight read (T <= {DecodeTokens}), {backend}: best {best:F1} GB/s = {best / copyGbps:F2} of copy, median {median:F1} GB/s = {median / copyGbps:F2} of copy ({reads.Count} cases)"));
            json[$"decode_read_{backend}"] = new JsonObject { ["best_gb_per_second"] = best, ["median_gb_per_second"] = median, ["best_over_copy"] = best / copyGbps, ["median_over_copy"] = median / copyGbps };
        }

        if (_ilgpuOverCublas.Count > 0)
        {
            double all = GeoMean(_ilgpuOverCublas.Select(r => r.Ratio));
            var large = _ilgpuOverCublas.Where(r => r.Tokens >= 64).Select(r => r.Ratio).ToList();
            double big = large.Count > 0 ? GeoMean(large) : double.NaN;
            output.WriteLine(Invariant($"  GEMM ilgpu / cublas throughput: geometric mean {all:F2} over {_ilgpuOverCublas.Count} cases; T >= 64: {big:F2}"));
            json["ilgpu_over_cublas"] = all;
            json["ilgpu_over_cublas_t64_up"] = large.Count > 0 ? big : null;
        }

        return json;
    }

    private static double GeoMean(IEnumerable<double> values) => Math.Exp(values.Average(Math.Log));

    private static string Invariant(FormattableString s) => s.ToString(CultureInfo.InvariantCulture);
}
