using MoECluster.Cluster.Hosting;

namespace MoECluster.Deploy.Tests;

/// <summary>The list deployment files are checked against: derived from the code, and strict enough to catch a typo.</summary>
public sealed class ConfigurationKeysTests
{
    [Theory]
    [InlineData("Orleans__ClusterId")]
    [InlineData("Orleans__Clustering__ProviderType")]
    [InlineData("Orleans__Clustering__ServiceKey")]
    [InlineData("Orleans__Endpoints__AdvertisedIPAddress")]
    [InlineData("Orleans:Endpoints:SiloPort")]
    [InlineData("orleans__endpoints__gatewayport")]
    [InlineData("ConnectionStrings__redis")]
    [InlineData("Urls")]
    [InlineData("MoECluster__Models__latent__Path")]
    [InlineData("MoECluster__ShardsPerLayer")]
    [InlineData("MoECluster__Compute__Backend")]
    [InlineData("MoECluster__Pins__latent/1/s0/0-16")]
    [InlineData("MoECluster__WireLimits__MaxRows")]
    [InlineData("MoECluster__RequestTimeoutSeconds")]
    [InlineData("OTEL_EXPORTER_OTLP_ENDPOINT")]
    [InlineData("MOECLUSTER_LIBCUBLAS")]
    public void Keys_the_code_reads_are_known(string name) => Assert.True(ConfigurationKeys.IsKnown(name), name);

    [Theory]
    [InlineData("Orleans__ClusterID_")]
    [InlineData("Orleans__Endpoints__SiloPorts")]
    [InlineData("Orleans_Endpoints_SiloPort")]
    [InlineData("MoECluster__ShardPerLayer")]
    [InlineData("MoECluster__Models__Path")]
    [InlineData("MoECluster__Models____Path")]
    [InlineData("MoECluster__Compute")]
    [InlineData("MoECluster__Compute__Backend__Name")]
    [InlineData("ConnectionStrings")]
    [InlineData("URLS_")]
    [InlineData("CUDA_VISIBLE_DEVICES")]
    [InlineData("POD_IP")]
    public void Other_names_are_not(string name) => Assert.False(ConfigurationKeys.IsKnown(name), name);

    [Fact]
    public void Every_option_of_the_MoECluster_section_is_a_key()
    {
        // Reflection over MoeClusterOptions: a property added there becomes a key without editing a list.
        foreach (var property in typeof(MoeClusterOptions).GetProperties().Where(p => p.CanWrite))
        {
            Assert.Contains(ConfigurationKeys.All, k => k.StartsWith($"MoECluster:{property.Name}", StringComparison.Ordinal));
        }

        Assert.Contains("MoECluster:Models:*:Path", ConfigurationKeys.All);
        Assert.Contains("MoECluster:Pins:*", ConfigurationKeys.All);
        Assert.DoesNotContain(ConfigurationKeys.All, k => k.Contains("ResolveModel", StringComparison.Ordinal));
    }

    [Fact]
    public void Environment_and_configuration_forms_convert_both_ways()
    {
        Assert.Equal("Orleans__Metadata__moecluster-role", ConfigurationKeys.ToEnvironmentName(ConfigurationKeys.Role));
        Assert.Equal(ConfigurationKeys.SiloPort, ConfigurationKeys.FromEnvironmentName("Orleans__Endpoints__SiloPort"));
        Assert.Equal("MoECluster:Models:x:Path", ConfigurationKeys.ModelPath("x"));
    }
}

/// <summary>deploy/README.md documents the keys the code reads, by the names the code reads.</summary>
public sealed class DeployReadmeTests
{
    [Fact]
    public void The_keys_table_names_only_known_variables()
    {
        string readme = MoECluster.Deploy.Tests.Support.Repo.ReadText("deploy", "README.md");
        int start = readme.IndexOf("## Configuration keys", StringComparison.Ordinal);
        int end = readme.IndexOf("\n## ", start + 1, StringComparison.Ordinal);
        Assert.True(start >= 0 && end > start, "deploy/README.md has no '## Configuration keys' section");
        var names = readme[start..end].Split('\n')
            .Where(l => l.StartsWith("| `", StringComparison.Ordinal))
            .SelectMany(l => System.Text.RegularExpressions.Regex.Matches(l.Split('|')[1], "`([^`]+)`").Select(m => m.Groups[1].Value))
            .Select(n => n.Replace("<id>", "x", StringComparison.Ordinal).Replace("<shard>", "x", StringComparison.Ordinal))
            .ToList();
        Assert.True(names.Count >= 15, $"only {names.Count} variables found in the table");
        MoECluster.Deploy.Tests.Support.SiloSettings.AssertKnown("deploy/README.md", names);
        foreach (string expected in new[] { "Orleans__Clustering__ServiceKey", "ConnectionStrings__redis", "Orleans__Endpoints__AdvertisedIPAddress", "Urls", "CUDA_VISIBLE_DEVICES" })
        {
            Assert.Contains(expected, names);
        }
    }
}

/// <summary>Pins in deploy/ and the READMEs are spelled as the silo accepts them: their keys are shard keys.</summary>
public sealed class PinExampleTests
{
    [Fact]
    public void Every_pin_example_names_a_shard_key_in_the_current_form()
    {
        string[] files =
        [
            .. Directory.EnumerateFiles(MoECluster.Deploy.Tests.Support.Repo.Deploy, "*", SearchOption.AllDirectories),
            MoECluster.Deploy.Tests.Support.Repo.File("README.md"),
        ];
        var pins = files
            .SelectMany(f => System.Text.RegularExpressions.Regex.Matches(File.ReadAllText(f), @"MoECluster(?:__|:)Pins(?:__|:)([^\s=`*<]+)").Select(m => (File: f, Key: m.Groups[1].Value)))
            .ToList();
        Assert.Contains(pins, p => p.File.EndsWith("experts.yaml", StringComparison.Ordinal));
        Assert.Contains(pins, p => p.File.EndsWith(Path.Combine("deploy", "README.md"), StringComparison.Ordinal));
        Assert.All(pins, p => Assert.True(MoECluster.Model.Dispatch.ExpertShard.TryParseKey(p.Key, out _, out string? error), $"{p.File}: {error}"));
    }
}
