using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace MoECluster.Model.Configuration;

/// <summary>
/// The MoE-relevant part of a Hugging Face <c>config.json</c> (Nemotron-H semantics, DESIGN.md §2).
/// Construct with <see cref="Parse"/> or <see cref="Load"/>, which validate; <see cref="Validate"/> re-checks
/// a configuration built in code (presets).
/// </summary>
public sealed record MoeModelConfig
{
    /// <summary>The largest width, expert count or layer count accepted; keeps hostile configs from sizing allocations.</summary>
    public const int MaxDimension = 1 << 20;

    public const string Relu2 = "relu2";

    public required int HiddenSize { get; init; }

    /// <summary>ℓ; null for a standard MoE (experts in the hidden width d).</summary>
    public int? MoeLatentSize { get; init; }

    public required int NRoutedExperts { get; init; }

    public required int NumExpertsPerTok { get; init; }

    public required int MoeIntermediateSize { get; init; }

    public int MoeSharedExpertIntermediateSize { get; init; }

    public int NSharedExperts { get; init; } = 1;

    public int NGroup { get; init; } = 1;

    public int TopkGroup { get; init; } = 1;

    public bool NormTopkProb { get; init; } = true;

    public double RoutedScalingFactor { get; init; } = 1.0;

    public string MlpHiddenAct { get; init; } = Relu2;

    public double LayerNormEpsilon { get; init; } = 1e-5;

    public ScoringFunction ScoringFunc { get; init; } = ScoringFunction.Sigmoid;

    public required int NumHiddenLayers { get; init; }

    /// <summary>One character per backbone layer: 'E' MoE, 'M' Mamba, '*' attention, '-' MLP.</summary>
    public required string HybridOverridePattern { get; init; }

    public bool IsLatent => MoeLatentSize is not null;

    /// <summary>The width of routed rows and of expert inputs/outputs: ℓ for LatentMoE, d for standard.</summary>
    public int RoutedWidth => MoeLatentSize ?? HiddenSize;

    public bool HasSharedExpert => NSharedExperts > 0 && MoeSharedExpertIntermediateSize > 0;

    /// <summary>Backbone indices of the MoE layers, in order.</summary>
    public IReadOnlyList<int> MoeLayers =>
        [.. HybridOverridePattern.Select((c, i) => (c, i)).Where(p => p.c == 'E').Select(p => p.i)];

    public LayerKind KindOf(int layer) => HybridOverridePattern[layer] switch
    {
        'E' => LayerKind.Moe,
        'M' => LayerKind.Mamba,
        '*' => LayerKind.Attention,
        _ => LayerKind.Mlp,
    };

    public static MoeModelConfig Load(string path)
    {
        string text;
        try
        {
            text = File.ReadAllText(path, Encoding.UTF8);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ModelConfigException(path, [$"cannot read: {e.Message}"]);
        }

        return Parse(text, path);
    }

    /// <summary>Parses and validates a config.json text; every problem found is reported at once.</summary>
    public static MoeModelConfig Parse(string json, string source = "config.json")
    {
        JsonObject root;
        try
        {
            root = JsonNode.Parse(json, documentOptions: new JsonDocumentOptions { MaxDepth = 16 }) as JsonObject
                ?? throw new ModelConfigException(source, ["the top level is not a JSON object"]);
        }
        catch (JsonException e)
        {
            throw new ModelConfigException(source, [$"not valid JSON: {e.Message}"]);
        }

        var reader = new KeyReader(root);
        string? pattern = reader.String("hybrid_override_pattern");
        int layers = reader.Int("num_hidden_layers", required: true) ?? 0;
        if (pattern is null && root["layers_block_type"] is JsonArray blocks)
        {
            pattern = reader.PatternFromBlockTypes(blocks);
        }

        if (pattern is null && !reader.HasErrors)
        {
            reader.Problems.Add("neither hybrid_override_pattern nor layers_block_type is given: cannot tell which layers are MoE ('E')");
        }

        string act = reader.String("mlp_hidden_act") ?? Relu2;
        string scoring = reader.String("scoring_func") ?? "sigmoid";
        ScoringFunction scoringFunc = ScoringFunction.Sigmoid;
        if (scoring is "softmax")
        {
            scoringFunc = ScoringFunction.Softmax;
        }
        else if (scoring is not "sigmoid")
        {
            reader.Problems.Add($"scoring_func = \"{scoring}\" is not supported: allowed \"sigmoid\", \"softmax\"");
        }

        var config = new MoeModelConfig
        {
            HiddenSize = reader.Int("hidden_size", required: true) ?? 0,
            MoeLatentSize = reader.Int("moe_latent_size"),
            NRoutedExperts = reader.Int("n_routed_experts", required: true) ?? 0,
            NumExpertsPerTok = reader.Int("num_experts_per_tok", required: true) ?? 0,
            MoeIntermediateSize = reader.Int("moe_intermediate_size", required: true) ?? 0,
            MoeSharedExpertIntermediateSize = reader.Int("moe_shared_expert_intermediate_size") ?? 0,
            NSharedExperts = reader.Int("n_shared_experts") ?? 1,
            NGroup = reader.Int("n_group") ?? 1,
            TopkGroup = reader.Int("topk_group") ?? 1,
            NormTopkProb = reader.Bool("norm_topk_prob") ?? true,
            RoutedScalingFactor = reader.Double("routed_scaling_factor") ?? 1.0,
            MlpHiddenAct = act,
            LayerNormEpsilon = reader.Double("layer_norm_epsilon") ?? 1e-5,
            ScoringFunc = scoringFunc,
            NumHiddenLayers = layers,
            HybridOverridePattern = pattern ?? string.Empty,
        };

        List<string> problems = [.. reader.Problems];
        if (problems.Count == 0)
        {
            problems.AddRange(config.Problems());
        }

        return problems.Count > 0 ? throw new ModelConfigException(source, problems) : config;
    }

