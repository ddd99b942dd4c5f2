namespace MoECluster.Model.Configuration;

/// <summary>
/// The two MoE modes, named once: what traffic records, <c>/v1/models</c>, <c>/stats</c> and the load, run and bench
/// reports call a model whose routed rows are ℓ wide (<see cref="MoeModelConfig.IsLatent"/>) or d wide.
/// </summary>
public static class MoeModes
{
    /// <summary>LatentMoE: rows are projected to ℓ before dispatch and back to d after combine.</summary>
    public const string Latent = "latent";

    /// <summary>Standard MoE: rows are dispatched d wide.</summary>
    public const string Standard = "standard";

    /// <summary>The mode of <paramref name="config"/>.</summary>
    public static string Of(MoeModelConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        return config.IsLatent ? Latent : Standard;
    }
}
