using System.Globalization;
using System.Text.Json.Nodes;
using MoECluster.Cluster.Hosting;
using MoECluster.Model.Analysis;
using MoECluster.Model.Compute;
using MoECluster.Model.Layers;

namespace MoECluster.Cli.Commands;

/// <summary>
/// The floors of <c>bench</c>'s layer benchmark for one CPU backend, measured in the same run: for each batch, the
/// layer's GEMMs timed alone with that backend at the batch's shapes (their combined throughput gives the compute
/// floor) and the weight bytes the batch must read at stored precision (gate, W_down, W_up, shared expert and every
/// distinct expert its routing plan chooses) over the machine's read bandwidth (the bytes floor).
/// </summary>
internal sealed class BenchFloors(MoeMixer mixer, double minSeconds) : IDisposable
{
    /// <summary>
    /// A GEMM over fewer rows is timed at this many: below it the GEMM is bound by reading its weights (the bytes
    /// floor's share), not by its arithmetic.
    /// </summary>
    internal const int ComputeBoundRows = 64;

    private readonly Dictionary<string, IPreparedLinear> _prepared = [];
    private readonly List<FloorRow> _rows = [];

    /// <summary>Floors are measured for the CPU backends that are not the reference: their weights are read from host memory.</summary>
    public static bool Applies(IComputeBackend backend) =>
        backend.Name is not (ComputeBackends.Reference or ComputeBackends.Ilgpu or ComputeBackends.Cublas);

    /// <summary>
    /// The floors of a batch of <paramref name="tokens"/> rows <paramref name="x"/> that took <paramref name="measuredSeconds"/>,
    /// the bytes floor over <paramref name="readBytesPerSecond"/> (the best read-probe pass interleaved with this batch's repetitions).
    /// </summary>
    public JsonObject Measure(float[] x, int tokens, double measuredSeconds, double readBytesPerSecond)
    {
        var config = mixer.Config;
        var plan = mixer.Route(x, tokens);
        int[] distinct = LayerFloors.DistinctExperts(plan);
        long bytes = LayerFloors.WeightBytes(mixer.Weights, distinct);
        double flops = (double)tokens * LayerFloors.FlopsPerToken(config);
        int expertRows = (int)Math.Ceiling((double)tokens * config.NumExpertsPerTok / distinct.Length);
        var w = mixer.Weights;
        var expert = w.Experts[distinct[0]]!;
        long d = config.HiddenSize, routed = config.RoutedWidth, m = config.MoeIntermediateSize;
        var gemms = new List<(string Name, Model.Numerics.WeightMatrix Weight, int Rows, double Flops)>
        {
            ("gate", w.Gate, tokens, 2.0 * tokens * config.NRoutedExperts * d),
        };
        if (w.LatentDown is { } down && w.LatentUp is { } up)
        {
            gemms.Add(("latent down", down, tokens, 2.0 * tokens * down.Rows * d));
            gemms.Add(("latent up", up, tokens, 2.0 * tokens * up.Cols * d));
        }

        gemms.Add(("expert up", expert.Up, expertRows, 2.0 * tokens * config.NumExpertsPerTok * routed * m));
        gemms.Add(("expert down", expert.Down, expertRows, 2.0 * tokens * config.NumExpertsPerTok * routed * m));
        if (w.SharedUp is { } s1 && w.SharedDown is { } s2)
        {
            gemms.Add(("shared up", s1, tokens, 2.0 * tokens * s1.Rows * d));
            gemms.Add(("shared down", s2, tokens, 2.0 * tokens * s2.Cols * d));
        }

        var measured = new JsonArray();
        var rates = new List<(double, double)>();
        foreach (var (name, weight, rows, gemmFlops) in gemms)
        {
            int timedRows = Math.Max(rows, ComputeBoundRows);
            double rate = Rate(name, weight, timedRows);
            rates.Add((gemmFlops, rate));
            measured.Add(new JsonObject { ["gemm"] = name, ["out"] = weight.Rows, ["in"] = weight.Cols, ["rows"] = rows, ["timed_rows"] = timedRows, ["gflops_per_second"] = rate / 1e9 });
        }

        double throughput = LayerFloors.CombinedThroughput(rates);
        var floor = LayerFloors.Of(flops, bytes, throughput, readBytesPerSecond, measuredSeconds);
        var json = new JsonObject
        {
            ["flops"] = flops,
            ["gemm_flops_per_second"] = throughput,
            ["compute_floor_seconds"] = floor.ComputeSeconds,
            ["distinct_experts"] = distinct.Length,
            ["weight_bytes_stored"] = bytes,
            ["read_bytes_per_second"] = readBytesPerSecond,
            ["bytes_floor_seconds"] = floor.BytesSeconds,
            ["efficiency"] = floor.Efficiency,
            ["bound"] = floor.Bound,
            ["gemms"] = measured,
        };
        _rows.Add(new FloorRow(tokens, measuredSeconds, flops, throughput, readBytesPerSecond, distinct.Length, bytes, floor, json));
        return json;
    }

