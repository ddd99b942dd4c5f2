using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using MoECluster.Cluster.Hosting;
using MoECluster.Kernels.Gpu;
using MoECluster.Model.Analysis;
using MoECluster.Model.Checkpoints;
using MoECluster.Model.Compute;
using MoECluster.Model.Configuration;
using MoECluster.Model.Layers;
using MoECluster.Model.Numerics;
using MoECluster.Model.Presets;

namespace MoECluster.Cli.Commands;

/// <summary>
/// <c>moecluster bench</c>: GEMM and whole-layer benchmarks at Nemotron-3 Super shapes for every available
/// backend, as a table and JSON. Every backend runs in the same process on the same inputs; layer results are
/// compared with the reference backend's output.
/// </summary>
internal static class BenchCommand
{
    public static Command Create(TextWriter output, TextWriter error)
    {
        var tokens = new Option<int[]>("--tokens") { Description = "Token counts.", DefaultValueFactory = _ => [1, 8, 64, 256, 1024], AllowMultipleArgumentsPerToken = true };
        var backends = new Option<string[]>("--backend") { Description = "Backends to run (default: every available one).", AllowMultipleArgumentsPerToken = true };
        backends.AcceptOnlyFromAmong([.. ComputeBackends.Concrete]);
        var gemmOnly = new Option<bool>("--gemm-only") { Description = "Only the GEMM benchmark." };
        var layerOnly = new Option<bool>("--layer-only") { Description = "Only the whole-layer benchmark." };
        var model = new Option<string?>("--model") { Description = "Model directory for the layer benchmark (default: a generated super-shape layer with 64 experts)." };
        var json = new Option<string?>("--json") { Description = "Write the results as JSON to this file." };
        var seconds = new Option<double>("--seconds") { Description = "Minimum measuring time per case (best of the repetitions counts).", DefaultValueFactory = _ => 1.0 };
        var breakdown = new Option<bool>("--breakdown") { Description = "With the layer benchmark: time each step of the layer alone (route, experts and combine, finish) on every backend but the reference." };
        var readMib = new Option<int>("--read-mib") { Description = "Buffer of the memory read-bandwidth probe (the layer floors' bytes floor), MiB; keep it far larger than the caches.", DefaultValueFactory = _ => (int)(MemoryReadBandwidth.DefaultBytes >> 20) };
        var command = new Command("bench", "Benchmark GEMMs and a whole MoE layer at Nemotron-3 Super shapes on every available backend.")
        {
            tokens, backends, gemmOnly, layerOnly, model, json, seconds, readMib, breakdown,
        };
        command.SetAction(parse => VerbRunner.Guard("bench", error, () =>
        {
            using var owned = new Owned();
            var chosen = Backends(parse.GetValue(backends), error, owned);
            int[] t = parse.GetValue(tokens)!;
            if (t.Any(v => v < 1 || v > 1 << 16))
            {
                throw new UsageException("--tokens must be 1..65536");
            }

            var results = new JsonObject
            {
                ["machine"] = $"{Environment.ProcessorCount} cores, {System.Runtime.InteropServices.RuntimeInformation.OSDescription}",
                ["vector512"] = System.Runtime.Intrinsics.Vector512.IsHardwareAccelerated,
                ["backends"] = new JsonArray([.. chosen.Select(b => (JsonNode)b.Name)]),
            };
            double minSeconds = parse.GetValue(seconds);
            int mib = parse.GetValue(readMib);
            if (mib < 1 || mib > 1 << 16)
            {
                throw new UsageException("--read-mib must be 1..65536");
            }

            if (!parse.GetValue(layerOnly))
            {
                results["gemm"] = Gemm(output, chosen, t, minSeconds, owned.Gpu, results);
            }

            if (!parse.GetValue(gemmOnly))
            {
                results["layer"] = Layer(output, chosen, t.Where(v => v <= 1024).ToArray(), parse.GetValue(model), minSeconds, (long)mib << 20, results, parse.GetValue(breakdown));
            }

            if (parse.GetValue(json) is string path)
            {
                File.WriteAllText(path, results.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
                output.WriteLine($"results written to {path}");
            }

            return CliApp.ExitOk;
        }));
        return command;
    }

    /// <summary>
    /// The backends to compare (names from <see cref="ComputeBackends"/>): by default every concrete one, the GPU ones
    /// (ilgpu, cublas) where a CUDA device (and cuBLAS) exist; a backend asked for but unavailable is reported and skipped.
    /// </summary>
    private static List<IComputeBackend> Backends(string[]? names, TextWriter error, Owned owned)
    {
        names = names is { Length: > 0 } ? names : [.. ComputeBackends.Concrete];
        var list = new List<IComputeBackend>();
        GpuAccelerator? gpu = null;
        string gpuReason = string.Empty;
        bool gpuTried = false;
        GpuAccelerator? Gpu()
        {
            if (!gpuTried)
            {
                gpuTried = true;
                gpu = GpuAccelerators.TryCreateCuda(out gpuReason);
                if (gpu is not null)
                {
                    owned.Add(gpu);
                    owned.Gpu = gpu;
                }
            }

            return gpu;
        }

        foreach (string name in names)
        {
            if (!ComputeBackends.Concrete.Contains(name))
            {
                throw new UsageException($"unknown backend '{name}'; allowed: {string.Join(", ", ComputeBackends.Concrete)}");
            }

            var backend = ComputeBackends.TryCreateExact(name, Gpu, out string note);
            if (backend is null)
            {
                error.WriteLine($"bench: {name} skipped: {(gpuTried && gpu is null ? gpuReason : note)}");
                continue;
            }

            if (backend is IDisposable disposable)
            {
                owned.Add(disposable);
            }

            list.Add(backend);
        }

        if (list.Count == 0)
        {
            throw new UsageException("no backend to benchmark");
        }

        return list;
    }

    /// <summary>Disposes what the benchmark created (backends, accelerators) in reverse order.</summary>
    private sealed class Owned : IDisposable
    {
        private readonly List<IDisposable> _items = [];

        /// <summary>The CUDA accelerator the GPU backends run on, when one was made.</summary>
        public GpuAccelerator? Gpu { get; set; }

        public void Add(IDisposable item) => _items.Add(item);

        public void Dispose()
        {
            for (int i = _items.Count - 1; i >= 0; i--)
            {
                _items[i].Dispose();
            }
        }
    }

    /// <summary>The Linear shapes of a Super-shape layer: name, in, out.</summary>
    internal static readonly (string Name, int In, int Out)[] SuperShapes =
    [
        ("latent down d->l", 4096, 1024),
        ("expert up l->m", 1024, 2688),
        ("expert down m->l", 2688, 1024),
        ("latent up l->d", 1024, 4096),
    ];

    private static JsonArray Gemm(TextWriter output, List<IComputeBackend> backends, int[] tokens, double minSeconds, GpuAccelerator? gpu, JsonObject results)
    {
        var rows = new JsonArray();
        var summary = new GpuSummary();
        using var dir = new TempFolder();
        output.WriteLine("GEMM y = x W^T (BF16 weights), GFLOP/s, best of repetitions:");
        output.WriteLine($"{"shape",-18} {"T",5} " + string.Join(" ", backends.Select(b => $"{b.Name,10}")));
        foreach (var (name, input, outputs) in SuperShapes)
        {
            var weight = RandomWeight(dir, name, outputs, input);
            var prepared = backends.Select(b => b.Prepare(weight)).ToArray();
            foreach (int t in tokens)
            {
                float[] x = RandomValues(t * input, 7);
                var y = new float[t * outputs];
                var cells = new List<string>();
                var entry = new JsonObject { ["shape"] = name, ["in"] = input, ["out"] = outputs, ["tokens"] = t };
                for (int i = 0; i < backends.Count; i++)
                {
                    var backend = backends[i];
                    var p = prepared[i];
                    double s = BestSeconds(() => backend.Linear(p, x, t, y), backend.Name == "reference" ? Math.Min(minSeconds, 0.3) : minSeconds);
                    double gflops = 2.0 * t * input * outputs / s / 1e9;
                    entry[backend.Name] = gflops;
                    if (GpuSummary.IsGpu(backend) && t <= GpuSummary.DecodeTokens)
                    {
                        // Decode reads every weight once per call: the device-resident bytes over the time.
                        double readGbps = p.PreparedBytes / s / 1e9;
                        ((JsonObject)(entry["weight_read_gb_per_second"] ??= new JsonObject()))[backend.Name] = readGbps;
                        summary.AddDecodeRead(backend.Name, readGbps);
                    }

                    cells.Add(string.Create(CultureInfo.InvariantCulture, $"{gflops,10:F1}"));
                }

                summary.AddGemm(entry, t);
                rows.Add(entry);
                output.WriteLine($"{name,-18} {t,5} " + string.Join(" ", cells));
            }
        }

        if (gpu is not null && backends.Any(GpuSummary.IsGpu))
        {
            results["gpu_summary"] = summary.Print(output, gpu);
        }

        return rows;
    }

    private static JsonArray Layer(TextWriter output, List<IComputeBackend> backends, int[] tokens, string? modelDir, double minSeconds, long readBytes, JsonObject results, bool breakdown)
    {
        using var dir = new TempFolder();
        string path = modelDir ?? dir.Path;
        if (modelDir is null)
        {
            output.WriteLine("generating a super-shape layer (64 experts) for the layer benchmark ...");
            SyntheticCheckpoint.Write(path, ModelPresets.Get("super-shape").Build(experts: 64, moeLayers: 1), 1);
        }

        var rows = new JsonArray();
        var models = backends.Select(b => MoeModel.Open(path, b)).ToArray();
        var floors = new BenchFloors?[models.Length];
        var breakdowns = new BenchBreakdown?[models.Length];
        MemoryReadProbe? probe = null;
        try
        {
            int layer = models[0].FirstMoeLayer;
            int d = models[0].Config.HiddenSize;
            output.WriteLine($"whole MoE layer {layer} forward ({MoeModes.Of(models[0].Config)}, N={models[0].Config.NRoutedExperts}, K={models[0].Config.NumExpertsPerTok}), seconds per batch; error vs the reference backend:");
            foreach (var m in models)
            {
                m.Mixer(layer); // load and prepare (pack / upload) outside the timing
            }

            for (int i = 0; i < models.Length; i++)
            {
                breakdowns[i] = breakdown && models[i].Backend.Name != "reference" ? new BenchBreakdown(models[i].Mixer(layer), minSeconds) : null;
            }

            // The bytes floor's denominator: the read probe. It runs alone before the first batch (the header line), and then
            // one pass after each of a batch's repetitions, over the same window: the best pass of that window is the batch's
            // read bandwidth. A shared machine's bandwidth drifts within a run (the Zen 5 build VM reads 45 or 80 GB/s, moments
            // apart); probes before and after a batch could meet another moment than the batch itself, interleaved ones meet
            // the same. The buffer (1 GiB) is kept for the whole benchmark.
            JsonArray? probes = null;
            double bestRead = 0;
            if (models.Any(m => BenchFloors.Applies(m.Backend)))
            {
                probes = [];
                probe = new MemoryReadProbe(readBytes);
                var first = probe.Best(minSeconds: minSeconds);
                bestRead = first.BytesPerSecond;
                probes.Add(first.BytesPerSecond);
                output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"memory read bandwidth: {first.BytesPerSecond / 1e9:F1} GB/s (sum over {first.BufferBytes >> 20} MiB, {first.Threads} threads, best of {first.Runs}); then one pass after each repetition of a batch, the batch's best pass counting"));
                for (int i = 0; i < models.Length; i++)
                {
                    floors[i] = BenchFloors.Applies(models[i].Backend) ? new BenchFloors(models[i].Mixer(layer), minSeconds) : null;
                }
            }

            foreach (int t in tokens)
            {
                float[] x = RandomValues(t * d, 11);
                float[]? reference = null;
                var entry = new JsonObject { ["tokens"] = t };
                var cells = new List<string>();
                double referenceSeconds = double.NaN;
                for (int i = 0; i < models.Length; i++)
                {
                    float[] y = [];
                    var m = models[i];
                    double s;
                    double read = double.NaN;
                    if (probe is not null && floors[i] is not null)
                    {
                        (s, read) = BestSecondsInterleaved(() => y = m.ForwardLayer(layer, x, t), probe, minSeconds);
                        probes!.Add(read);
                        bestRead = Math.Max(bestRead, read);
                    }
                    else
                    {
                        s = BestSeconds(() => y = m.ForwardLayer(layer, x, t), m.Backend.Name == "reference" ? 0 : minSeconds);
                    }


                    if (m.Backend.Name == "reference")
                    {
                        reference = y;
                        referenceSeconds = s;
                    }

                    double err = reference is null ? double.NaN : RelativeError.Of(y, reference);
                    entry[m.Backend.Name] = new JsonObject
                    {
                        ["seconds"] = s,
                        ["tokens_per_second"] = t / s,
                        ["relative_error_vs_reference"] = double.IsNaN(err) ? null : err,
                        ["speedup_vs_reference"] = double.IsNaN(referenceSeconds) ? null : referenceSeconds / s,
                    };
                    if (breakdowns[i] is { } steps)
                    {
                        ((JsonObject)entry[m.Backend.Name]!)["breakdown"] = steps.Measure(x, t, s);
                    }

                    if (floors[i] is { } floor && !double.IsNaN(read))
                    {
                        ((JsonObject)entry[m.Backend.Name]!)["floors"] = floor.Measure(x, t, s, read);
                    }

                    cells.Add(string.Create(CultureInfo.InvariantCulture, $"{m.Backend.Name} {s:F3} s{(double.IsNaN(referenceSeconds) || m.Backend.Name == "reference" ? string.Empty : $" ({referenceSeconds / s:F1}x, err {err:E1})")}"));
                }

                rows.Add(entry);
                output.WriteLine($"  T={t,5}: " + string.Join(" | ", cells));
            }

            if (probes is not null && probe is not null)
            {
                results["memory_read"] = new JsonObject
                {
                    ["bytes_per_second"] = bestRead,
                    ["buffer_bytes"] = probe.BufferBytes,
                    ["threads"] = probe.Threads,
                    ["probes_bytes_per_second"] = probes,
                };
                foreach (var floor in floors)
                {
                    floor?.AgainstBestRead(bestRead);
                }
            }

            foreach (var floor in floors)
            {
                floor?.Print(output);
            }

            foreach (var steps in breakdowns)
            {
                steps?.Print(output);
            }
        }
        finally
        {
            probe?.Dispose();
            foreach (var floor in floors)
            {
                floor?.Dispose();
            }

            foreach (var m in models)
            {
                m.Dispose();
            }
        }

