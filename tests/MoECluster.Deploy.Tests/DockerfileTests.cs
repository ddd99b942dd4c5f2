using System.Text.RegularExpressions;
using MoECluster.Cluster.Hosting;
using MoECluster.Deploy.Tests.Support;
using MoECluster.ServiceDefaults;

namespace MoECluster.Deploy.Tests;

/// <summary>deploy/docker/Dockerfile: built with the SDK by deploy/publish.sh, run on a CUDA runtime image as non-root.</summary>
public sealed class DockerfileTests
{
    private static readonly Dockerfile File = new(Repo.File("deploy", "docker", "Dockerfile"));

    private static List<(string Keyword, string Arguments)> Runtime => File.Stages[^1].Body;

    private static string[] ExecForm(string arguments)
    {
        Assert.StartsWith("[", arguments, StringComparison.Ordinal);
        return System.Text.Json.JsonSerializer.Deserialize<string[]>(arguments)!;
    }

    [Fact]
    public void Builds_with_the_sdk_and_publish_sh_and_runs_on_a_cuda_runtime_image()
    {
        var stages = File.Stages;
        Assert.Equal(2, stages.Count);
        Assert.Equal("mcr.microsoft.com/dotnet/sdk:10.0", stages[0].Image);
        Assert.Contains(stages[0].Body, i => i.Keyword == "RUN" && i.Arguments.Contains("deploy/publish.sh /out", StringComparison.Ordinal));

        // The runtime stage: an NVIDIA CUDA *runtime* image (libcublas, no compilers), not devel nor base.
        Assert.Matches(new Regex(@"^nvidia/cuda:12\.\d+\.\d+-runtime-ubuntu\d\d\.04$"), stages[1].Image);
        Assert.Contains(Runtime, i => i.Keyword == "COPY" && i.Arguments == $"--from={stages[0].Name} /out/ /opt/moecluster/");
    }

    [Fact]
    public void Runs_moecluster_as_a_non_root_user()
    {
        var user = Runtime.Last(i => i.Keyword == "USER").Arguments;
        Assert.DoesNotMatch(new Regex(@"^(root|0)(:|$)"), user);
        string[] entrypoint = ExecForm(Runtime.Single(i => i.Keyword == "ENTRYPOINT").Arguments);
        Assert.Equal(new[] { "/opt/moecluster/moecluster" }, entrypoint);
        string[] command = ExecForm(Runtime.Single(i => i.Keyword == "CMD").Arguments);
        Assert.Equal(SiloRoles.Expert, SiloSettings.RoleOf("Dockerfile CMD", command));
    }

    [Fact]
    public void Exposes_the_default_ports()
    {
        var exposed = Runtime.Where(i => i.Keyword == "EXPOSE").SelectMany(i => i.Arguments.Split(' ', StringSplitOptions.RemoveEmptyEntries)).Select(int.Parse).Order();
        Assert.Equal(
            new[] { ConfigurationKeys.DefaultFrontendHttpPort, ConfigurationKeys.DeployedExpertHttpPort, ConfigurationKeys.DefaultSiloPort, ConfigurationKeys.DefaultGatewayPort }.Order(),
            exposed);
    }

    [Fact]
    public void Healthcheck_probes_liveness_with_moecluster_probe()
    {
        string healthcheck = Runtime.Single(i => i.Keyword == "HEALTHCHECK").Arguments;
        int cmd = healthcheck.IndexOf("CMD ", StringComparison.Ordinal);
        Assert.True(cmd > 0, healthcheck);
        string[] probe = ExecForm(healthcheck[(cmd + 4)..].Trim());
        Assert.Equal(new[] { "/opt/moecluster/moecluster", "probe", "--path", ServiceDefaultsExtensions.AlivePath }, probe);
    }

    [Fact]
    public void Environment_it_sets_is_known()
    {
        var names = Runtime.Where(i => i.Keyword == "ENV").Select(i => i.Arguments.Split('=', 2)[0]);
        SiloSettings.AssertKnown("Dockerfile ENV", names);
    }

    [Fact]
    public void Dockerignore_keeps_the_build_inputs_and_drops_outputs()
    {
        var ignore = new DockerIgnore(Repo.File(".dockerignore"));
        foreach (string needed in new[]
        {
            "src/MoECluster.Cli/MoECluster.Cli.csproj", "src/MoECluster.Cluster/Hosting/ConfigurationKeys.cs",
            "kernels/MoECluster.Kernels.Gpu/GpuAccelerators.cs", "aspire/MoECluster.ServiceDefaults/MoECluster.ServiceDefaults.csproj",
            "Directory.Build.props", "Directory.Packages.props", "global.json", ".editorconfig", "deploy/publish.sh",
        })
        {
            Assert.True(System.IO.File.Exists(Repo.File(needed)), $"{needed} does not exist (fix the test's list)");
            Assert.False(ignore.Excludes(needed), $".dockerignore excludes {needed}, which the image build needs");
        }

        foreach (string dropped in new[]
        {
            "src/MoECluster.Cli/bin/Release/net10.0/moecluster.dll", "kernels/MoECluster.Kernels/obj/project.assets.json",
            ".git/HEAD", "models/super/model.safetensors", "tests/MoECluster.Deploy.Tests/ComposeTests.cs", "deploy/install.sh",
        })
        {
            Assert.True(ignore.Excludes(dropped), $".dockerignore lets {dropped} into the build context");
        }
    }

    [Fact]
    public void The_dockerignore_matcher_follows_docker_rules()
    {
        string path = Path.GetTempFileName();
        try
        {
            System.IO.File.WriteAllLines(path, ["**/bin/", "docs", "*.md", "!README.md", "a/*/c"]);
            var ignore = new DockerIgnore(path);
            Assert.True(ignore.Excludes("x/y/bin/z.dll"));
            Assert.True(ignore.Excludes("bin/z.dll"));
            Assert.True(ignore.Excludes("docs/a/b.txt"));
            Assert.True(ignore.Excludes("CHANGES.md"));
            Assert.False(ignore.Excludes("README.md"));
            Assert.False(ignore.Excludes("sub/CHANGES.md"));
            Assert.True(ignore.Excludes("a/b/c"));
            Assert.False(ignore.Excludes("a/b/d/c"));
            Assert.False(ignore.Excludes("binary/x"));
        }
        finally
        {
            System.IO.File.Delete(path);
        }
    }
}
