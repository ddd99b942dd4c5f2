using System.CommandLine;
using System.Net.Http.Headers;

namespace MoECluster.Cli.Commands;

/// <summary>
/// <c>--api-key</c> of every verb that talks to a gateway (<c>run</c>, <c>load</c>, <c>forward --cluster</c>,
/// <c>probe</c>), with the environment variable <see cref="EnvironmentVariable"/> as its default: sent as
/// <c>Authorization: Bearer KEY</c> on every request. The variable is the better place for a key: a command line
/// is visible to every user of the machine (ps, /proc/PID/cmdline); the key itself is never printed.
/// </summary>
internal static class ApiKeyOption
{
    public const string EnvironmentVariable = "MOECLUSTER_API_KEY";

    public const string Hint = $"pass --api-key or set {EnvironmentVariable}";

    public static Option<string?> Create() => new("--api-key")
    {
        Description = $"API key for a gateway that requires one (sent as 'Authorization: Bearer'); default: ${EnvironmentVariable}, which, unlike a flag, other users cannot read from the process list.",
    };

    /// <summary>The flag's key, else the environment variable's, else null; a key with control characters or spaces is refused.</summary>
    public static string? Resolve(string? flag)
    {
        string? key = !string.IsNullOrWhiteSpace(flag) ? flag.Trim()
            : Environment.GetEnvironmentVariable(EnvironmentVariable) is { } value && !string.IsNullOrWhiteSpace(value) ? value.Trim()
            : null;
        if (key is not null && key.Any(c => char.IsControl(c) || char.IsWhiteSpace(c)))
        {
            throw new UsageException($"the API key ({(string.IsNullOrWhiteSpace(flag) ? EnvironmentVariable : "--api-key")}) holds a space or a control character");
        }

        return key;
    }

    /// <summary>Sends <paramref name="key"/> (when not null) with every request of <paramref name="http"/>.</summary>
    public static HttpClient WithApiKey(this HttpClient http, string? key)
    {
        if (key is not null)
        {
            http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", key);
        }

        return http;
    }
}
