namespace MoECluster.Wire;

/// <summary>
/// Bounds a receiver enforces on an incoming message before trusting any of its sizes.
/// </summary>
/// <param name="MaxMessageBytes">Largest serialized message accepted; checked before deserializing.</param>
/// <param name="MaxRows">Most rows (tokens) in an activation block.</param>
/// <param name="MaxWidth">Widest activation row.</param>
/// <param name="MaxExperts">Global expert ids lie in [0, MaxExperts); a shard's expert set must lie inside it.</param>
/// <param name="MaxPairsPerRow">Most (expert, weight) pairs one row may carry (at most 255: the count is one byte).</param>
public sealed record WireLimits(
    int MaxMessageBytes = 256 << 20,
    int MaxRows = 1 << 20,
    int MaxWidth = 1 << 16,
    int MaxExperts = 65535,
    int MaxPairsPerRow = 255);
