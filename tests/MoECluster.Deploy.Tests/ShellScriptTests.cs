using MoECluster.Deploy.Tests.Support;

namespace MoECluster.Deploy.Tests;

/// <summary>Every shell script of the repository passes shellcheck (.ci/run installs it).</summary>
public sealed class ShellScriptTests
{
    public static TheoryData<string> Scripts() => new(ScriptPaths());

    private static List<string> ScriptPaths() =>
        Directory.EnumerateFiles(Repo.Deploy, "*.sh", SearchOption.AllDirectories)
            .Concat(Directory.EnumerateFiles(Repo.File("bench"), "*.sh"))
            .Append(Repo.File(".ci", "run"))
            .Select(p => Path.GetRelativePath(Repo.Root, p))
            .Order(StringComparer.Ordinal)
            .ToList();

    [Fact]
    public void The_deploy_scripts_are_among_them()
    {
        var scripts = ScriptPaths();
        Assert.Contains("deploy/publish.sh", scripts);
        Assert.Contains("deploy/install.sh", scripts);
        Assert.Contains(".ci/run", scripts);
    }

    [Theory]
    [MemberData(nameof(Scripts))]
    public void Passes_shellcheck(string script)
    {
        string? shellcheck = Tools.Find("shellcheck");
        Assert.True(shellcheck is not null, "shellcheck is not installed: `apt-get install shellcheck` (.ci/run installs it when missing)");
        var result = Tools.Run(shellcheck!, "--severity=style", "--external-sources", "--source-path=SCRIPTDIR", Repo.File(script));
        Assert.True(result.ExitCode == 0, $"shellcheck {script}:\n{result.Stdout}{result.Stderr}");
    }

    [Theory]
    [InlineData("deploy/publish.sh")]
    [InlineData("deploy/install.sh")]
    public void Is_executable_with_strict_mode(string script)
    {
        string path = Repo.File(script);
        Assert.True((File.GetUnixFileMode(path) & UnixFileMode.UserExecute) != 0, $"{script} is not executable");
        string text = File.ReadAllText(path);
        Assert.StartsWith("#!/usr/bin/env bash\n", text, StringComparison.Ordinal);
        Assert.Contains("\nset -euo pipefail\n", text, StringComparison.Ordinal);
    }
}
