using System.Collections.Immutable;

namespace MoECluster.AppHost.Orchestration;

/// <summary>
/// The launcher's output: its own progress lines, and every line of every child prefixed with the child's name
/// (<c>[expert-1] …</c>), the prefix colored when stdout is a terminal. Lines never interleave mid-line.
/// </summary>
internal sealed class LauncherConsole(TextWriter output, TextWriter error, bool color)
{
    private static readonly ImmutableArray<string> Palette = ["36", "32", "33", "35", "34", "96", "92", "93", "95", "94"];
    private readonly Lock _lock = new();

    public bool Color { get; } = color;

    /// <summary>Colors when stdout is a terminal, unless NO_COLOR is set or TERM is dumb.</summary>
    public static bool TerminalSupportsColor() =>
        !Console.IsOutputRedirected && Environment.GetEnvironmentVariable("NO_COLOR") is null && Environment.GetEnvironmentVariable("TERM") != "dumb";

    public void Info(string line)
    {
        lock (_lock)
        {
            output.WriteLine(line);
        }
    }

    public void Error(string line)
    {
        lock (_lock)
        {
            output.Flush();
            error.WriteLine(Color ? $"\u001b[31m{line}\u001b[0m" : line);
        }
    }

    public void ChildLine(string name, int colorIndex, string line)
    {
        string prefix = Color ? $"\u001b[{Palette[colorIndex % Palette.Length]}m[{name}]\u001b[0m" : $"[{name}]";
        lock (_lock)
        {
            output.WriteLine($"{prefix} {line}");
        }
    }
}
