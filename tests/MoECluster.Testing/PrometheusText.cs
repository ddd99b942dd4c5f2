using System.Globalization;
using System.Text;

namespace MoECluster.Testing;

/// <summary>
/// A strict parser of the Prometheus text exposition format (version 0.0.4, what a scraper gets without asking for
/// OpenMetrics): every line is a <c># HELP</c>, <c># TYPE</c>, another comment, or a sample
/// <c>name{label="value",...} value [timestamp]</c>. It refuses what Prometheus refuses and what the format forbids:
/// metric and label names outside their grammar (label names starting with <c>__</c> are reserved), label values with
/// escapes other than <c>\\</c>, <c>\"</c>, <c>\n</c>, duplicate labels, values that are not Go floats, a second HELP or
/// TYPE of one name, a TYPE after the family's first sample, a family whose lines are not one group, the same series
/// twice, negative or NaN counters, a missing final newline; and for every histogram series: <c>_bucket</c> lines with
/// strictly increasing <c>le</c> ending in <c>le="+Inf"</c>, non-decreasing integer counts, <c>_count</c> equal to the
/// +Inf bucket, and a <c>_sum</c>. Failures throw <see cref="FormatException"/> naming the line.
/// </summary>
public sealed class PrometheusText
{
    private static readonly HashSet<string> Types = new(StringComparer.Ordinal) { "counter", "gauge", "histogram", "summary", "untyped" };

    private readonly Dictionary<string, PrometheusFamily> _families;

    private PrometheusText(Dictionary<string, PrometheusFamily> families) => _families = families;

    /// <summary>The families by their TYPE name (or, untyped, by their sample name).</summary>
    public IReadOnlyDictionary<string, PrometheusFamily> Families => _families;

    /// <summary>The family named <paramref name="name"/>, or a <see cref="KeyNotFoundException"/> listing what is there.</summary>
    public PrometheusFamily Family(string name) => _families.TryGetValue(name, out var family)
        ? family
        : throw new KeyNotFoundException($"no metric family {name}; families: {string.Join(", ", _families.Keys.Order(StringComparer.Ordinal))}");

    /// <summary>Every sample named <paramref name="sampleName"/> (e.g. <c>x_total</c>, <c>x_bucket</c>, <c>x_count</c>) across families.</summary>
    public IEnumerable<PrometheusSample> Samples(string sampleName) => _families.Values.SelectMany(f => f.Samples).Where(s => s.Name == sampleName);

    /// <summary>The sum of the samples named <paramref name="sampleName"/> whose labels pass <paramref name="where"/>.</summary>
    public double Sum(string sampleName, Func<IReadOnlyDictionary<string, string>, bool>? where = null) =>
        Samples(sampleName).Where(s => where is null || where(s.Labels)).Sum(s => s.Value);

    public static PrometheusText Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        if (text.Length > 0 && !text.EndsWith('\n'))
        {
            throw new FormatException("the exposition does not end with a line feed");
        }

        var families = new Dictionary<string, PrometheusFamily>(StringComparer.Ordinal);
        var closed = new HashSet<string>(StringComparer.Ordinal);
        var series = new HashSet<string>(StringComparer.Ordinal);
        PrometheusFamily? current = null;
        string[] lines = text.Split('\n');
        for (int n = 0; n < lines.Length - 1; n++)
        {
            string line = lines[n];
            string where = $"line {n + 1} ('{(line.Length <= 120 ? line : line[..120] + "...")}')";
            if (line.Contains('\r', StringComparison.Ordinal))
            {
                throw new FormatException($"{where}: carriage return");
            }

            if (line.Trim().Length == 0)
            {
                continue;
            }

            if (line.StartsWith('#'))
            {
                string[] parts = line.Split(' ', 4);
                if (parts.Length >= 3 && parts[0] == "#" && (parts[1] == "HELP" || parts[1] == "TYPE"))
                {
                    string name = parts[2];
                    RequireMetricName(name, where);
                    var family = Open(families, closed, ref current, name, where);
                    if (parts[1] == "HELP")
                    {
                        if (family.Help is not null)
                        {
                            throw new FormatException($"{where}: a second HELP for {name}");
                        }

                        family.Help = UnescapeHelp(parts.Length == 4 ? parts[3] : string.Empty, where);
                    }
                    else
                    {
                        string type = parts.Length == 4 ? parts[3] : string.Empty;
                        if (!Types.Contains(type))
                        {
                            throw new FormatException($"{where}: unknown type '{type}'");
                        }

                        if (family.Type is not null)
                        {
                            throw new FormatException($"{where}: a second TYPE for {name}");
                        }

                        if (family.Samples.Count > 0)
                        {
                            throw new FormatException($"{where}: TYPE of {name} after its first sample");
                        }

                        family.Type = type;
                    }
                }

                continue;
            }

            var sample = ParseSample(line, where);
            string familyName = FamilyOf(families, current, sample.Name);
            var owner = Open(families, closed, ref current, familyName, where);
            CheckSample(owner, sample, where);
            string id = sample.Name + "{" + string.Join(",", sample.Labels.OrderBy(l => l.Key, StringComparer.Ordinal).Select(l => l.Key + "=" + l.Value)) + "}";
            if (!series.Add(id))
            {
                throw new FormatException($"{where}: series {id} appears twice");
            }

            owner.Samples.Add(sample);
        }

