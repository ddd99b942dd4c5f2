namespace MoECluster.Cluster.Requests;

/// <summary>What is wrong with a refused forward request, which says how the gateway answers it.</summary>
public enum ForwardRequestProblem
{
    /// <summary>The request is malformed or its values are not acceptable (HTTP 400).</summary>
    Invalid = 0,

    /// <summary>The request carries more tokens than a request may (HTTP 413).</summary>
    TooLarge = 1,

    /// <summary>The request names a layer that is not an MoE layer of the model (HTTP 404).</summary>
    UnknownLayer = 2,
}

/// <summary>
/// A forward request refused by <see cref="ForwardRequestValidator"/>: the client's to fix. It crosses the grain
/// boundary as itself (<see cref="ForwardRequestSurrogate"/>), so the gateway answers it with a 4xx and its message,
/// while anything else a router throws — an <see cref="ArgumentException"/> included — is the cluster's fault (500).
/// </summary>
public sealed class ForwardRequestException : Exception
{
    public ForwardRequestException()
        : this(ForwardRequestProblem.Invalid, "bad forward request")
    {
    }

    public ForwardRequestException(string message)
        : this(ForwardRequestProblem.Invalid, message)
    {
    }

    public ForwardRequestException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    public ForwardRequestException(ForwardRequestProblem problem, string message)
        : base(message)
    {
        Problem = problem;
    }

    public ForwardRequestProblem Problem { get; }
}

/// <summary>Carries a <see cref="ForwardRequestException"/> across the grain boundary: its problem and message.</summary>
[GenerateSerializer]
[Alias("moecluster.forward-request-refused")]
public readonly struct ForwardRequestSurrogate
{
    [Id(0)]
    public ForwardRequestProblem Problem { get; init; }

    [Id(1)]
    public string Message { get; init; }
}

[RegisterConverter]
public sealed class ForwardRequestSurrogateConverter : IConverter<ForwardRequestException, ForwardRequestSurrogate>
{
    public ForwardRequestException ConvertFromSurrogate(in ForwardRequestSurrogate surrogate) => new(surrogate.Problem, surrogate.Message);

    public ForwardRequestSurrogate ConvertToSurrogate(in ForwardRequestException value) => new() { Problem = value.Problem, Message = value.Message };
}
