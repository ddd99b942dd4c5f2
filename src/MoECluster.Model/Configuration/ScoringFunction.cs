namespace MoECluster.Model.Configuration;

/// <summary>How gate logits become expert scores.</summary>
public enum ScoringFunction
{
    /// <summary>Nemotron-H / DeepSeek-V3: s = sigmoid(logits), selection on s + correction bias.</summary>
    Sigmoid,

    /// <summary>Mixtral / Qwen-MoE style baselines: s = softmax(logits) over all routed experts.</summary>
    Softmax,
}
