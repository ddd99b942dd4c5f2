using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text.RegularExpressions;
using Microsoft.Playwright;
using MoECluster.Gateway;
using MoECluster.Testing;

namespace MoECluster.AppHost.Tests;

/// <summary>
/// The Aspire dashboard of the README's first command, opened in headless Chromium (Debian's package, driven by
/// Playwright) through the login link the AppHost prints: the front-end and expert silos are Running, and one forward
/// request is one trace from the gateway through the router grain on the front-end to expert shard grains on the expert
/// silos. Set MOECLUSTER_SCREENSHOTS to a folder to keep the screenshots (docs/aspire-dashboard-*.png come from it).
/// </summary>
[Collection(TimingSensitive.Name)]
public sealed partial class AspireDashboardTests(Xunit.Abstractions.ITestOutputHelper log)
{
    public const string ChromiumPath = "/usr/bin/chromium";

    [Fact]
    public async Task The_dashboard_shows_every_silo_running_and_a_forward_as_one_trace_from_the_gateway_to_the_expert_shards()
    {
        Assert.True(File.Exists(ChromiumPath), $"{ChromiumPath} is missing: install Debian's chromium (apt-get install chromium); tests/tools/install-test-deps.sh does");
        using var dir = new TempDirectory("moecluster-dashboard-");
        string modelsDir = dir.File("models");
        string[] args = AspireAppTests.Args(modelsDir);
        string url = AspireAppTests.GatewayUrl(args);
        string screenshots = Environment.GetEnvironmentVariable("MOECLUSTER_SCREENSHOTS") is { Length: > 0 } keep ? keep : dir.File("screenshots");
        Directory.CreateDirectory(screenshots);
        var before = AspireAppTests.Orchestrators().ToHashSet();
        using var apphost = BackgroundProcess.Start("dotnet", [Path.Combine(AppContext.BaseDirectory, "MoECluster.AppHost.dll"), .. args]);
        try
        {
            Assert.True(await apphost.WaitForOutputAsync("gateway ready", TimeSpan.FromMinutes(3)), "the AppHost did not get its gateway ready:\n" + apphost.Output);
            var login = LoginLink().Match(apphost.Output);
            Assert.True(login.Success, "no dashboard login link in the AppHost's output:\n" + apphost.Output);
            var dashboard = new Uri(login.Value);
            await AspireAppTests.WaitForExpertSilosAsync(url, 2, TimeSpan.FromMinutes(2));

            // One forward in a trace of our own choosing (W3C traceparent), so the dashboard's page for it is known.
            string traceId = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(16));
            using (var http = new HttpClient { BaseAddress = new Uri(url), Timeout = TimeSpan.FromMinutes(1) })
            {
                http.DefaultRequestHeaders.Add("traceparent", $"00-{traceId}-{Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(8))}-01");
                var random = new Random(Random.Shared.Next());
                const int Tokens = 4;
                float[] x = [.. Enumerable.Range(0, Tokens * 64).Select(_ => (float)((random.NextDouble() * 2) - 1))];
                var response = await new GatewayClient(http).ForwardAsync("latent", layer: null, x, Tokens, 64, "bf16");
                Assert.Equal(Tokens * 64, response.HiddenStates.Decode().Length);
            }

            using var playwright = await Playwright.CreateAsync();
            await using var browser = await playwright.Chromium.LaunchAsync(new BrowserTypeLaunchOptions
            {
                ExecutablePath = ChromiumPath,
                Headless = true,
                Args = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
            });
            var page = await browser.NewPageAsync(new BrowserNewPageOptions { ViewportSize = new ViewportSize { Width = 1600, Height = 900 } });
            await page.GotoAsync(dashboard.ToString());

            // The resources page: a row per resource, its state in it.
            foreach (string silo in new[] { "frontend", "expert-1", "expert-2" })
            {
                var row = page.GetByRole(AriaRole.Row).Filter(new LocatorFilterOptions { HasText = silo }).Filter(new LocatorFilterOptions { HasText = "Running" });
                await row.First.WaitForAsync(new LocatorWaitForOptions { Timeout = 60_000 });
            }

            await page.ScreenshotAsync(new PageScreenshotOptions { Path = Path.Combine(screenshots, "aspire-dashboard-resources.png") });

            // The trace: exported every second or so; reload until its spans from all three processes are in.
            string origin = dashboard.GetLeftPart(UriPartial.Authority);
            string text = string.Empty;
            var clock = Stopwatch.StartNew();
            while (clock.Elapsed < TimeSpan.FromSeconds(60))
            {
                await page.GotoAsync($"{origin}/traces/detail/{traceId}");
                await page.WaitForLoadStateAsync(LoadState.NetworkIdle);
                text = await page.InnerTextAsync("body");
                if (ExpertShardSpan().IsMatch(text) && text.Contains("IMoeRouterGrain", StringComparison.Ordinal))
                {
                    break;
                }

                await Task.Delay(1000);
            }

            await page.ScreenshotAsync(new PageScreenshotOptions { Path = Path.Combine(screenshots, "aspire-dashboard-trace.png"), FullPage = true });
            log.WriteLine(text);
            // The spans (name, then resource): the gateway's request and the router grain on the front-end, the shard grain
            // calls made there and served on the expert silos, all in the one trace.
            Assert.Matches(@"POST /v1/forward\s+frontend", text);
            Assert.Matches(@"IMoeRouterGrain/Forward\s+frontend", text);
            Assert.Matches(@"IExpertShardGrain/Compute\s+frontend", text);
            Assert.Matches(@"IExpertShardGrain/Compute\s+expert-[12]", text);
            Assert.Matches(@"Resources\s+3", text);
        }
        finally
        {
            if (!apphost.HasExited)
            {
                using var term = Process.Start("kill", ["-TERM", apphost.Id.ToString(CultureInfo.InvariantCulture)]);
                term.WaitForExit();
                apphost.WaitForExit(TimeSpan.FromSeconds(60));
            }

            ProcessScan.KillAll(ProcessScan.Mentioning(modelsDir).Concat(AspireAppTests.Orchestrators().Where(p => !before.Contains(p))));
        }
    }

    [GeneratedRegex(@"http://127\.0\.0\.1:\d+/login\?t=[0-9a-zA-Z]+")]
    private static partial Regex LoginLink();

    [GeneratedRegex(@"IExpertShardGrain/Compute\s+expert-[12]")]
    private static partial Regex ExpertShardSpan();
}
