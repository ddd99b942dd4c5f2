namespace MoECluster.Model.Checkpoints;

/// <summary>
/// A safetensors file (or a checkpoint index) is malformed. The message names the file and what is wrong.
/// (Derives from <see cref="IOException"/> because <see cref="InvalidDataException"/> is sealed.)
/// </summary>
public sealed class SafetensorsFormatException : IOException
{
    public SafetensorsFormatException()
    {
    }

    public SafetensorsFormatException(string message)
        : base(message)
    {
    }

    public SafetensorsFormatException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    public SafetensorsFormatException(string filePath, string problem)
        : base(FormatMessage(filePath, problem))
    {
        FilePath = filePath;
    }

    public SafetensorsFormatException(string filePath, string problem, Exception innerException)
        : base(FormatMessage(filePath, problem), innerException)
    {
        FilePath = filePath;
    }

    /// <summary>The offending file, when known.</summary>
    public string? FilePath { get; }

    private static string FormatMessage(string filePath, string problem) => $"Invalid safetensors data in '{filePath}': {problem}";
}
