using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using MoECluster.Testing;

namespace MoECluster.Cli.Tests;

/// <summary><c>moecluster probe</c>, the container health check: exit 0 on 2xx, 1 otherwise, 2 on bad input.</summary>
public sealed class ProbeCommandTests
{
    /// <summary>Answers one HTTP request with <paramref name="status"/> and returns the request line it got.</summary>
    private static (int Port, Task<string> RequestLine) Serve(int status)
    {
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        int port = ((IPEndPoint)listener.LocalEndpoint).Port;
        async Task<string> AnswerAsync()
        {
            try
            {
                using var client = await listener.AcceptTcpClientAsync().WaitAsync(TimeSpan.FromSeconds(30));
                using var stream = client.GetStream();
                var request = new StringBuilder();
                var buffer = new byte[1024];
                while (!request.ToString().Contains("\r\n\r\n", StringComparison.Ordinal))
                {
                    int n = await stream.ReadAsync(buffer);
                    if (n == 0)
                    {
                        break;
                    }

                    request.Append(Encoding.ASCII.GetString(buffer, 0, n));
                }

                await stream.WriteAsync(Encoding.ASCII.GetBytes($"HTTP/1.1 {status} Status\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"));
                return request.ToString().Split("\r\n")[0];
            }
            finally
            {
                listener.Stop();
            }
        }

        return (port, AnswerAsync());
    }

    private static (int Exit, string Out, string Err) Probe(params string[] args)
    {
        using var output = new StringWriter();
        using var error = new StringWriter();
        int exit = CliApp.Run(["probe", .. args], output, error);
        return (exit, output.ToString(), error.ToString());
    }

    [Fact]
    public async Task A_2xx_answer_exits_0()
    {
        var (port, request) = Serve(200);
        var (exit, output, error) = Probe($"http://127.0.0.1:{port}/alive");
        Assert.True(exit == 0, error);
        Assert.Equal("GET /alive HTTP/1.1", await request);
        Assert.Contains($"200 Status http://127.0.0.1:{port}/alive", output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_503_answer_exits_1_with_the_status()
    {
        var (port, request) = Serve(503);
        var (exit, _, error) = Probe($"http://127.0.0.1:{port}/health");
        Assert.Equal(1, exit);
        Assert.Equal("GET /health HTTP/1.1", await request);
        Assert.Contains("503", error, StringComparison.Ordinal);
    }

    [Fact]
    public void No_listener_exits_1()
    {
        int port = FreePorts.Take(1)[0];
        var (exit, _, error) = Probe($"http://127.0.0.1:{port}/alive", "--timeout", "3");
        Assert.Equal(1, exit);
        Assert.StartsWith("moecluster probe: ", error, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("not a url")]
    [InlineData("ftp://127.0.0.1/alive")]
    public void A_bad_url_is_a_usage_error(string url)
    {
        var (exit, _, error) = Probe(url);
        Assert.Equal(2, exit);
        Assert.Contains("expected an http:// or https:// URL", error, StringComparison.Ordinal);
    }

    /// <summary>Without a URL it probes the process's own Urls (as in the Dockerfile's HEALTHCHECK), a wildcard host as loopback.</summary>
    [Theory]
    [InlineData("http://0.0.0.0:{0}", "/alive", null)]
    [InlineData("http://+:{0};http://127.0.0.1:1", "/health", "/health")]
    public async Task Without_url_it_probes_its_own_urls(string urls, string expectedPath, string? pathOption)
    {
        var (port, request) = Serve(200);
        var result = RunWithUrls(string.Format(System.Globalization.CultureInfo.InvariantCulture, urls, port), pathOption is null ? ["probe"] : ["probe", "--path", pathOption]);
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Equal($"GET {expectedPath} HTTP/1.1", await request);
    }

    [Theory]
    [InlineData(null, "no URL given and no Urls configured")]
    [InlineData("http://127.0.0.1:0", "ephemeral port")]
    public void Without_url_and_without_a_fixed_port_it_is_a_usage_error(string? urls, string message)
    {
        var result = RunWithUrls(urls, ["probe"]);
        Assert.True(result.ExitCode == 2, result.ToString());
        Assert.Contains(message, result.Stderr, StringComparison.Ordinal);
    }

    private static ChildProcess.Result RunWithUrls(string? urls, string[] args)
    {
        var info = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false, WorkingDirectory = Path.GetTempPath() };
        info.ArgumentList.Add(ChildProcess.CliDll);
        foreach (string a in args)
        {
            info.ArgumentList.Add(a);
        }

        info.Environment.Remove("Urls");
        info.Environment.Remove("URLS");
        if (urls is not null)
        {
            info.Environment["Urls"] = urls;
        }

        using var p = Process.Start(info)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        Assert.True(p.WaitForExit(TimeSpan.FromMinutes(1)), "moecluster probe did not finish");
        return new ChildProcess.Result(p.ExitCode, stdout.Result, stderr.Result);
    }
}
