using System.Diagnostics;
using System.Globalization;
using System.Runtime.Intrinsics;
using System.Text.Json;
using MoECluster.Kernels.Cpu;
using MoECluster.Model.Numerics;

namespace MoECluster.Kernels.Bench;

/// <summary>
/// Times the managed SGEMM (Y = X · Wᵀ) at the Nemotron-3 Super expert shapes: best-of-N wall time after warm-up,
/// reported as GFLOP/s (2·T·K·N flops per call). Weights are fp32 panels, or with <c>--weights bf16</c> the bfloat16
/// panels BF16 checkpoint weights are packed into (widened to fp32 inside the micro-kernel).
/// </summary>
internal static class GemmBenchmark
{
    private static readonly (int Tokens, int In, int Out)[] Shapes =
    [
        (64, 1024, 2688), (64, 2688, 1024),
        (256, 1024, 2688), (256, 2688, 1024),
        (1024, 1024, 2688), (1024, 2688, 1024),
    ];

    public static int Run(string[] args)
    {
        if (args.Length == 0 || args[0] != "gemm")
        {
            Console.Error.WriteLine("usage: gemm [--json FILE] [--repeats N] [--min-seconds S] [--threads N] [--path vector512|vector256|scalar] [--weights fp32|bf16] [--shape T,K,N]");
            return 2;
        }

        string? jsonPath = null;
        int repeats = 20;
        double minSeconds = 1.0;
        int threads = Environment.ProcessorCount;
        KernelPath path = KernelPaths.Best;
        bool bf16 = false;
        var shapes = new List<(int Tokens, int In, int Out)>();
        for (int i = 1; i < args.Length; i++)
        {
            string value = i + 1 < args.Length ? args[i + 1] : throw new ArgumentException($"{args[i]} needs a value");
            switch (args[i])
            {
                case "--json": jsonPath = value; break;
                case "--repeats": repeats = int.Parse(value, CultureInfo.InvariantCulture); break;
                case "--min-seconds": minSeconds = double.Parse(value, CultureInfo.InvariantCulture); break;
                case "--threads": threads = int.Parse(value, CultureInfo.InvariantCulture); break;
                case "--path": path = Enum.Parse<KernelPath>(value, ignoreCase: true); break;
                case "--weights": bf16 = value.ToUpperInvariant() switch { "BF16" => true, "FP32" => false, _ => throw new ArgumentException($"--weights is fp32 or bf16, not {value}") }; break;
                case "--shape":
                    int[] parts = value.Split(',').Select(s => int.Parse(s, CultureInfo.InvariantCulture)).ToArray();
                    shapes.Add((parts[0], parts[1], parts[2]));
                    break;
                default: throw new ArgumentException($"unknown option {args[i]}");
            }

            i++;
        }

        if (shapes.Count == 0)
        {
            shapes.AddRange(Shapes);
        }

        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"managed SGEMM, path {path}, {(bf16 ? "bf16" : "fp32")} weights, {threads} threads, Vector512 accelerated: {Vector512.IsHardwareAccelerated}"));
        var results = new List<GemmResult>();
        foreach ((int tokens, int k, int n) in shapes)
        {
            GemmResult result = Measure(tokens, k, n, path, bf16, threads, repeats, minSeconds);
            results.Add(result);
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"T={tokens,5} K={k,5} N={n,5}  {result.Seconds * 1e3,9:F3} ms  {result.Gflops,8:F1} GFLOP/s"));
        }

        if (jsonPath is not null)
        {
            var report = new GemmReport(path.ToString(), bf16 ? "bf16" : "fp32", threads, Environment.ProcessorCount, results);
            File.WriteAllText(jsonPath, JsonSerializer.Serialize(report, GemmJsonContext.Default.GemmReport));
        }

        return 0;
    }

    private static GemmResult Measure(int tokens, int k, int n, KernelPath path, bool bf16, int threads, int repeats, double minSeconds)
    {
        var random = new Random(1234);
        float[] w = new float[n * k];
        float[] x = new float[tokens * k];
        float[] y = new float[tokens * n];
        for (int i = 0; i < w.Length; i++)
        {
            w[i] = (float)((random.NextDouble() * 2) - 1);
        }

        for (int i = 0; i < x.Length; i++)
        {
            x[i] = (float)((random.NextDouble() * 2) - 1);
        }

        PackedMatrix packed;
        if (bf16)
        {
            ushort[] bits = new ushort[w.Length];
            ElementConversions.SingleToBFloat16(w, bits);
            packed = PackedMatrix.FromBFloat16(bits, n, k, path);
        }
        else
        {
            packed = PackedMatrix.FromFloat32(w, n, k, path);
        }
        for (int i = 0; i < 5; i++)
        {
            ManagedSgemm.Multiply(packed, x, tokens, y, threads);
        }

        double best = double.MaxValue;
        var total = Stopwatch.StartNew();
        for (int runs = 0; runs < repeats || total.Elapsed.TotalSeconds < minSeconds; runs++)
        {
            long start = Stopwatch.GetTimestamp();
            ManagedSgemm.Multiply(packed, x, tokens, y, threads);
            best = Math.Min(best, Stopwatch.GetElapsedTime(start).TotalSeconds);
        }

        double flops = 2.0 * tokens * k * n;
        return new GemmResult(tokens, k, n, best, flops / best / 1e9);
    }
}
