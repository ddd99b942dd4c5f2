using System.Text.Json.Nodes;
using MoECluster.Model.Configuration;

namespace MoECluster.Model.Tests.Configuration;

public sealed class MoeModelConfigTests
{
    /// <summary>The MoE keys of the public Nemotron-3 Super 120B-A12B config.</summary>
    internal static JsonObject SuperConfig() => new()
    {
        ["hidden_size"] = 4096,
        ["moe_latent_size"] = 1024,
        ["n_routed_experts"] = 512,
        ["num_experts_per_tok"] = 22,
        ["moe_intermediate_size"] = 2688,
        ["moe_shared_expert_intermediate_size"] = 5376,
        ["n_shared_experts"] = 1,
        ["n_group"] = 1,
        ["topk_group"] = 1,
        ["norm_topk_prob"] = true,
        ["routed_scaling_factor"] = 5.0,
        ["mlp_hidden_act"] = "relu2",
        ["layer_norm_epsilon"] = 1e-5,
        ["num_hidden_layers"] = 8,
        ["hybrid_override_pattern"] = "MEM*EMEE",
    };

    private static ModelConfigException Refused(JsonObject o) =>
        Assert.Throws<ModelConfigException>(() => MoeModelConfig.Parse(o.ToJsonString(), "test/config.json"));

    [Fact]
    public void Nemotron_super_config_parses_with_every_key()
    {
        var c = MoeModelConfig.Parse(SuperConfig().ToJsonString());
        Assert.Equal(4096, c.HiddenSize);
        Assert.Equal(1024, c.MoeLatentSize);
        Assert.Equal(1024, c.RoutedWidth);
        Assert.Equal(512, c.NRoutedExperts);
        Assert.Equal(22, c.NumExpertsPerTok);
        Assert.Equal(2688, c.MoeIntermediateSize);
        Assert.Equal(5376, c.MoeSharedExpertIntermediateSize);
        Assert.True(c.HasSharedExpert);
        Assert.Equal(5.0, c.RoutedScalingFactor);
        Assert.Equal([1, 4, 6, 7], c.MoeLayers);
        Assert.Equal(LayerKind.Attention, c.KindOf(3));
        Assert.Equal(ScoringFunction.Sigmoid, c.ScoringFunc);
    }

    [Fact]
    public void Null_latent_size_means_standard_moe_routing_in_d()
    {
        var o = SuperConfig();
        o["moe_latent_size"] = null;
        var c = MoeModelConfig.Parse(o.ToJsonString());
        Assert.False(c.IsLatent);
        Assert.Equal(4096, c.RoutedWidth);
    }

    [Fact]
    public void Latent_wider_than_hidden_is_legal()
    {
        var o = SuperConfig();
        o["moe_latent_size"] = 8192;
        Assert.Equal(8192, MoeModelConfig.Parse(o.ToJsonString()).RoutedWidth);
    }

    [Fact]
    public void Layers_block_type_is_an_alternative_to_the_pattern()
    {
        var o = SuperConfig();
        o.Remove("hybrid_override_pattern");
        o["num_hidden_layers"] = 4;
        o["layers_block_type"] = new JsonArray("mamba", "moe", "attention", "moe");
        Assert.Equal([1, 3], MoeModelConfig.Parse(o.ToJsonString()).MoeLayers);
    }

    [Fact]
    public void Top_k_above_expert_count_names_the_key_and_range()
    {
        var o = SuperConfig();
        o["num_experts_per_tok"] = 600;
        var e = Refused(o);
        Assert.Contains("num_experts_per_tok = 600", e.Message, StringComparison.Ordinal);
        Assert.Contains("1..512", e.Message, StringComparison.Ordinal);
        Assert.StartsWith("test/config.json", e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("hidden_size")]
    [InlineData("moe_intermediate_size")]
    [InlineData("n_routed_experts")]
    [InlineData("moe_latent_size")]
    public void Zero_sizes_are_refused_by_name(string key)
    {
        var o = SuperConfig();
        o[key] = 0;
        var e = Refused(o);
        Assert.Contains($"{key} = 0 is out of range", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Unknown_activation_is_refused_with_the_allowed_value()
    {
        var o = SuperConfig();
        o["mlp_hidden_act"] = "silu";
        var e = Refused(o);
        Assert.Contains("mlp_hidden_act = \"silu\"", e.Message, StringComparison.Ordinal);
        Assert.Contains("relu2", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Every_problem_is_reported_at_once()
    {
        var o = SuperConfig();
        o["hidden_size"] = -1;
        o["routed_scaling_factor"] = 0;
        o["layer_norm_epsilon"] = -1;
        var e = Refused(o);
        Assert.Equal(3, e.Problems.Count);
    }

    [Fact]
    public void Missing_required_keys_are_named()
    {
        var o = SuperConfig();
        o.Remove("hidden_size");
        o.Remove("num_experts_per_tok");
        var e = Refused(o);
        Assert.Contains("hidden_size is missing", e.Message, StringComparison.Ordinal);
        Assert.Contains("num_experts_per_tok is missing", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Wrong_json_types_are_named()
    {
        var o = SuperConfig();
        o["hidden_size"] = "4096";
        o["norm_topk_prob"] = 1;
        o["n_group"] = 1.5;
        var e = Refused(o);
        Assert.Contains("hidden_size = \"4096\" is not an integer", e.Message, StringComparison.Ordinal);
        Assert.Contains("norm_topk_prob = 1 is not true or false", e.Message, StringComparison.Ordinal);
        Assert.Contains("n_group = 1.5 is not an integer", e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(3, 1, "does not divide")]
    [InlineData(512, 1, "groups need >= 2 experts")]
    [InlineData(8, 9, "topk_group = 9 is out of range")]
    [InlineData(64, 2, "exceeds the 16 experts in topk_group = 2 groups of 8")]
    public void Group_limits_are_checked_against_expert_count(int groups, int keep, string expected)
    {
        var o = SuperConfig();
        o["n_group"] = groups;
        o["topk_group"] = keep;
        Assert.Contains(expected, Refused(o).Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Pattern_length_must_match_layer_count()
    {
        var o = SuperConfig();
        o["num_hidden_layers"] = 9;
        Assert.Contains("has 8 layers but num_hidden_layers = 9", Refused(o).Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Pattern_without_moe_layer_is_refused()
    {
        var o = SuperConfig();
        o["hybrid_override_pattern"] = "MMMM*MMM";
        Assert.Contains("no MoE layer", Refused(o).Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Unknown_pattern_character_names_its_layer()
    {
        var o = SuperConfig();
        o["hybrid_override_pattern"] = "MEM*XMEE";
        Assert.Contains("'X' at layer 4", Refused(o).Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Non_json_is_refused_clearly()
    {
        var e = Assert.Throws<ModelConfigException>(() => MoeModelConfig.Parse("{ not json", "x.json"));
        Assert.Contains("not valid JSON", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Softmax_scoring_is_accepted_and_others_refused()
    {
        var o = SuperConfig();
        o["scoring_func"] = "softmax";
        Assert.Equal(ScoringFunction.Softmax, MoeModelConfig.Parse(o.ToJsonString()).ScoringFunc);
        o["scoring_func"] = "sparsemixer";
        Assert.Contains("scoring_func = \"sparsemixer\"", Refused(o).Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Written_json_parses_back_to_the_same_config()
    {
        var c = MoeModelConfig.Parse(SuperConfig().ToJsonString()) with { ScoringFunc = ScoringFunction.Softmax, NormTopkProb = false };
        var back = MoeModelConfig.Parse(c.ToJson());
        Assert.Equal(c, back);
    }
}
