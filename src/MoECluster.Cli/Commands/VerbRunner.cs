using MoECluster.Model.Checkpoints;
using MoECluster.Model.Configuration;

namespace MoECluster.Cli.Commands;

/// <summary>A usage problem found while running a verb (bad value, wrong shape): exit code 2.</summary>
internal sealed class UsageException(string message) : Exception(message);

internal static class VerbRunner
{
    /// <summary>Runs a verb body; turns input errors into one line on stderr and exit code 2.</summary>
    public static int Guard(string verb, TextWriter error, Func<int> body)
    {
        try
        {
            return body();
        }
        catch (Exception e) when (e is UsageException or ModelConfigException or InvalidDataException or SafetensorsFormatException
            or NotSupportedException or FileNotFoundException
            or DirectoryNotFoundException or ArgumentException or KeyNotFoundException or UnauthorizedAccessException
            or MoECluster.Model.Numerics.ForwardOverflowException)
        {
            error.WriteLine($"moecluster {verb}: error: {Describe(e)}");
            return CliApp.ExitUsage;
        }
        catch (IOException e)
        {
            error.WriteLine($"moecluster {verb}: error: {Describe(e)}");
            return CliApp.ExitFailure;
        }
    }

    /// <summary>The asynchronous twin of <see cref="Guard"/>.</summary>
    public static async Task<int> GuardAsync(string verb, TextWriter error, Func<Task<int>> body)
    {
        try
        {
            return await body();
        }
        catch (Exception e) when (e is UsageException or ModelConfigException or InvalidDataException or SafetensorsFormatException
            or NotSupportedException or FileNotFoundException or DirectoryNotFoundException or ArgumentException or KeyNotFoundException
            or UnauthorizedAccessException or MoECluster.Model.Numerics.ForwardOverflowException)
        {
            error.WriteLine($"moecluster {verb}: error: {Describe(e)}");
            return CliApp.ExitUsage;
        }
        catch (MoECluster.Gateway.GatewayException e) when (e.StatusCode == 401)
        {
            error.WriteLine($"moecluster {verb}: error: the gateway answered 401: {Describe(e)} ({ApiKeyOption.Hint})");
            return CliApp.ExitFailure;
        }
        catch (Exception e) when (e is IOException or HttpRequestException or MoECluster.Gateway.GatewayException or TaskCanceledException)
        {
            error.WriteLine($"moecluster {verb}: error: {Describe(e)}");
            return CliApp.ExitFailure;
        }
    }

    private static string OneLine(string message) => message.ReplaceLineEndings(" ");

    /// <summary>
    /// What went wrong, as one line that is never empty: an <see cref="AggregateException"/> as its inner exceptions'
    /// messages, an exception without a message as its type (and its inner exception's message).
    /// </summary>
    public static string Describe(Exception e)
    {
        ArgumentNullException.ThrowIfNull(e);
        if (e is AggregateException aggregate && aggregate.InnerExceptions.Count > 0)
        {
            return string.Join(" | ", aggregate.InnerExceptions.Select(Describe));
        }

        string message = OneLine(e.Message).Trim();
        if (message.Length > 0)
        {
            return message;
        }

        return e.InnerException is { } inner ? $"{e.GetType().Name}: {Describe(inner)}" : $"{e.GetType().Name} (no message)";
    }
}
