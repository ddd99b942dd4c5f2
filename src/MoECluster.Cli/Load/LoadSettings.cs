using System.Globalization;
using MoECluster.Cli.Commands;

namespace MoECluster.Cli.Load;

/// <summary>What <c>moecluster load</c> was asked to do, validated.</summary>
internal sealed record LoadSettings(
    string Url, string Mode, double Rate, int Concurrency, double DurationSeconds, double WarmupSeconds, IReadOnlyList<int> Tokens,
    IReadOnlyList<string>? Models, string? Wire, string? JsonPath, string? HtmlPath, double? SloP99Ms, ulong Seed, double TimeoutSeconds, string CommandLine,
    string? ApiKey = null, IReadOnlyList<double>? Sweep = null)
{
    /// <summary>The most steps a sweep may have.</summary>
    public const int MaxSweepSteps = 64;

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

    /// <summary>
    /// Parses <c>--sweep 1,2,4,8</c>: closed loop, worker counts (whole numbers in 1..4096); open loop, rates in
    /// requests per second (0.01..1e6). The levels must rise strictly (each step a higher load than the one before),
    /// at most <see cref="MaxSweepSteps"/>; null or empty text means no sweep.
    /// </summary>
    public static IReadOnlyList<double>? ParseSweep(string? text, string mode)
    {
        if (text is null)
        {
            return null;
        }

        bool open = mode == Open;
        string what = open ? "a rate in requests per second in 0.01..1000000" : "a worker count, a whole number in 1..4096";
        var parts = text.Split(',', StringSplitOptions.TrimEntries);
        if (string.IsNullOrWhiteSpace(text))
        {
            throw new UsageException($"--sweep '{text}' names no step: give a comma-separated list, each {what}");
        }

        if (parts.Length > MaxSweepSteps)
        {
            throw new UsageException($"--sweep '{text}' has {parts.Length} steps: at most {MaxSweepSteps}");
        }

        var levels = new List<double>();
        foreach (string part in parts)
        {
            double level = double.NaN;
            if (open && double.TryParse(part, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out double rate) && rate >= 0.01 && rate <= 1e6)
            {
                level = rate;
            }
            else if (!open && int.TryParse(part, NumberStyles.None, CultureInfo.InvariantCulture, out int workers) && workers >= 1 && workers <= 4096)
            {
                level = workers;
            }

            if (double.IsNaN(level))
            {
                throw new UsageException($"--sweep '{text}': '{part}' is not {what} ({mode} loop)");
            }

            if (levels.Count > 0 && level <= levels[^1])
            {
                throw new UsageException($"--sweep '{text}': the steps must rise strictly, but '{part}' comes after {levels[^1].ToString(CultureInfo.InvariantCulture)}");
            }

            levels.Add(level);
        }

        return levels;
    }

    /// <summary>The settings of one sweep step: this run at <paramref name="level"/> workers (closed) or requests per second (open).</summary>
    public LoadSettings AtLevel(double level) => IsOpen ? this with { Rate = level, Sweep = null } : this with { Concurrency = (int)level, Sweep = null };

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
        if (Sweep is not null)
        {
            if (Sweep.Count == 0)
            {
                throw new UsageException("--sweep names no step");
            }
        }
        else if (IsOpen)
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
