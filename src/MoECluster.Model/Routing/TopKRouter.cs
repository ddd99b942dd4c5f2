using MoECluster.Model.Configuration;

namespace MoECluster.Model.Routing;

/// <summary>
/// Scores → top-K (Megatron-Core's "router"): sigmoid (or softmax) scores from fp32 gate logits, selection on
/// score + e_score_correction_bias, optionally group-limited (DeepSeek-V3: a group's score is the sum of its
/// top-2 biased scores, the best topk_group groups stay eligible), combine weights from the unbiased scores,
/// normalised when norm_topk_prob and always multiplied by routed_scaling_factor (Nemotron-H semantics).
/// Ties are broken deterministically: larger value first, then lower index. NaN sorts below everything.
/// </summary>
public sealed class TopKRouter
{
    private readonly float[] _bias;
    private readonly int _experts;
    private readonly int _topK;
    private readonly int _groups;
    private readonly int _topKGroups;
    private readonly bool _normalize;
    private readonly float _scale;
    private readonly ScoringFunction _scoring;

    public TopKRouter(MoeModelConfig config, ReadOnlySpan<float> correctionBias)
    {
        config.Validate();
        if (correctionBias.Length != 0 && correctionBias.Length != config.NRoutedExperts)
        {
            throw new ArgumentException(
                $"e_score_correction_bias has {correctionBias.Length} entries, expected n_routed_experts = {config.NRoutedExperts}",
                nameof(correctionBias));
        }

        _experts = config.NRoutedExperts;
        _topK = config.NumExpertsPerTok;
        _groups = config.NGroup;
        _topKGroups = config.TopkGroup;
        _normalize = config.NormTopkProb;
        _scale = (float)config.RoutedScalingFactor;
        _scoring = config.ScoringFunc;
        _bias = correctionBias.Length == 0 ? new float[_experts] : correctionBias.ToArray();
    }

    public int ExpertCount => _experts;

    public int TopK => _topK;

    /// <summary>Routes <paramref name="tokens"/> rows of gate logits ([tokens, N], fp32).</summary>
    public RoutingPlan Route(ReadOnlySpan<float> logits, int tokens)
    {
        if (logits.Length != (long)tokens * _experts)
        {
            throw new ArgumentException($"logits have {logits.Length} values, expected tokens ({tokens}) x experts ({_experts})", nameof(logits));
        }

        var plan = new RoutingPlan(tokens, _topK);
        var scratch = new Scratch(_experts, _groups, _topKGroups);
        for (int t = 0; t < tokens; t++)
        {
            RouteToken(logits.Slice(t * _experts, _experts), scratch,
                plan.Experts.AsSpan(t * _topK, _topK), plan.Weights.AsSpan(t * _topK, _topK));
        }

        return plan;
    }

    private void RouteToken(ReadOnlySpan<float> logits, Scratch scratch, Span<int> experts, Span<float> weights)
    {
        Span<float> scores = scratch.Scores;
        Span<float> choice = scratch.Choice;
        Score(logits, scores);
        for (int e = 0; e < _experts; e++)
        {
            choice[e] = scores[e] + _bias[e];
        }

        if (_groups > 1)
        {
            MaskGroups(choice, scratch);
        }

        SelectTopK(choice, experts);

        float sum = 0f;
        for (int k = 0; k < _topK; k++)
        {
            weights[k] = scores[experts[k]];
            sum += weights[k];
        }

        float factor = _normalize ? _scale / (sum + 1e-20f) : _scale;
        for (int k = 0; k < _topK; k++)
        {
            weights[k] *= factor;
        }
    }

    private void Score(ReadOnlySpan<float> logits, Span<float> scores)
    {
        if (_scoring == ScoringFunction.Sigmoid)
        {
            for (int e = 0; e < logits.Length; e++)
            {
                scores[e] = 1f / (1f + MathF.Exp(-logits[e]));
            }

            return;
        }

        float max = float.NegativeInfinity;
        foreach (float v in logits)
        {
            max = MathF.Max(max, v);
        }

        double total = 0;
        for (int e = 0; e < logits.Length; e++)
        {
            scores[e] = MathF.Exp(logits[e] - max);
            total += scores[e];
        }

        float inv = (float)(1.0 / total);
        for (int e = 0; e < logits.Length; e++)
        {
            scores[e] *= inv;
        }
    }

    /// <summary>Sets the selection value of every expert outside the best topk_group groups to -∞.</summary>
    private void MaskGroups(Span<float> choice, Scratch scratch)
    {
        int size = _experts / _groups;
        Span<float> groupScore = scratch.GroupScores;
        Span<int> top2 = stackalloc int[2];
        for (int g = 0; g < _groups; g++)
        {
            var members = choice.Slice(g * size, size);
            SelectTop(members, top2);
            groupScore[g] = members[top2[0]] + members[top2[1]];
        }

        Span<int> keep = scratch.KeptGroups;
        SelectTop(groupScore, keep);
        Span<bool> kept = scratch.IsKept;
        kept.Clear();
        foreach (int g in keep)
        {
            kept[g] = true;
        }

        for (int g = 0; g < _groups; g++)
        {
            if (!kept[g])
            {
                choice.Slice(g * size, size).Fill(float.NegativeInfinity);
            }
        }
    }

    private void SelectTopK(ReadOnlySpan<float> choice, Span<int> experts) => SelectTop(choice, experts);

    /// <summary>Per-batch work buffers, so routing a token allocates nothing.</summary>
    private sealed class Scratch(int experts, int groups, int keptGroups)
    {
        public float[] Scores { get; } = new float[experts];

        public float[] Choice { get; } = new float[experts];

        public float[] GroupScores { get; } = new float[groups];

        public int[] KeptGroups { get; } = new int[keptGroups];

        public bool[] IsKept { get; } = new bool[groups];
    }

    /// <summary>
    /// Writes into <paramref name="result"/> the indices of the result.Length largest values, best first,
    /// ties to the lower index, NaN last. Insertion into a sorted prefix: O(n·k), fine for k ≤ a few dozen.
    /// </summary>
    internal static void SelectTop(ReadOnlySpan<float> values, Span<int> result)
    {
        int k = result.Length;
        int filled = 0;
        for (int i = 0; i < values.Length; i++)
        {
            float v = values[i];
            if (filled == k && !Better(v, i, values[result[k - 1]], result[k - 1]))
            {
                continue;
            }

            int pos = filled < k ? filled++ : k - 1;
            while (pos > 0 && Better(v, i, values[result[pos - 1]], result[pos - 1]))
            {
                result[pos] = result[pos - 1];
                pos--;
            }

            result[pos] = i;
        }
    }

    private static bool Better(float a, int ia, float b, int ib)
    {
        bool aNaN = float.IsNaN(a);
        bool bNaN = float.IsNaN(b);
        if (aNaN || bNaN)
        {
            return !aNaN || (bNaN && ia < ib);
        }

        return a > b || (a == b && ia < ib);
    }
}