        return rows;
    }

    /// <summary>
    /// FLOP/s of the managed backend's GEMM y = x W^T for a random BF16 W of [<paramref name="outputs"/>,
    /// <paramref name="inputs"/>] over <paramref name="rows"/> rows, best of repetitions over <paramref name="minSeconds"/>.
    /// </summary>
    internal static double MeasureGemm(int outputs, int inputs, int rows, double minSeconds)
    {
        using var dir = new TempFolder();
        var backend = ComputeBackends.Create(ComputeBackends.Managed, out _);
        try
        {
            var prepared = backend.Prepare(RandomWeight(dir, "w", outputs, inputs));
            try
            {
                float[] x = RandomValues(rows * inputs, 5);
                var y = new float[rows * outputs];
                return 2.0 * rows * inputs * outputs / BestSeconds(() => backend.Linear(prepared, x, rows, y), minSeconds);
            }
            finally
            {
                (prepared as IDisposable)?.Dispose();
            }
        }
        finally
        {
            (backend as IDisposable)?.Dispose();
        }
    }

    private static WeightMatrix RandomWeight(TempFolder dir, string name, int rows, int cols)
    {
        string file = Path.Combine(dir.Path, $"w{rows}x{cols}.safetensors");
        var values = RandomValues(rows * cols, rows ^ cols);
        var bits = new ushort[values.Length];
        ElementConversions.SingleToBFloat16(values, bits);
        byte[] bytes = System.Runtime.InteropServices.MemoryMarshal.AsBytes(bits.AsSpan()).ToArray();
        SafetensorsWriter.Write(file, [(new TensorSpec(name, DType.BF16, [rows, cols]), (ReadOnlyMemory<byte>)bytes)]);
        var st = SafetensorsFile.Open(file);
        dir.Keep(st);
        return new WeightMatrix(new TensorRef(st, st.GetTensor(name)), rows, cols);
    }

    internal static float[] RandomValues(int count, int seed)
    {
        var rng = DeterministicRandom.For((ulong)seed, "bench");
        var v = new float[count];
        for (int i = 0; i < v.Length; i++)
        {
            v[i] = rng.NextSymmetric(1f);
        }

        return v;
    }

    /// <summary>
    /// As <see cref="BestSeconds"/>, with one pass of the read <paramref name="probe"/> after each repetition (and one after the
    /// warm-up): the best repetition and the best probe pass of the same window (bytes / second).
    /// </summary>
    internal static (double Seconds, double ReadBytesPerSecond) BestSecondsInterleaved(Action run, MemoryReadProbe probe, double minSeconds)
    {
        double read = 0;
        double seconds = BestSeconds(run, minSeconds, () => read = Math.Max(read, probe.Pass()));
        return (seconds, read);
    }

    /// <summary>
    /// Runs once to warm up, then repeats until <paramref name="minSeconds"/> have passed (at least twice); the best time counts.
    /// <paramref name="afterEach"/> runs after the warm-up and after each repetition, outside the timing.
    /// </summary>
    internal static double BestSeconds(Action run, double minSeconds, Action? afterEach = null)
    {
        run();
        afterEach?.Invoke();
        double best = double.MaxValue;
        var total = Stopwatch.StartNew();
        int reps = 0;
        do
        {
            // Raw timestamps (nanoseconds on Linux), not Elapsed: a TimeSpan counts 100 ns ticks, and a tiny model's step
            // can end within one (it read as 0 s).
            long start = Stopwatch.GetTimestamp();
            run();
            best = Math.Min(best, (double)(Stopwatch.GetTimestamp() - start) / Stopwatch.Frequency);
            afterEach?.Invoke();
            reps++;
        }
        while (reps < 2 || total.Elapsed.TotalSeconds < minSeconds);
        return best;
    }

    /// <summary>A temporary folder that also keeps opened files alive until it is disposed.</summary>
    private sealed class TempFolder : IDisposable
    {
        private readonly List<IDisposable> _kept = [];

        public string Path { get; } = Directory.CreateTempSubdirectory("moecluster-bench-").FullName;

        public void Keep(IDisposable d) => _kept.Add(d);

        public void Dispose()
        {
            _kept.ForEach(k => k.Dispose());
            try
            {
                Directory.Delete(Path, recursive: true);
            }
            catch (IOException)
            {
            }
        }
    }
}
