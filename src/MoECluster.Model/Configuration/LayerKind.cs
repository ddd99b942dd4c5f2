namespace MoECluster.Model.Configuration;

/// <summary>The kind of one backbone layer of a hybrid (Nemotron-H style) model.</summary>
public enum LayerKind
{
    Mamba,
    Attention,
    Mlp,
    Moe,
}
