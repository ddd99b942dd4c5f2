using MoECluster.Model.Checkpoints;
using MoECluster.Model.Configuration;
using MoECluster.Model.Layers;

namespace MoECluster.Model.Tests.Support;

/// <summary>
/// A float64 reference of the MoE mixer written straight from DESIGN.md §1 with naive loops, sharing nothing
/// with the product's forward but the tensor reader. It also reports the smallest gap between the K-th and the
/// (K+1)-th selection value, so a test can tell a near-tie (decided by rounding) from a wrong selection.
/// </summary>
internal sealed class Fp64Reference(MoeModelConfig config, CheckpointTensors tensors)
{
    public double MinSelectionGap { get; private set; } = double.PositiveInfinity;

    private double[] Tensor(string name) => [.. tensors.GetTensor(name).ReadAllAsFloat32().Select(v => (double)v)];

    private static double[] Linear(double[] w, int rows, int cols, double[] x)
    {
        var y = new double[rows];
        for (int o = 0; o < rows; o++)
        {
            double s = 0;
            for (int i = 0; i < cols; i++)
            {
                s += w[(o * cols) + i] * x[i];
            }

            y[o] = s;
        }

        return y;
    }

    private static double[] Relu2(double[] h) => [.. h.Select(v => v > 0 ? v * v : 0)];

    public double[] Mixer(int layer, double[] x, int tokens)
    {
        int d = config.HiddenSize, n = config.NRoutedExperts, k = config.NumExpertsPerTok, m = config.MoeIntermediateSize;
        int w = config.RoutedWidth;
        double[] gate = Tensor(MoeTensorNames.Gate(layer));
        double[] bias = tensors.TryGetTensor(MoeTensorNames.GateBias(layer), out _) ? Tensor(MoeTensorNames.GateBias(layer)) : new double[n];
        double[]? down = config.IsLatent ? Tensor(MoeTensorNames.LatentDown(layer)) : null;
        double[]? up = config.IsLatent ? Tensor(MoeTensorNames.LatentUp(layer)) : null;
        var experts = new Dictionary<int, (double[] Up, double[] Down)>();
        var y = new double[tokens * d];
        for (int t = 0; t < tokens; t++)
        {
            double[] xt = x[(t * d)..((t + 1) * d)];
            double[] logits = Linear(gate, n, d, xt);
            double[] s;
            if (config.ScoringFunc == ScoringFunction.Softmax)
            {
                double max = logits.Max();
                double[] e = [.. logits.Select(v => Math.Exp(v - max))];
                double sum = e.Sum();
                s = [.. e.Select(v => v / sum)];
            }
            else
            {
                s = [.. logits.Select(v => 1 / (1 + Math.Exp(-v)))];
            }

            double[] choice = [.. s.Select((v, i) => v + bias[i])];
            var eligible = Enumerable.Range(0, n).ToList();
            if (config.NGroup > 1)
            {
                int size = n / config.NGroup;
                var groups = Enumerable.Range(0, config.NGroup)
                    .Select(g => (g, score: Enumerable.Range(g * size, size).Select(i => choice[i]).OrderByDescending(v => v).Take(2).Sum()))
                    .OrderByDescending(p => p.score).ThenBy(p => p.g).Take(config.TopkGroup).Select(p => p.g).ToHashSet();
                eligible = [.. eligible.Where(i => groups.Contains(i / size))];
            }

            var ranked = eligible.OrderByDescending(i => choice[i]).ThenBy(i => i).ToList();
            if (ranked.Count > k)
            {
                MinSelectionGap = Math.Min(MinSelectionGap, choice[ranked[k - 1]] - choice[ranked[k]]);
            }

            var chosen = ranked.Take(k).ToList();
            double denom = chosen.Sum(i => s[i]) + 1e-20;
            double[] z = down is null ? xt : Linear(down, w, d, xt);
            var u = new double[w];
            foreach (int e in chosen)
            {
                double weight = (config.NormTopkProb ? s[e] / denom : s[e]) * config.RoutedScalingFactor;
                if (!experts.TryGetValue(e, out var ew))
                {
                    ew = (Tensor(MoeTensorNames.ExpertUp(layer, e)), Tensor(MoeTensorNames.ExpertDown(layer, e)));
                    experts[e] = ew;
                }

                double[] o = Linear(ew.Down, w, m, Relu2(Linear(ew.Up, m, w, z)));
                for (int i = 0; i < w; i++)
                {
                    u[i] += weight * o[i];
                }
            }

            double[] yt = up is null ? u : Linear(up, d, w, u);
            if (config.HasSharedExpert)
            {
                int ms = config.MoeSharedExpertIntermediateSize;
                double[] sh = Linear(Tensor(MoeTensorNames.SharedDown(layer)), d, ms, Relu2(Linear(Tensor(MoeTensorNames.SharedUp(layer)), ms, d, xt)));
                for (int i = 0; i < d; i++)
                {
                    yt[i] += sh[i];
                }
            }

            Array.Copy(yt, 0, y, t * d, d);
        }

        return y;
    }

    public double[] Stack(double[] x, int tokens)
    {
        int d = config.HiddenSize;
        double[] state = (double[])x.Clone();
        foreach (int layer in config.MoeLayers)
        {
            double[] norm = Tensor(MoeTensorNames.Norm(layer));
            var normed = new double[state.Length];
            for (int t = 0; t < tokens; t++)
            {
                double ms = 0;
                for (int i = 0; i < d; i++)
                {
                    ms += state[(t * d) + i] * state[(t * d) + i];
                }

                double inv = 1 / Math.Sqrt((ms / d) + config.LayerNormEpsilon);
                for (int i = 0; i < d; i++)
                {
                    normed[(t * d) + i] = state[(t * d) + i] * inv * norm[i];
                }
            }

            double[] y = Mixer(layer, normed, tokens);
            for (int i = 0; i < state.Length; i++)
            {
                state[i] += y[i];
            }
        }

        return state;
    }
}
