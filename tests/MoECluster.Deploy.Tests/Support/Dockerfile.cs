using System.Text.RegularExpressions;

namespace MoECluster.Deploy.Tests.Support;

/// <summary>A Dockerfile as instructions (continuation lines joined, comments dropped), split into stages.</summary>
public sealed class Dockerfile
{
    public Dockerfile(string path)
    {
        var instructions = new List<(string, string)>();
        var current = new System.Text.StringBuilder();
        foreach (string raw in File.ReadAllLines(path))
        {
            string line = raw.Trim();
            if (current.Length == 0 && (line.Length == 0 || line.StartsWith('#')))
            {
                continue;
            }

            bool continues = line.EndsWith('\\');
            current.Append(continues ? line[..^1] : line).Append(' ');
            if (!continues)
            {
                string text = current.ToString().Trim();
                int space = text.IndexOf(' ', StringComparison.Ordinal);
                instructions.Add((text[..space].ToUpperInvariant(), text[(space + 1)..].Trim()));
                current.Clear();
            }
        }

        Instructions = instructions;
        Args = instructions.TakeWhile(i => i.Item1 != "FROM").Where(i => i.Item1 == "ARG")
            .Select(i => i.Item2.Split('=', 2)).ToDictionary(a => a[0], a => a.Length > 1 ? a[1] : string.Empty, StringComparer.Ordinal);
    }

    public IReadOnlyList<(string Keyword, string Arguments)> Instructions { get; }

    /// <summary>ARGs declared before the first FROM, with their defaults.</summary>
    public IReadOnlyDictionary<string, string> Args { get; }

    /// <summary>The stages: the image each starts FROM (ARGs substituted), its name, and its instructions.</summary>
    public IReadOnlyList<(string Image, string? Name, List<(string Keyword, string Arguments)> Body)> Stages
    {
        get
        {
            var stages = new List<(string, string?, List<(string, string)>)>();
            foreach (var (keyword, arguments) in Instructions)
            {
                if (keyword == "FROM")
                {
                    var m = Regex.Match(arguments, @"^(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?$", RegexOptions.IgnoreCase);
                    Assert.True(m.Success, $"FROM {arguments}");
                    stages.Add((Substitute(m.Groups[1].Value), m.Groups[2].Success ? m.Groups[2].Value : null, []));
                }
                else if (stages.Count > 0)
                {
                    stages[^1].Item3.Add((keyword, arguments));
                }
            }

            return stages;
        }
    }

    private string Substitute(string text) =>
        Regex.Replace(text, @"\$\{?(\w+)\}?", m => Args.TryGetValue(m.Groups[1].Value, out string? v) ? v : m.Value);
}

/// <summary>
/// .dockerignore matching as Docker does it: patterns relative to the context, '*' within a path segment, '**'
/// across segments, a pattern also excludes everything below a matching directory, '!' re-includes, and the last
/// matching line wins.
/// </summary>
public sealed class DockerIgnore(string path)
{
    private readonly List<(bool Exclude, Regex Pattern)> _rules = File.ReadAllLines(path)
        .Select(l => l.Trim())
        .Where(l => l.Length > 0 && !l.StartsWith('#'))
        .Select(l => l.StartsWith('!') ? (false, l[1..]) : (true, l))
        .Select(r => (r.Item1, new Regex("^" + Glob(r.Item2.Trim('/')) + "(/.*)?$")))
        .ToList();

    public bool Excludes(string relativePath)
    {
        bool excluded = false;
        foreach (var (exclude, pattern) in _rules)
        {
            if (pattern.IsMatch(relativePath))
            {
                excluded = exclude;
            }
        }

        return excluded;
    }

    private static string Glob(string pattern)
    {
        var sb = new System.Text.StringBuilder();
        for (int i = 0; i < pattern.Length; i++)
        {
            if (pattern[i] == '*' && i + 1 < pattern.Length && pattern[i + 1] == '*')
            {
                bool slash = i + 2 < pattern.Length && pattern[i + 2] == '/';
                sb.Append(slash ? "(.*/)?" : ".*");
                i += slash ? 2 : 1;
            }
            else
            {
                sb.Append(pattern[i] switch
                {
                    '*' => "[^/]*",
                    '?' => "[^/]",
                    char c => Regex.Escape(c.ToString()),
                });
            }
        }

        return sb.ToString();
    }
}
