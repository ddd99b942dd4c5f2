using MoECluster.Cluster.Contracts;
using MoECluster.Model.Numerics;

namespace MoECluster.Cluster.Dispatch;

/// <summary>
/// Carries a <see cref="ForwardOverflowException"/> (a model-library type, which knows nothing of Orleans) from an
/// expert shard to its router, so the router can tell "the input is too large" (the client's to fix) from a shard's
/// failure. The message and the step that overflowed cross.
/// </summary>
[GenerateSerializer]
[Alias("moecluster.forward-overflow")]
public readonly struct ForwardOverflowSurrogate
{
    [Id(0)]
    public string Message { get; init; }

    [Id(1)]
    public string? Stage { get; init; }
}

[RegisterConverter]
public sealed class ForwardOverflowSurrogateConverter : IConverter<ForwardOverflowException, ForwardOverflowSurrogate>
{
    public ForwardOverflowException ConvertFromSurrogate(in ForwardOverflowSurrogate surrogate) => new(surrogate.Message, surrogate.Stage, null);

    public ForwardOverflowSurrogate ConvertToSurrogate(in ForwardOverflowException value) => new() { Message = value.Message, Stage = value.Stage };
}
