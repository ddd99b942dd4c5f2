using MoECluster.Model.Configuration;

namespace MoECluster.Model.Analysis;

/// <summary>
/// Analytic sizes of a model: parameters (total and active per token) and the bytes routed per token per MoE
/// layer, for this model and for its standard twin (experts in d, same N and K). Routed bytes per token count
/// the dispatch of K rows and the return of K rows: 2 · K · width · bytes/element. The cluster, which sends a
/// token once per shard rather than once per expert, can only move fewer.
/// </summary>
public sealed record ModelCost(
    long TotalParameters,
    long ActiveParametersPerToken,
    long ExpertParametersPerLayer,
    long RoutedElementsPerTokenPerLayer,
    long StandardRoutedElementsPerTokenPerLayer,
    int MoeLayerCount)
{
    public static ModelCost Of(MoeModelConfig c)
    {
        long d = c.HiddenSize;
        long w = c.RoutedWidth;
        long m = c.MoeIntermediateSize;
        long n = c.NRoutedExperts;
        long k = c.NumExpertsPerTok;
        long perExpert = 2 * m * w;
        long latent = c.MoeLatentSize is int l ? 2L * l * d : 0;
        long shared = c.HasSharedExpert ? 2L * c.MoeSharedExpertIntermediateSize * d : 0;
        long fixedPart = d /* norm */ + (n * d) /* gate */ + n /* bias */ + latent + shared;
        int layers = c.MoeLayers.Count;
        return new ModelCost(
            TotalParameters: layers * (fixedPart + (n * perExpert)),
            ActiveParametersPerToken: layers * (fixedPart + (k * perExpert)),
            ExpertParametersPerLayer: n * perExpert,
            RoutedElementsPerTokenPerLayer: 2 * k * w,
            StandardRoutedElementsPerTokenPerLayer: 2 * k * d,
            MoeLayerCount: layers);
    }

    public long RoutedBytesPerTokenPerLayer(int bytesPerElement) => RoutedElementsPerTokenPerLayer * bytesPerElement;

    public long StandardRoutedBytesPerTokenPerLayer(int bytesPerElement) => StandardRoutedElementsPerTokenPerLayer * bytesPerElement;

    /// <summary>d / w: how many times fewer bytes this model routes than its standard twin.</summary>
    public double RoutedBytesRatio => (double)StandardRoutedElementsPerTokenPerLayer / RoutedElementsPerTokenPerLayer;
}
