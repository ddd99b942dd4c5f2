using System.Globalization;
using MoECluster.Cli.Commands;
using MoECluster.Wire;

namespace MoECluster.Cli.Chaos;

/// <summary>What <c>moecluster chaos</c> was asked to do, validated.</summary>
internal sealed record ChaosSettings(
    string Url,
    IReadOnlyDictionary<string, string> Models,
    double DurationSeconds,
    double WarmupSeconds,
    int Concurrency,
    IReadOnlyList<int> Tokens,
    WirePair Wire,
    ulong Seed,
    int? LauncherPid,
    double FaultIntervalSeconds,
    double HangMinSeconds,
    double HangMaxSeconds,
    IReadOnlyList<string> Faults,
    double RequestDeadlineSeconds,
    double RecoveryTimeoutSeconds,
    string Backend,
    int InputsPerShape,
    string? JsonPath,
    string? MarkdownPath,
    string? ApiKey,
    string CommandLine)
{
    public static readonly string[] FaultKinds = ["kill", "hang", "term"];

    /// <summary>
    /// The floor under every wire's tolerance here: chaos checks whole stacks too, whose float32 sums are reordered
    /// (across shards) in every layer, so even the fp32 wire is held to 1e-4, not its per-layer parity tolerance.
    /// </summary>
    public const double StackFloor = 1e-4;

    /// <summary>"fp32 1e-4, bf16 1e-2, fp16 5e-3": the tolerances for the help text.</summary>
    public static string ToleranceList { get; } = string.Join(", ", WireCodecs.All.Select(c => string.Create(CultureInfo.InvariantCulture, $"{c.Name} {Tolerance(c):0e0}")));

    /// <summary>Relative error allowed between a cluster answer and the in-process forward: the wire's parity tolerance, at least <see cref="StackFloor"/>.</summary>
    public static double Tolerance(WirePair wire)
    {
        ArgumentNullException.ThrowIfNull(wire);
        return Math.Max(wire.ParityTolerance, StackFloor);
    }

    private static double Tolerance(IWireCodec codec) => Math.Max(codec.ParityTolerance, StackFloor);

    public static IReadOnlyDictionary<string, string> ParseModels(IEnumerable<string> values)
    {
        var models = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (string value in values)
        {
            int eq = value.IndexOf('=', StringComparison.Ordinal);
            if (eq <= 0 || eq == value.Length - 1)
            {
                throw new UsageException($"--model {value}: expected ID=DIR (the served model id and its directory, for the in-process reference)");
            }

            models[value[..eq]] = Path.GetFullPath(value[(eq + 1)..]);
        }

        return models.Count > 0 ? models : throw new UsageException("at least one --model ID=DIR is needed: every answer is checked against the in-process forward of that model");
    }

    public static IReadOnlyList<string> ParseFaults(string text)
    {
        var kinds = text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
        foreach (string kind in kinds)
        {
            if (!FaultKinds.Contains(kind, StringComparer.Ordinal))
            {
                throw new UsageException($"--faults '{text}': '{kind}' is not one of {string.Join(", ", FaultKinds)}");
            }
        }

        return kinds.Length > 0 ? kinds : throw new UsageException($"--faults '{text}' names no fault");
    }

    public static (double Min, double Max) ParseRange(string name, string text)
    {
        string[] parts = text.Split(',', StringSplitOptions.TrimEntries);
        if (parts.Length is < 1 or > 2
            || !double.TryParse(parts[0], NumberStyles.Float, CultureInfo.InvariantCulture, out double min)
            || !double.TryParse(parts[^1], NumberStyles.Float, CultureInfo.InvariantCulture, out double max)
            || !(min > 0) || !(max >= min) || max > 3600)
        {
            throw new UsageException($"{name} '{text}': expected seconds MIN,MAX (or one value), 0 < MIN <= MAX <= 3600");
        }

        return (min, max);
    }

    public void Validate()
    {
        static void Positive(string name, double value, double max)
        {
            if (!(value > 0) || value > max)
            {
                throw new UsageException($"{name} {value.ToString(CultureInfo.InvariantCulture)}: expected a number of seconds in (0, {max.ToString(CultureInfo.InvariantCulture)}]");
            }
        }

        Positive("--duration", DurationSeconds, 86400);
        Positive("--fault-interval", FaultIntervalSeconds, 86400);
        Positive("--request-deadline", RequestDeadlineSeconds, 3600);
        Positive("--recovery-timeout", RecoveryTimeoutSeconds, 3600);
        if (WarmupSeconds < 0 || WarmupSeconds > 3600)
        {
            throw new UsageException("--warmup: expected 0..3600 seconds");
        }

        if (Concurrency is < 1 or > 256)
        {
            throw new UsageException($"--concurrency {Concurrency}: expected 1..256");
        }

        if (InputsPerShape is < 1 or > 1024)
        {
            throw new UsageException($"--inputs {InputsPerShape}: expected 1..1024");
        }

        if (!Uri.TryCreate(Url, UriKind.Absolute, out var uri) || (uri.Scheme != Uri.UriSchemeHttp && uri.Scheme != Uri.UriSchemeHttps))
        {
            throw new UsageException($"--url {Url} is not an http(s) URL");
        }

        if (!OperatingSystem.IsLinux())
        {
            throw new UsageException("chaos finds silo processes in /proc and signals them: Linux only");
        }
    }
}
