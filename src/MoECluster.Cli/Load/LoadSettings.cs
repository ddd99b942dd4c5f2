using System.Globalization;
using MoECluster.Cli.Commands;

namespace MoECluster.Cli.Load;

/// <summary>What <c>moecluster load</c> was asked to do, validated.</summary>
internal sealed record LoadSettings(
    string Url, string Mode, double Rate, int Concurrency, double DurationSeconds, double WarmupSeconds, IReadOnlyList<int> Tokens,
    IReadOnlyList<string>? Models, MoECluster.Cli.Commands.WireChoice Wire, string? JsonPath, string? HtmlPath, double? SloP99Ms, ulong Seed, double TimeoutSeconds, string CommandLine,
    string? ApiKey = null, IReadOnlyList<double>? Sweep = null)
{
    /// <summary>The most steps a sweep may have.</summary>
    public const int MaxSweepSteps = 64;

    public const string Open = "open";
    public const string Closed = "closed";

    public bool IsOpen => Mode == Open;

    /// <summary><c>--header NAME=VALUE</c>: sent with every request (besides <c>--api-key</c>'s Authorization).</summary>
    public IReadOnlyList<KeyValuePair<string, string>> Headers { get; init; } = [];

    /// <summary><c>--max-concurrency</c> (open loop): at most this many requests in flight; the others wait their turn.</summary>
    public int? MaxConcurrency { get; init; }

    /// <summary><c>--burstiness</c> (open loop): the gamma shape of the inter-arrival times (1: Poisson).</summary>
    public double Burstiness { get; init; } = 1;

    /// <summary><c>--ramp-up-strategy</c> with its start and end rates (open loop); null: the constant <c>--rate</c>.</summary>
    public RampUp? RampUp { get; init; }

    /// <summary><c>--records</c>: one JSON line per request.</summary>
    public string? RecordsPath { get; init; }

    /// <summary><c>--label</c>: free text recorded in the result's metadata.</summary>
    public string? Label { get; init; }

    /// <summary><c>--late-threshold</c>: a request that starts more than this many ms after its intended start counts as late.</summary>
    public double LateThresholdMs { get; init; } = DefaultLateThresholdMs;

    public const double DefaultLateThresholdMs = 10;

    /// <summary>
    /// Parses the values of <c>--header NAME=VALUE</c> (repeatable): NAME an HTTP token (RFC 9110: letters, digits and
    /// <c>!#$%&amp;'*+-.^_`|~</c>), VALUE without CR, LF or NUL (nor other control characters but tab), a header that a
    /// request may carry (not Host, Content-*, Transfer-Encoding...), not Authorization when <paramref name="apiKey"/> is set.
    /// </summary>
    public static IReadOnlyList<KeyValuePair<string, string>> ParseHeaders(IEnumerable<string>? values, bool apiKey)
    {
        var headers = new List<KeyValuePair<string, string>>();
        foreach (string text in values ?? [])
        {
            int eq = text.IndexOf('=', StringComparison.Ordinal);
            string name = eq < 0 ? text : text[..eq];
            if (eq <= 0 || !name.All(IsTokenChar))
            {
                throw new UsageException($"--header '{Printable(name)}': give NAME=VALUE with NAME an HTTP token (letters, digits, !#$%&'*+-.^_`|~)");
            }

            string value = text[(eq + 1)..].Trim(' ', '\t');
            if (value.Any(c => c != '\t' && char.IsControl(c)))
            {
                throw new UsageException($"--header {name}: the value holds a control character (CR, LF, NUL...), which would split or end the header");
            }

            if (apiKey && name.Equals("Authorization", StringComparison.OrdinalIgnoreCase))
            {
                throw new UsageException("--header Authorization: --api-key (or MOECLUSTER_API_KEY) already sends Authorization; give one of them");
            }

            if (name.Equals("Host", StringComparison.OrdinalIgnoreCase) || name.Equals("Transfer-Encoding", StringComparison.OrdinalIgnoreCase)
                || name.Equals("Connection", StringComparison.OrdinalIgnoreCase) || !CanSend(name, value))
            {
                throw new UsageException($"--header {name}: not a header the load client can set on its requests (the HTTP client sets it, or it belongs to the body)");
            }

            headers.Add(new(name, value));
        }

        return headers;
    }

    private static bool CanSend(string name, string value)
    {
        using var probe = new HttpRequestMessage();
        return probe.Headers.TryAddWithoutValidation(name, value);
    }

    private static bool IsTokenChar(char c) => char.IsAsciiLetterOrDigit(c) || "!#$%&'*+-.^_`|~".Contains(c, StringComparison.Ordinal);

    private static string Printable(string text) => new([.. text.Select(c => char.IsControl(c) ? '?' : c)]);

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

        Range("--burstiness", Burstiness, 0.01, 1000);
        Range("--late-threshold", LateThresholdMs, 0, 3_600_000);
        if (!IsOpen && (MaxConcurrency is not null || RampUp is not null || Burstiness != 1))
        {
            throw new UsageException("--max-concurrency, --burstiness and --ramp-up-strategy shape the open loop's arrivals (--mode open); the closed loop's cap is --concurrency");
        }

        if (MaxConcurrency is int cap)
        {
            Range("--max-concurrency", cap, 1, 65536);
        }

        if (RampUp is { } ramp)
        {
            if (Sweep is not null)
            {
                throw new UsageException("--ramp-up-strategy and --sweep both set the rate: give one of them");
            }

            Range("--ramp-up-start-rps", ramp.StartRps, ramp.Strategy == RampUp.Exponential ? 0.01 : 0, 1e6);
            Range("--ramp-up-end-rps", ramp.EndRps, 0.01, 1e6);
        }

        if (RecordsPath is not null && Sweep is not null)
        {
            throw new UsageException("--records writes one run's requests: not with --sweep");
        }

        if (Label is { } label && (label.Length > 1024 || label.Any(char.IsControl)))
        {
            throw new UsageException("--label: at most 1024 characters, no control characters");
        }
    }
}

/// <summary>
/// <c>--ramp-up-strategy linear|exponential</c>: the open loop's rate rises from <see cref="StartRps"/> to
/// <see cref="EndRps"/> over the measured window (the warm-up runs at the start rate). Linear: start + (end − start)·p;
/// exponential: start·(end/start)^p, p the fraction of the measured window gone.
/// </summary>
internal sealed record RampUp(string Strategy, double StartRps, double EndRps)
{
    public const string Linear = "linear";
    public const string Exponential = "exponential";

    /// <summary>The ramp of the three options, null when none is given; all three or none.</summary>
    public static RampUp? Parse(string? strategy, double? startRps, double? endRps)
    {
        if (strategy is null && startRps is null && endRps is null)
        {
            return null;
        }

        if (strategy is null || startRps is not double start || endRps is not double end)
        {
            throw new UsageException("--ramp-up-strategy, --ramp-up-start-rps and --ramp-up-end-rps go together: give all three");
        }

        return new RampUp(strategy, start, end);
    }

    /// <summary>The rate at <paramref name="progress"/> (0 at the start of the measured window, 1 at its end; clamped).</summary>
    public double RateAt(double progress)
    {
        double p = Math.Clamp(progress, 0, 1);
        return Strategy == Exponential ? StartRps * Math.Pow(EndRps / StartRps, p) : StartRps + ((EndRps - StartRps) * p);
    }
}
