namespace MoECluster.Wire;

/// <summary>An incoming message is malformed or violates the wire contract; the message says which field and how.</summary>
public sealed class WireFormatException : Exception
{
    public WireFormatException()
        : base("Malformed wire message.")
    {
    }

    public WireFormatException(string message)
        : base(message)
    {
    }

    public WireFormatException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}
