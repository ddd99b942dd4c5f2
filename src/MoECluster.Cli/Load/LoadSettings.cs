using System.Globalization;
using MoECluster.Cli.Commands;

namespace MoECluster.Cli.Load;

/// <summary>What <c>moecluster load</c> was asked to do, validated.</summary>
internal sealed record LoadSettings(
    string Url, string Mode, double Rate, int Concurrency, double DurationSeconds, double WarmupSeconds, IReadOnlyList<int> Tokens,
    IReadOnlyList<string>? Models, string? Wire, string? JsonPath, string? HtmlPath, double? SloP99Ms, ulong Seed, double TimeoutSeconds, string CommandLine,
    string? ApiKey = null)
{
    public const string Open = "open";
    public const string Closed = "closed";

    public bool IsOpen => Mode == Open;

    /// <summary>Parses <c>8</c> or <c>1,8,64</c>.</summary>
    public static IReadOnlyList<int> ParseTokens(string text)
    {
        var sizes = new List<int>();
        foreach (string part in text.Split(',', StringSplitOptions.TrimEntries))
        {
            if (!int.TryParse(part, NumberStyles.None, CultureInfo.InvariantCulture, out int n) || n < 1 || n > 65536)
            {
                throw new UsageException($"--tokens '{text}': '{part}' is not a token count in 1..65536");
            }

            sizes.Add(n);
        }

        return sizes;
    }

    /// <summary>Parses <c>a,b</c>; null or empty means every served model.</summary>
    public static IReadOnlyList<string>? ParseModels(string? text)
    {
        if (string.IsNullOrWhiteSpace(text))
        {
            return null;
        }

        var ids = text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
        if (ids.Length == 0)
        {
            throw new UsageException($"--models '{text}' names no model");
        }

        return ids;
    }

    public Uri BaseAddress()
    {
        if (!Uri.TryCreate(Url, UriKind.Absolute, out var uri) || (uri.Scheme != Uri.UriSchemeHttp && uri.Scheme != Uri.UriSchemeHttps))
        {
            throw new UsageException($"--url {Url} is not an http(s) URL");
        }

        return uri;
    }

    public void Validate()
    {
        static void Range(string name, double value, double min, double max)
        {
            if (double.IsNaN(value) || value < min || value > max)
            {
                throw new UsageException($"{name} = {value.ToString(CultureInfo.InvariantCulture)} is out of range: must be {min.ToString(CultureInfo.InvariantCulture)}..{max.ToString(CultureInfo.InvariantCulture)}");
            }
        }

        BaseAddress();
        Range("--duration", DurationSeconds, 0.1, 86400);
        Range("--warmup", WarmupSeconds, 0, 3600);
        Range("--timeout", TimeoutSeconds, 0.1, 3600);
        if (IsOpen)
        {
            Range("--rate", Rate, 0.01, 1e6);
        }
        else
        {
            Range("--concurrency", Concurrency, 1, 4096);
        }

        if (SloP99Ms is double slo)
        {
            Range("--slo-p99", slo, 0, 1e9);
        }
    }
}