    /// <summary>
    /// Each batch's efficiency again against the best read probe of the whole run (<paramref name="bestReadBytesPerSecond"/>),
    /// the stricter reading where the machine's bandwidth swings: written to the JSON (<c>efficiency_at_run_best_read</c>)
    /// and printed beside the efficiency.
    /// </summary>
    public void AgainstBestRead(double bestReadBytesPerSecond)
    {
        for (int i = 0; i < _rows.Count; i++)
        {
            var r = _rows[i];
            var strict = LayerFloors.Of(r.Flops, r.Bytes, r.Throughput, bestReadBytesPerSecond, r.Seconds);
            r.Json["run_best_read_bytes_per_second"] = bestReadBytesPerSecond;
            r.Json["efficiency_at_run_best_read"] = strict.Efficiency;
            _rows[i] = r with { StrictEfficiency = strict.Efficiency };
        }
    }

    /// <summary>The table of every batch measured so far.</summary>
    public void Print(TextWriter output)
    {
        output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"floors ({mixer.Backend.Name}; GEMMs timed alone at the layer's shapes, rows < {ComputeBoundRows} timed at {ComputeBoundRows}; read GB/s: the best read-probe pass interleaved with the batch's repetitions; @best read: the efficiency against the run's best pass):"));
        output.WriteLine($"{"T",6} {"layer s",9} {"GFLOP",8} {"GEMM GF/s",10} {"compute s",10} {"experts",8} {"weight MB",10} {"read GB/s",10} {"bytes s",9} {"efficiency",11} {"@best read",10} bound");
        foreach (var r in _rows)
        {
            output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{r.Tokens,6} {r.Seconds,9:F4} {r.Flops / 1e9,8:F2} {r.Throughput / 1e9,10:F1} {r.Floor.ComputeSeconds,10:F4} {r.Experts,8} {r.Bytes / 1e6,10:F1} {r.ReadBytesPerSecond / 1e9,10:F1} {r.Floor.BytesSeconds,9:F4} {r.Floor.Efficiency,11:F2} {r.StrictEfficiency,10:F2} {r.Floor.Bound}"));
        }
    }

    private double Rate(string name, Model.Numerics.WeightMatrix weight, int rows)
    {
        var backend = mixer.Backend;
        if (!_prepared.TryGetValue(name, out var prepared))
        {
            prepared = backend.Prepare(weight);
            _prepared[name] = prepared;
        }

        float[] input = BenchCommand.RandomValues(rows * weight.Cols, rows ^ weight.Cols);
        var y = new float[rows * weight.Rows];
        double seconds = BenchCommand.BestSeconds(() => backend.Linear(prepared, input, rows, y), Math.Min(minSeconds, 0.25));
        return 2.0 * rows * weight.Rows * weight.Cols / seconds;
    }

    public void Dispose()
    {
        foreach (var p in _prepared.Values)
        {
            (p as IDisposable)?.Dispose();
        }
    }

    private sealed record FloorRow(int Tokens, double Seconds, double Flops, double Throughput, double ReadBytesPerSecond, int Experts, long Bytes, LayerFloor Floor, JsonObject Json)
    {
        public double StrictEfficiency { get; init; } = Floor.Efficiency;
    }
}
