namespace MoECluster.Deploy.Tests.Support;

/// <summary>A systemd unit file: sections of "Key=Value" lines (a key may repeat), comments and blank lines dropped.</summary>
public sealed class SystemdUnit
{
    private readonly List<(string Section, string Key, string Value)> _entries = [];

    public SystemdUnit(string path)
    {
        Path = path;
        string? section = null;
        foreach (string raw in File.ReadAllLines(path))
        {
            string line = raw.Trim();
            if (line.Length == 0 || line[0] is '#' or ';')
            {
                continue;
            }

            if (line.StartsWith('[') && line.EndsWith(']'))
            {
                section = line[1..^1];
                continue;
            }

            int eq = line.IndexOf('=', StringComparison.Ordinal);
            Assert.True(section is not null && eq > 0, $"{path}: not a unit line: {line}");
            _entries.Add((section!, line[..eq].Trim(), line[(eq + 1)..].Trim()));
        }
    }

    public string Path { get; }

    public IEnumerable<string> Sections => _entries.Select(e => e.Section).Distinct();

    public IReadOnlyList<string> All(string section, string key) =>
        _entries.Where(e => e.Section == section && e.Key == key).Select(e => e.Value).ToList();

    public string One(string section, string key)
    {
        var values = All(section, key);
        Assert.True(values.Count == 1, $"{Path}: [{section}] {key} appears {values.Count} times (expected once)");
        return values[0];
    }

    /// <summary>Environment= assignments of [Service] as name → value.</summary>
    public Dictionary<string, string> Environment =>
        All("Service", "Environment").SelectMany(v => v.Split(' ', StringSplitOptions.RemoveEmptyEntries))
            .Select(a => a.Split('=', 2)).ToDictionary(a => a[0], a => a[1], StringComparer.Ordinal);

    /// <summary>Seconds of a systemd time span such as 90s, 2min or 90.</summary>
    public static double Seconds(string span) =>
        span.EndsWith("min", StringComparison.Ordinal) ? 60 * double.Parse(span[..^3], System.Globalization.CultureInfo.InvariantCulture)
        : double.Parse(span.TrimEnd('s'), System.Globalization.CultureInfo.InvariantCulture);
}

/// <summary>An environment file: KEY=VALUE lines; "#KEY=VALUE" lines are commented-out settings, also returned apart.</summary>
public sealed class EnvFile
{
    public EnvFile(string path)
    {
        foreach (string raw in File.ReadAllLines(path))
        {
            string line = raw.Trim();
            bool commented = line.StartsWith('#');
            string body = commented ? line[1..] : line;
            int eq = body.IndexOf('=', StringComparison.Ordinal);
            if (line.Length == 0 || (commented && (eq <= 0 || body[..eq].Contains(' ', StringComparison.Ordinal))))
            {
                continue;
            }

            Assert.True(eq > 0, $"{path}: not KEY=VALUE: {line}");
            string key = body[..eq];
            Assert.Matches("^[A-Za-z_][A-Za-z0-9_-]*$", key);
            (commented ? Commented : Values)[key] = body[(eq + 1)..];
        }
    }

    public Dictionary<string, string?> Values { get; } = new(StringComparer.Ordinal);

    public Dictionary<string, string?> Commented { get; } = new(StringComparer.Ordinal);
}