        foreach (var family in families.Values.Where(f => f.Type == "histogram"))
        {
            CheckHistogram(family);
        }

        return new PrometheusText(families);
    }

    /// <summary>The family a sample belongs to: the current family when its name is the family's own or one of its type's suffixed names.</summary>
    private static string FamilyOf(Dictionary<string, PrometheusFamily> families, PrometheusFamily? current, string sample)
    {
        foreach (var candidate in new[] { current }.Concat(families.Values))
        {
            if (candidate is null)
            {
                continue;
            }

            bool belongs = candidate.Type switch
            {
                "histogram" => sample == candidate.Name + "_bucket" || sample == candidate.Name + "_sum" || sample == candidate.Name + "_count",
                "summary" => sample == candidate.Name || sample == candidate.Name + "_sum" || sample == candidate.Name + "_count",
                _ => sample == candidate.Name,
            };
            if (belongs)
            {
                return candidate.Name;
            }
        }

        return sample;
    }

    private static PrometheusFamily Open(Dictionary<string, PrometheusFamily> families, HashSet<string> closed, ref PrometheusFamily? current, string name, string where)
    {
        if (current?.Name == name)
        {
            return current;
        }

        if (closed.Contains(name))
        {
            throw new FormatException($"{where}: the lines of {name} are not one group (it appeared earlier, then another family)");
        }

        if (current is not null)
        {
            closed.Add(current.Name);
        }

        if (!families.TryGetValue(name, out var family))
        {
            families[name] = family = new PrometheusFamily(name);
        }

        current = family;
        return family;
    }

    private static void CheckSample(PrometheusFamily family, PrometheusSample sample, string where)
    {
        switch (family.Type)
        {
            case "counter":
                if (double.IsNaN(sample.Value) || sample.Value < 0)
                {
                    throw new FormatException($"{where}: counter {sample.Name} is {sample.Value}");
                }

                break;
            case "histogram":
                if (sample.Name.EndsWith("_bucket", StringComparison.Ordinal) != sample.Labels.ContainsKey("le"))
                {
                    throw new FormatException($"{where}: {sample.Name}: le belongs on _bucket lines and only there");
                }

                if (!sample.Name.EndsWith("_sum", StringComparison.Ordinal) && (sample.Value < 0 || sample.Value != Math.Floor(sample.Value)))
                {
                    throw new FormatException($"{where}: {sample.Name} is {sample.Value}, not a count");
                }

                break;
        }
    }

    private static void CheckHistogram(PrometheusFamily family)
    {
        string name = family.Name;
        foreach (var group in family.Samples.GroupBy(s => Key(s.Labels)))
        {
            var buckets = group.Where(s => s.Name == name + "_bucket").ToList();
            var count = group.Where(s => s.Name == name + "_count").ToList();
            var sum = group.Where(s => s.Name == name + "_sum").ToList();
            string at = $"histogram {name}{{{group.Key}}}";
            if (buckets.Count == 0 || count.Count != 1 || sum.Count != 1)
            {
                throw new FormatException($"{at}: {buckets.Count} _bucket, {count.Count} _count and {sum.Count} _sum lines (expected buckets, one _count, one _sum)");
            }

            double previousLe = double.NegativeInfinity, previousCount = 0;
            foreach (var bucket in buckets)
            {
                double le = ParseValue(bucket.Labels["le"], at + " le");
                if (double.IsNaN(le) || le <= previousLe)
                {
                    throw new FormatException($"{at}: le=\"{bucket.Labels["le"]}\" does not increase on {previousLe}");
                }

                if (bucket.Value < previousCount)
                {
                    throw new FormatException($"{at}: bucket le=\"{bucket.Labels["le"]}\" counts {bucket.Value}, less than the bucket before ({previousCount})");
                }

                previousLe = le;
                previousCount = bucket.Value;
            }

            if (buckets[^1].Labels["le"] != "+Inf")
            {
                throw new FormatException($"{at}: the last bucket is le=\"{buckets[^1].Labels["le"]}\", not le=\"+Inf\"");
            }

            if (count[0].Value != buckets[^1].Value)
            {
                throw new FormatException($"{at}: _count {count[0].Value} differs from the +Inf bucket {buckets[^1].Value}");
            }
        }
    }

    /// <summary>A series' labels without <c>le</c>, as one text.</summary>
    private static string Key(IReadOnlyDictionary<string, string> labels) =>
        string.Join(",", labels.Where(l => l.Key != "le").OrderBy(l => l.Key, StringComparer.Ordinal).Select(l => $"{l.Key}=\"{l.Value}\""));

    private static PrometheusSample ParseSample(string line, string where)
    {
        int i = 0;
        while (i < line.Length && IsNameChar(line[i], i == 0, colon: true))
        {
            i++;
        }

        string name = line[..i];
        RequireMetricName(name, where);
        var labels = new Dictionary<string, string>(StringComparer.Ordinal);
        if (i < line.Length && line[i] == '{')
        {
            i++;
            while (true)
            {
                if (i < line.Length && line[i] == '}')
                {
                    i++;
                    break;
                }

                int start = i;
                while (i < line.Length && IsNameChar(line[i], i == start, colon: false))
                {
                    i++;
                }

                string label = line[start..i];
                if (label.Length == 0 || label.StartsWith("__", StringComparison.Ordinal))
                {
                    throw new FormatException($"{where}: label name '{label}' is not valid");
                }

                if (i + 1 >= line.Length || line[i] != '=' || line[i + 1] != '"')
                {
                    throw new FormatException($"{where}: expected =\" after label {label}");
                }

                i += 2;
                var value = new StringBuilder();
                while (true)
                {
                    if (i >= line.Length)
                    {
                        throw new FormatException($"{where}: label {label}'s value is not closed");
                    }

                    char c = line[i++];
                    if (c == '"')
                    {
                        break;
                    }

                    if (c == '\\')
                    {
                        char e = i < line.Length ? line[i++] : '\0';
                        value.Append(e switch
                        {
                            '\\' => '\\',
                            '"' => '"',
                            'n' => '\n',
                            _ => throw new FormatException($"{where}: escape \\{e} in label {label}'s value"),
                        });
                    }
                    else
                    {
                        value.Append(c);
                    }
                }

                if (!labels.TryAdd(label, value.ToString()))
                {
                    throw new FormatException($"{where}: label {label} twice");
                }

                if (i < line.Length && line[i] == ',')
                {
                    i++;
                }
                else if (i >= line.Length || line[i] != '}')
                {
                    throw new FormatException($"{where}: expected , or }} after label {label}");
                }
            }
        }

        if (i >= line.Length || line[i] != ' ')
        {
            throw new FormatException($"{where}: expected a space before the value");
        }

        string[] rest = line[(i + 1)..].Split(' ');
        if (rest.Length is < 1 or > 2)
        {
            throw new FormatException($"{where}: expected a value and at most a timestamp");
        }

        double v = ParseValue(rest[0], where);
        if (rest.Length == 2 && !long.TryParse(rest[1], NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out _))
        {
            throw new FormatException($"{where}: timestamp '{rest[1]}' is not an integer");
        }

        return new PrometheusSample(name, labels, v);
    }

    /// <summary>A Go float as Prometheus writes and reads it: decimal or exponent notation, NaN, +Inf, -Inf.</summary>
    private static double ParseValue(string text, string where)
    {
        switch (text)
        {
            case "NaN":
                return double.NaN;
            case "+Inf" or "Inf":
                return double.PositiveInfinity;
            case "-Inf":
                return double.NegativeInfinity;
        }

        if (text.Length == 0 || text.Any(c => !(char.IsAsciiDigit(c) || c is '.' or 'e' or 'E' or '+' or '-'))
            || !double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double value))
        {
            throw new FormatException($"{where}: '{text}' is not a number");
        }

        return value;
    }

    private static string UnescapeHelp(string text, string where)
    {
        var help = new StringBuilder(text.Length);
        for (int i = 0; i < text.Length; i++)
        {
            if (text[i] != '\\')
            {
                help.Append(text[i]);
                continue;
            }

            char e = ++i < text.Length ? text[i] : '\0';
            help.Append(e switch
            {
                '\\' => '\\',
                'n' => '\n',
                _ => throw new FormatException($"{where}: escape \\{e} in HELP text"),
            });
        }

        return help.ToString();
    }

    private static void RequireMetricName(string name, string where)
    {
        if (name.Length == 0 || !name.Select((c, i) => IsNameChar(c, i == 0, colon: true)).All(ok => ok))
        {
            throw new FormatException($"{where}: '{name}' is not a metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)");
        }
    }

    private static bool IsNameChar(char c, bool first, bool colon) =>
        char.IsAsciiLetter(c) || c == '_' || (colon && c == ':') || (!first && char.IsAsciiDigit(c));
}

/// <summary>One metric family: its TYPE name, its type (null: untyped, no TYPE line), its HELP, its samples in order.</summary>
public sealed class PrometheusFamily(string name)
{
    public string Name { get; } = name;

    public string? Type { get; set; }

    public string? Help { get; set; }

    public List<PrometheusSample> Samples { get; } = [];
}

/// <summary>One sample line: its name (with any _bucket, _sum, _count suffix), its labels, its value.</summary>
public sealed record PrometheusSample(string Name, IReadOnlyDictionary<string, string> Labels, double Value);
