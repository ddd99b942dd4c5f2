using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;
using MoECluster.Cluster.Hosting;

namespace MoECluster.Cluster.Tests.Placement;

/// <summary>MoECluster:Pins is checked when the host starts: a key that is not a shard key fails the start, naming it.</summary>
public sealed class PinsValidationTests
{
    private static IHost Host(params (string Key, string Value)[] settings)
    {
        var builder = Microsoft.Extensions.Hosting.Host.CreateEmptyApplicationBuilder(new HostApplicationBuilderSettings());
        builder.Configuration.AddInMemoryCollection(settings.Select(s => KeyValuePair.Create(s.Key, (string?)s.Value)));
        builder.Services.Configure<MoeClusterOptions>(builder.Configuration.GetSection(MoeClusterOptions.Section));
        builder.Services.AddShardPlacementPolicy();
        return builder.Build();
    }

    [Theory]
    [InlineData("latent/1/0-16")] // the old form, without the shard index
    [InlineData("latent/1/s0")]
    [InlineData("latent/one/s0/0-16")]
    public async Task A_pin_whose_key_is_not_a_shard_key_fails_the_start_naming_the_key_and_the_expected_form(string key)
    {
        using var host = Host(($"MoECluster:Pins:{key}", "expert-1"));
        var e = await Assert.ThrowsAsync<OptionsValidationException>(() => host.StartAsync());
        Assert.Contains($"MoECluster:Pins:{key}", e.Message, StringComparison.Ordinal);
        Assert.Contains("{model}/{layer}/s{index}/{ranges}", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_pin_that_names_no_silo_fails_the_start()
    {
        using var host = Host(("MoECluster:Pins:latent/1/s0/0-16", " "));
        var e = await Assert.ThrowsAsync<OptionsValidationException>(() => host.StartAsync());
        Assert.Contains("MoECluster:Pins:latent/1/s0/0-16", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Pins_in_the_shard_key_form_start()
    {
        using var host = Host(("MoECluster:Pins:latent/1/s0/0-16", "expert-1"), ("MoECluster:Pins:latent/3/s2/32-48", "expert-2"));
        await host.StartAsync();
        Assert.Equal("expert-2", host.Services.GetRequiredService<IOptions<MoeClusterOptions>>().Value.Pins["latent/3/s2/32-48"]);
        await host.StopAsync();
    }
}
