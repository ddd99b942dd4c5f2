namespace MoECluster.Model.Configuration;

/// <summary>
/// A model configuration that cannot be served. <see cref="Problems"/> holds one line per offending key,
/// each naming the key, its value and the allowed range.
/// </summary>
public sealed class ModelConfigException : Exception
{
    public ModelConfigException(string source, IReadOnlyList<string> problems)
        : base($"{source}: {string.Join("; ", problems)}")
    {
        Source = source;
        Problems = problems;
    }

    public ModelConfigException()
        : this("config", ["invalid configuration"])
    {
    }

    public ModelConfigException(string message)
        : this("config", [message])
    {
    }

    public ModelConfigException(string message, Exception innerException)
        : base(message, innerException)
    {
        Problems = [message];
    }

    public IReadOnlyList<string> Problems { get; }
}
