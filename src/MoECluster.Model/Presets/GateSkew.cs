using System.Globalization;
using MoECluster.Model.Configuration;
using MoECluster.Model.Numerics;
using MoECluster.Model.Routing;

namespace MoECluster.Model.Presets;

/// <summary>
/// Skewed routing, as trained routers have it: expert e (rank e + 1) is chosen by a share of the tokens proportional
/// to (e + 1)^−s (Zipf), capped at every token (an expert is chosen at most once per token) and scaled so that the
/// shares sum to K. A synthetic checkpoint gets it through its e_score_correction_bias, which only steers selection:
/// the bias is fitted to the layer's own gate on Gaussian inputs, so the combine weights and the math are unchanged.
/// </summary>
public sealed record GateSkew(double Zipf)
{
    /// <summary>Inputs the bias is fitted on.</summary>
    public const int CalibrationTokens = 2048;

    private const int Iterations = 300;

    /// <summary>Parses <c>zipf:S</c> (S in (0, 4]).</summary>
    /// <exception cref="FormatException">Anything else.</exception>
    public static GateSkew Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        const string Prefix = "zipf:";
        if (!text.StartsWith(Prefix, StringComparison.OrdinalIgnoreCase)
            || !double.TryParse(text.AsSpan(Prefix.Length), NumberStyles.Float, CultureInfo.InvariantCulture, out double s)
            || !(s > 0 && s <= 4))
        {
            throw new FormatException($"gate skew '{text}' is not zipf:S with 0 < S <= 4 (e.g. zipf:1.2)");
        }

        return new GateSkew(s);
    }

    public override string ToString() => string.Create(CultureInfo.InvariantCulture, $"zipf:{Zipf:G}");

    /// <summary>
    /// The share of tokens each expert should take: c·(e + 1)^−s capped at 1, with c such that the shares sum to K.
    /// </summary>
    public double[] TargetShares(int experts, int topK)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(experts, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(topK, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(topK, experts);
        double[] r = [.. Enumerable.Range(1, experts).Select(rank => Math.Pow(rank, -Zipf))];
        double lo = 0, hi = topK / r[^1];
        for (int i = 0; i < 200; i++)
        {
            double c = (lo + hi) / 2;
            if (r.Sum(x => Math.Min(1, c * x)) < topK)
            {
                lo = c;
            }
            else
            {
                hi = c;
            }
        }

        return [.. r.Select(x => Math.Min(1, hi * x))];
    }

    /// <summary>
    /// The correction bias that makes <paramref name="config"/>'s router, on gate <paramref name="gate"/> ([N, d] as
    /// stored), choose each expert with about its target share on standard-normal inputs; deterministic from
    /// <paramref name="seed"/>.
    /// </summary>
    public float[] FitBias(MoeModelConfig config, ReadOnlySpan<float> gate, ulong seed)
    {
        ArgumentNullException.ThrowIfNull(config);
        int n = config.NRoutedExperts, d = config.HiddenSize;
        if (gate.Length != (long)n * d)
        {
            throw new ArgumentException($"the gate has {gate.Length} values, expected {n} x {d}", nameof(gate));
        }

        float[] logits = Logits(gate.ToArray(), n, d, seed);
        double[] target = TargetShares(n, config.NumExpertsPerTok);
        var bias = new float[n];
        for (int iteration = 0; iteration < Iterations; iteration++)
        {
            double[] shares = Shares(config, logits, bias);
            double rate = 0.5 * (1 - ((double)iteration / Iterations)) + 0.02;
            for (int e = 0; e < n; e++)
            {
                bias[e] += (float)(rate * (target[e] - shares[e]));
            }
        }

        return bias;
    }

    /// <summary>The share of <see cref="CalibrationTokens"/> Gaussian tokens each expert gets with <paramref name="bias"/>.</summary>
    public static double[] Shares(MoeModelConfig config, float[] logits, float[] bias)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(logits);
        int tokens = logits.Length / config.NRoutedExperts;
        var plan = new TopKRouter(config, bias).Route(logits, tokens);
        return [.. Analysis.LayerFloors.RowsPerExpert(plan, config.NRoutedExperts).Select(rows => (double)rows / tokens)];
    }

    /// <summary>Gate logits W_g x of <see cref="CalibrationTokens"/> standard-normal tokens, [tokens, N].</summary>
    public static float[] Logits(float[] gate, int experts, int hidden, ulong seed)
    {
        ArgumentNullException.ThrowIfNull(gate);
        var rng = DeterministicRandom.For(seed, "gate-skew-calibration");
        var x = new float[(long)CalibrationTokens * hidden];
        for (int i = 0; i < x.Length; i++)
        {
            x[i] = (float)rng.NextGaussian();
        }

        var logits = new float[CalibrationTokens * experts];
        Parallel.For(0, CalibrationTokens, t =>
        {
            var row = x.AsSpan(t * hidden, hidden);
            for (int e = 0; e < experts; e++)
            {
                logits[(t * experts) + e] = (float)Float64Dot.Dot(row, gate.AsSpan(e * hidden, hidden));
            }
        });
        return logits;
    }
}
