using MoECluster.Deploy.Tests.Support;

namespace MoECluster.Deploy.Tests;

/// <summary>Every shell script of the repository passes shellcheck (.ci/run installs it).</summary>
public sealed class ShellScriptTests
{
    public static TheoryData<string> Scripts() => new(ScriptPaths());

    private static List<string> ScriptPaths() =>
        Directory.EnumerateFiles(Repo.Deploy, "*.sh", SearchOption.AllDirectories)
            .Concat(Directory.EnumerateFiles(Repo.File("bench"), "*.sh"))
            .Concat(Directory.EnumerateFiles(Repo.File("tests", "tools"), "*.sh"))
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
        Assert.Contains("tests/tools/install-test-deps.sh", scripts);
    }

    [Fact]
    public void The_test_command_installs_the_test_dependencies_before_each_test_project_and_ci_calls_the_same_script()
    {
        // `dotnet test MoECluster.sln` runs the VSTest target of each test project: the hook runs the installer first.
        string targets = File.ReadAllText(Repo.File("tests", "Directory.Build.targets"));
        Assert.Contains("BeforeTargets=\"VSTest\"", targets, StringComparison.Ordinal);
        Assert.Contains("tools/install-test-deps.sh", targets, StringComparison.Ordinal);
        Assert.Contains("'$(IsTestProject)' == 'true'", targets, StringComparison.Ordinal);
        Assert.Contains("tests/tools/install-test-deps.sh", File.ReadAllText(Repo.File(".ci", "run")), StringComparison.Ordinal);

        // With everything present (as here, once the hook has run) the script only checks: exit 0, quiet.
        var result = Tools.Run("bash", Repo.File("tests", "tools", "install-test-deps.sh"));
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.DoesNotContain("installing", result.Stdout, StringComparison.Ordinal);
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