    /// <summary>Throws <see cref="ModelConfigException"/> naming every key out of range.</summary>
    public MoeModelConfig Validate(string source = "config")
    {
        var problems = Problems();
        return problems.Count > 0 ? throw new ModelConfigException(source, problems) : this;
    }

    private List<string> Problems()
    {
        List<string> p = [];
        void Range(string key, long value, long min, long max, string? why = null)
        {
            if (value < min || value > max)
            {
                p.Add($"{key} = {value} is out of range: must be {min}..{max}{(why is null ? string.Empty : " " + why)}");
            }
        }

        Range("hidden_size", HiddenSize, 1, MaxDimension);
        if (MoeLatentSize is int l)
        {
            Range("moe_latent_size", l, 1, MaxDimension, "(null for a standard MoE; larger than hidden_size is legal)");
        }

        Range("n_routed_experts", NRoutedExperts, 1, 65536);
        Range("num_experts_per_tok", NumExpertsPerTok, 1, Math.Max(1, NRoutedExperts), $"(1..n_routed_experts = {NRoutedExperts})");
        Range("moe_intermediate_size", MoeIntermediateSize, 1, MaxDimension);
        Range("moe_shared_expert_intermediate_size", MoeSharedExpertIntermediateSize, NSharedExperts > 0 ? 1 : 0, MaxDimension,
            NSharedExperts > 0 ? "(n_shared_experts > 0 needs a shared expert width)" : null);
        Range("n_shared_experts", NSharedExperts, 0, 1, "(the shared expert is one MLP of width moe_shared_expert_intermediate_size)");
        Range("num_hidden_layers", NumHiddenLayers, 1, 100_000);
        Range("n_group", NGroup, 1, Math.Max(1, NRoutedExperts), $"(1..n_routed_experts = {NRoutedExperts})");
        if (NGroup >= 1 && NRoutedExperts >= 1)
        {
            if (NRoutedExperts % NGroup != 0)
            {
                p.Add($"n_group = {NGroup} does not divide n_routed_experts = {NRoutedExperts}");
            }
            else if (NGroup > 1 && NRoutedExperts / NGroup < 2)
            {
                p.Add($"n_group = {NGroup} leaves {NRoutedExperts / NGroup} expert per group: group scores sum the top 2, so groups need >= 2 experts");
            }

            Range("topk_group", TopkGroup, 1, NGroup, $"(1..n_group = {NGroup})");
            long reachable = (long)Math.Min(TopkGroup, NGroup) * (NRoutedExperts / NGroup);
            if (TopkGroup >= 1 && TopkGroup <= NGroup && NumExpertsPerTok > reachable && NumExpertsPerTok <= NRoutedExperts)
            {
                p.Add($"num_experts_per_tok = {NumExpertsPerTok} exceeds the {reachable} experts in topk_group = {TopkGroup} groups of {NRoutedExperts / NGroup}");
            }
        }

        if (!double.IsFinite(RoutedScalingFactor) || RoutedScalingFactor <= 0)
        {
            p.Add($"routed_scaling_factor = {RoutedScalingFactor.ToString(CultureInfo.InvariantCulture)} must be a finite number > 0");
        }

        if (!double.IsFinite(LayerNormEpsilon) || LayerNormEpsilon <= 0 || LayerNormEpsilon > 1)
        {
            p.Add($"layer_norm_epsilon = {LayerNormEpsilon.ToString(CultureInfo.InvariantCulture)} must be in (0, 1]");
        }

        if (MlpHiddenAct != Relu2)
        {
            p.Add($"mlp_hidden_act = \"{MlpHiddenAct}\" is not supported: allowed \"{Relu2}\"");
        }

        if (HybridOverridePattern.Length != NumHiddenLayers)
        {
            p.Add($"hybrid_override_pattern has {HybridOverridePattern.Length} layers but num_hidden_layers = {NumHiddenLayers}");
        }

        int bad = HybridOverridePattern.AsSpan().IndexOfAnyExcept("EM*-");
        if (bad >= 0)
        {
            p.Add($"hybrid_override_pattern has '{HybridOverridePattern[bad]}' at layer {bad}: allowed 'E' (MoE), 'M' (Mamba), '*' (attention), '-' (MLP)");
        }
        else if (!HybridOverridePattern.Contains('E', StringComparison.Ordinal) && HybridOverridePattern.Length > 0)
        {
            p.Add("hybrid_override_pattern has no MoE layer ('E')");
        }

        return p;
    }

