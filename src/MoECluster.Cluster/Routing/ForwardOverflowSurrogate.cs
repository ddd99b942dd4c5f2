using MoECluster.Model.Numerics;

namespace MoECluster.Cluster.Routing;

/// <summary>
/// Carries a <see cref="ForwardOverflowException"/> (a model-library type, which knows nothing of Orleans) from an
/// expert shard to its router, so the router can tell "the input is too large" (the client's to fix) from a shard's
/// failure. Only the message crosses.
/// </summary>
[GenerateSerializer]
[Alias("moecluster.forward-overflow")]
public readonly struct ForwardOverflowSurrogate
{
    [Id(0)]
    public string Message { get; init; }
}

[RegisterConverter]
public sealed class ForwardOverflowSurrogateConverter : IConverter<ForwardOverflowException, ForwardOverflowSurrogate>
{
    public ForwardOverflowException ConvertFromSurrogate(in ForwardOverflowSurrogate surrogate) => new(surrogate.Message);

    public ForwardOverflowSurrogate ConvertToSurrogate(in ForwardOverflowException value) => new() { Message = value.Message };
}
