namespace MoECluster.Deploy.Tests.Support;

/// <summary>The repository checkout the tests run from (found by walking up to MoECluster.sln).</summary>
public static class Repo
{
    public static string Root { get; } = Find();

    public static string Deploy => Path.Combine(Root, "deploy");

    public static string File(params string[] parts) => Path.Combine([Root, .. parts]);

    public static string ReadText(params string[] parts) => System.IO.File.ReadAllText(File(parts));

    private static string Find()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (System.IO.File.Exists(Path.Combine(dir.FullName, "MoECluster.sln")))
            {
                return dir.FullName;
            }
        }

        throw new InvalidOperationException($"MoECluster.sln not found above {AppContext.BaseDirectory}");
    }
}
