using System.Globalization;
using System.Text.Json.Nodes;
using MoECluster.Model.Dispatch;
using MoECluster.Model.Experts;
using MoECluster.Model.Layers;

namespace MoECluster.Cli.Commands;

/// <summary>
/// Where a layer's time goes (<c>bench --layer-only --breakdown</c>): each step of the mixer timed alone on the
/// batch's own data, best of the repetitions — route (gate logits, top-K, W_down), experts and combine (gather, the
/// grouped FFNs, the fp64 weighted sum), of which the combine alone, and finish (W_up, shared expert, checks).
/// </summary>
internal sealed class BenchBreakdown(MoeMixer mixer, double minSeconds)
{
    private readonly List<(int Tokens, double Layer, double Route, double Experts, double Combine, double Finish)> _rows = [];

    public JsonObject Measure(float[] x, int tokens, double layerSeconds)
    {
        int w = mixer.Config.RoutedWidth;
        var (plan, z) = mixer.Prepare(x, tokens);
        var pairs = RoutedPairs.Of(plan);
        float[] u = mixer.Experts.ComputeCombined(z, pairs);
        float[] slotOutputs = new float[pairs.Count * w];
        int[] slotRows = [.. Enumerable.Range(0, pairs.Count).Select(s => s / plan.TopK)];
        mixer.Experts.Compute(z, slotRows, new TokenPermutation(plan.Experts, mixer.Experts.RoutedExperts), slotOutputs);
        float[] y = new float[x.Length];
        double seconds = Math.Min(minSeconds, 0.25);

        double route = BenchCommand.BestSeconds(() => mixer.Prepare(x, tokens), seconds);
        double experts = BenchCommand.BestSeconds(() => mixer.Experts.ComputeCombined(z, pairs), seconds);
        double combine = BenchCommand.BestSeconds(() => WeightedSum.OverSlots(pairs, slotOutputs, w), seconds);
        double finish = BenchCommand.BestSeconds(() => mixer.Finish(u, x, tokens, y), seconds);
        _rows.Add((tokens, layerSeconds, route, experts, combine, finish));
        return new JsonObject
        {
            ["route_seconds"] = route,
            ["experts_and_combine_seconds"] = experts,
            ["combine_seconds"] = combine,
            ["finish_seconds"] = finish,
        };
    }

    public void Print(TextWriter output)
    {
        output.WriteLine($"breakdown ({mixer.Backend.Name}; each step timed alone, best of its repetitions; ms): route = gate, top-K, W_down; experts = gather, grouped FFNs, combine; finish = W_up, shared expert");
        output.WriteLine($"{"T",6} {"layer",9} {"route",9} {"experts",9} {"(combine)",10} {"finish",9} {"sum",9}");
        foreach (var r in _rows)
        {
            output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{r.Tokens,6} {r.Layer * 1e3,9:F2} {r.Route * 1e3,9:F2} {r.Experts * 1e3,9:F2} {r.Combine * 1e3,10:F2} {r.Finish * 1e3,9:F2} {(r.Route + r.Experts + r.Finish) * 1e3,9:F2}"));
        }
    }
}