    /// <summary>Writes the config as a Hugging Face style config.json (Nemotron-H keys).</summary>
    public string ToJson()
    {
        var o = new JsonObject
        {
            ["architectures"] = new JsonArray("NemotronHForCausalLM"),
            ["model_type"] = "nemotron_h",
            ["hidden_size"] = HiddenSize,
            ["moe_latent_size"] = MoeLatentSize is int l ? JsonValue.Create(l) : null,
            ["n_routed_experts"] = NRoutedExperts,
            ["num_experts_per_tok"] = NumExpertsPerTok,
            ["moe_intermediate_size"] = MoeIntermediateSize,
            ["moe_shared_expert_intermediate_size"] = MoeSharedExpertIntermediateSize,
            ["n_shared_experts"] = NSharedExperts,
            ["n_group"] = NGroup,
            ["topk_group"] = TopkGroup,
            ["norm_topk_prob"] = NormTopkProb,
            ["routed_scaling_factor"] = RoutedScalingFactor,
            ["mlp_hidden_act"] = MlpHiddenAct,
            ["layer_norm_epsilon"] = LayerNormEpsilon,
            ["num_hidden_layers"] = NumHiddenLayers,
            ["hybrid_override_pattern"] = HybridOverridePattern,
            ["torch_dtype"] = "bfloat16",
        };
        if (ScoringFunc == ScoringFunction.Softmax)
        {
            o["scoring_func"] = "softmax";
        }

        return o.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
    }

    /// <summary>Reads typed keys and records, rather than throws, every problem.</summary>
    private sealed class KeyReader(JsonObject root)
    {
        public List<string> Problems { get; } = [];

        public bool HasErrors => Problems.Count > 0;

        public int? Int(string key, bool required = false)
        {
            JsonNode? node = root[key];
            if (node is null)
            {
                if (required)
                {
                    Problems.Add($"{key} is missing");
                }

                return null;
            }

            if (node is JsonValue v && v.TryGetValue(out double d) && d == Math.Floor(d) && d >= int.MinValue && d <= int.MaxValue)
            {
                return (int)d;
            }

            Problems.Add($"{key} = {node.ToJsonString()} is not an integer");
            return null;
        }

        public double? Double(string key)
        {
            JsonNode? node = root[key];
            if (node is null)
            {
                return null;
            }

            if (node is JsonValue v && v.TryGetValue(out double d))
            {
                return d;
            }

            Problems.Add($"{key} = {node.ToJsonString()} is not a number");
            return null;
        }

        public bool? Bool(string key)
        {
            JsonNode? node = root[key];
            if (node is null)
            {
                return null;
            }

            if (node is JsonValue v && v.TryGetValue(out bool b))
            {
                return b;
            }

            Problems.Add($"{key} = {node.ToJsonString()} is not true or false");
            return null;
        }

        public string? String(string key)
        {
            JsonNode? node = root[key];
            if (node is null)
            {
                return null;
            }

            if (node is JsonValue v && v.TryGetValue(out string? s))
            {
                return s;
            }

            Problems.Add($"{key} = {node.ToJsonString()} is not a string");
            return null;
        }

        public string? PatternFromBlockTypes(JsonArray blocks)
        {
            var sb = new StringBuilder(blocks.Count);
            foreach (JsonNode? b in blocks)
            {
                string? kind = b is JsonValue v && v.TryGetValue(out string? s) ? s : null;
                char c = kind switch
                {
                    "moe" => 'E',
                    "mamba" => 'M',
                    "attention" => '*',
                    "mlp" => '-',
                    _ => '?',
                };
                if (c == '?')
                {
                    Problems.Add($"layers_block_type[{sb.Length}] = {b?.ToJsonString() ?? "null"}: allowed \"moe\", \"mamba\", \"attention\", \"mlp\"");
                    return null;
                }

                sb.Append(c);
            }

            return sb.ToString();
        }
    }
}
