using System.CommandLine;
using System.Globalization;
using Microsoft.Extensions.Configuration;
using MoECluster.Cluster.Hosting;

namespace MoECluster.Cli.Commands;

/// <summary>
/// <c>moecluster probe [URL]</c>: one HTTP GET, exit 0 on a 2xx answer and 1 otherwise (another status, no answer,
/// a timeout). For container health checks where no curl is installed (deploy/docker/Dockerfile's HEALTHCHECK).
/// Without URL it probes this process's own <c>Urls</c> configuration (environment variable <c>Urls</c> or
/// appsettings.json): the first URL, a wildcard host (0.0.0.0, +, *, [::]) taken as 127.0.0.1, at <c>--path</c>.
/// </summary>
internal static class ProbeCommand
{
    public static Command Create(TextWriter output, TextWriter error)
    {
        var url = new Argument<string?>("URL") { Description = "The URL to GET (default: the first of this process's Urls, at --path).", Arity = ArgumentArity.ZeroOrOne };
        var path = new Option<string>("--path") { Description = "Path probed when URL is omitted: /alive (liveness, the default) or /health (readiness).", DefaultValueFactory = _ => "/alive" };
        var timeout = new Option<double>("--timeout") { Description = "Seconds to wait for the answer (default 5).", DefaultValueFactory = _ => 5 };
        var apiKey = ApiKeyOption.Create();
        var command = new Command("probe", "GET a health endpoint: exit 0 on HTTP 2xx, 1 otherwise (for container health checks).")
        {
            url, path, timeout, apiKey,
        };
        command.SetAction((parse, cancel) => VerbRunner.GuardAsync("probe", error, () =>
            RunAsync(output, error, parse.GetValue(url), parse.GetValue(path)!, parse.GetValue(timeout), ApiKeyOption.Resolve(parse.GetValue(apiKey)), cancel)));
        return command;
    }

    private static async Task<int> RunAsync(TextWriter output, TextWriter error, string? url, string path, double timeoutSeconds, string? apiKey, CancellationToken cancel)
    {
        if (timeoutSeconds <= 0 || double.IsNaN(timeoutSeconds))
        {
            throw new UsageException($"--timeout {timeoutSeconds.ToString(CultureInfo.InvariantCulture)}: expected a positive number of seconds");
        }

        Uri target = url is not null ? ParseUrl(url) : OwnUrl(path);
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(timeoutSeconds) }.WithApiKey(apiKey);
        try
        {
            using var response = await http.GetAsync(target, HttpCompletionOption.ResponseHeadersRead, cancel);
            int status = (int)response.StatusCode;
            string line = $"{status.ToString(CultureInfo.InvariantCulture)} {response.ReasonPhrase} {target}";
            if (response.IsSuccessStatusCode)
            {
                output.WriteLine(line);
                return CliApp.ExitOk;
            }

            error.WriteLine($"moecluster probe: {line}");
            return CliApp.ExitFailure;
        }
        catch (Exception e) when (e is HttpRequestException or TaskCanceledException && !cancel.IsCancellationRequested)
        {
            string reason = e is TaskCanceledException ? $"no answer within {timeoutSeconds.ToString(CultureInfo.InvariantCulture)} s" : e.Message.ReplaceLineEndings(" ");
            error.WriteLine($"moecluster probe: {target}: {reason}");
            return CliApp.ExitFailure;
        }
    }

    private static Uri ParseUrl(string url) =>
        Uri.TryCreate(url, UriKind.Absolute, out Uri? uri) && (uri.Scheme == Uri.UriSchemeHttp || uri.Scheme == Uri.UriSchemeHttps)
            ? uri
            : throw new UsageException($"{url}: expected an http:// or https:// URL");

    /// <summary>The first of this process's Urls, with a wildcard host made loopback, at <paramref name="path"/>.</summary>
    internal static Uri OwnUrl(string path, IConfiguration? configuration = null)
    {
        configuration ??= new ConfigurationBuilder()
            .SetBasePath(Directory.GetCurrentDirectory())
            .AddJsonFile("appsettings.json", optional: true)
            .AddEnvironmentVariables()
            .Build();
        string? urls = configuration[ConfigurationKeys.Urls];
        string? first = urls?.Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).FirstOrDefault();
        if (first is null)
        {
            throw new UsageException($"no URL given and no {ConfigurationKeys.Urls} configured (set the environment variable {ConfigurationKeys.Urls} or pass a URL)");
        }

        // Kestrel's wildcard hosts are not valid URI hosts (+, *); any of them means "every address", loopback included.
        int schemeEnd = first.IndexOf("://", StringComparison.Ordinal);
        if (schemeEnd > 0)
        {
            int hostStart = schemeEnd + 3;
            int searchFrom = hostStart < first.Length && first[hostStart] == '[' ? Math.Max(first.IndexOf(']', hostStart), hostStart) : hostStart;
            int hostEnd = first.IndexOfAny([':', '/'], searchFrom);
            string host = hostEnd < 0 ? first[hostStart..] : first[hostStart..hostEnd];
            if (host is "+" or "*" or "0.0.0.0" or "[::]")
            {
                first = string.Concat(first.AsSpan(0, hostStart), "127.0.0.1", hostEnd < 0 ? string.Empty : first[hostEnd..]);
            }
        }

        Uri uri = ParseUrl(first);
        if (uri.Port == 0)
        {
            throw new UsageException($"{ConfigurationKeys.Urls} {first} has an ephemeral port (0): pass the URL to probe");
        }

        return new UriBuilder(uri) { Path = path }.Uri;
    }
}
