using MoECluster.Testing;

namespace MoECluster.Deploy.Tests.Support;

/// <summary>External programs the checks use, found on PATH.</summary>
public static class Tools
{
    public static string? Find(string name)
    {
        foreach (string dir in (Environment.GetEnvironmentVariable("PATH") ?? string.Empty).Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries))
        {
            string candidate = Path.Combine(dir, name);
            if (File.Exists(candidate))
            {
                return candidate;
            }
        }

        return null;
    }

    public static ChildProcess.Result Run(string program, params string[] args) => ChildProcess.Run(program, args, TimeSpan.FromMinutes(1));
}

/// <summary>A fact that is skipped, saying why, when an optional tool is not installed.</summary>
[AttributeUsage(AttributeTargets.Method)]
public sealed class FactWithToolAttribute : FactAttribute
{
    public FactWithToolAttribute(string tool, string purpose)
    {
        Tool = tool;
        if (Tools.Find(tool) is null)
        {
            Skip = $"{tool} is not installed here, so {purpose} is not checked (install it to run this check)";
        }
    }

    public string Tool { get; }
}
