using MoECluster.Testing;

namespace MoECluster.EndToEnd.Tests;

/// <summary>The strict exposition parser the /metrics tests rely on: it reads a valid exposition and refuses each kind of fault.</summary>
public sealed class PrometheusTextTests
{
    private const string Valid = """
        # HELP requests_total Requests served, by "path".\nSecond line \\ backslash
        # TYPE requests_total counter
        requests_total{path="/v1/forward",code="200"} 12
        requests_total{path="a \"quoted\" \\ and\nnewline",code="500"} 1.5e3 1700000000000
        # some comment
        # TYPE in_flight gauge
        in_flight -1
        # TYPE latency_seconds histogram
        # HELP latency_seconds Latency.
        latency_seconds_bucket{model="m",le="0.1"} 1
        latency_seconds_bucket{model="m",le="1"} 3
        latency_seconds_bucket{model="m",le="+Inf"} 4
        latency_seconds_sum{model="m"} 2.5
        latency_seconds_count{model="m"} 4
        latency_seconds_bucket{model="n",le="+Inf"} 0
        latency_seconds_sum{model="n"} 0
        latency_seconds_count{model="n"} 0
        untyped_thing NaN

        """;

    [Fact]
    public void A_valid_exposition_is_read_with_its_help_types_labels_and_values()
    {
        var text = PrometheusText.Parse(Valid);
        var requests = text.Family("requests_total");
        Assert.Equal("counter", requests.Type);
        Assert.Equal("Requests served, by \"path\".\nSecond line \\ backslash", requests.Help);
        Assert.Equal("a \"quoted\" \\ and\nnewline", requests.Samples[1].Labels["path"]);
        Assert.Equal(1512, text.Sum("requests_total"));
        Assert.Equal(-1, text.Sum("in_flight"));
        Assert.Equal("histogram", text.Family("latency_seconds").Type);
        Assert.Equal(4, text.Sum("latency_seconds_count"));
        Assert.Equal(3, text.Sum("latency_seconds_bucket", l => l["le"] == "1"));
        Assert.Null(text.Family("untyped_thing").Type);
        Assert.Throws<KeyNotFoundException>(() => text.Family("absent"));
    }

    [Theory]
    [InlineData("1bad_name 1\n", "is not a metric name")]
    [InlineData("bad-name 1\n", "expected a space before the value")]
    [InlineData("m{__reserved=\"x\"} 1\n", "label name '__reserved' is not valid")]
    [InlineData("m{9x=\"x\"} 1\n", "label name '' is not valid")]
    [InlineData("m{a=\"x\\t\"} 1\n", "escape \\t")]
    [InlineData("m{a=\"x} 1\n", "is not closed")]
    [InlineData("m{a=\"x\",a=\"y\"} 1\n", "label a twice")]
    [InlineData("m{a=\"x\" b=\"y\"} 1\n", "expected , or }")]
    [InlineData("m one\n", "'one' is not a number")]
    [InlineData("m 0x1F\n", "is not a number")]
    [InlineData("m 1 1.5\n", "timestamp '1.5' is not an integer")]
    [InlineData("m 1", "does not end with a line feed")]
    [InlineData("m 1\r\n", "carriage return")]
    [InlineData("m 1\nm 2\n", "appears twice")]
    [InlineData("# TYPE m counter\n# TYPE m counter\nm 1\n", "a second TYPE")]
    [InlineData("# HELP m a\n# HELP m b\nm 1\n", "a second HELP")]
    [InlineData("# TYPE m countr\nm 1\n", "unknown type 'countr'")]
    [InlineData("m 1\n# TYPE m counter\n", "TYPE of m after its first sample")]
    [InlineData("# TYPE m counter\nm -1\n", "counter m is -1")]
    [InlineData("# TYPE m counter\nm NaN\n", "counter m is NaN")]
    [InlineData("# HELP m bad \\x escape\nm 1\n", "escape \\x in HELP")]
    [InlineData("a{x=\"1\"} 1\nb 1\na{x=\"2\"} 1\n", "not one group")]
    public void Each_fault_of_the_format_is_refused(string exposition, string message)
    {
        var e = Assert.Throws<FormatException>(() => PrometheusText.Parse(exposition));
        Assert.Contains(message, e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("h_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n", "not le=\"+Inf\"")]
    [InlineData("h_bucket{le=\"1\"} 2\nh_bucket{le=\"2\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 2\n", "less than the bucket before")]
    [InlineData("h_bucket{le=\"2\"} 1\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n", "does not increase")]
    [InlineData("h_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n", "_count 3 differs from the +Inf bucket 2")]
    [InlineData("h_bucket{le=\"+Inf\"} 2\nh_count 2\n", "0 _sum")]
    [InlineData("h_bucket{le=\"+Inf\"} 2\nh_sum 2\n", "0 _count")]
    [InlineData("h_bucket{le=\"+Inf\"} 1.5\nh_sum 2\nh_count 1.5\n", "not a count")]
    [InlineData("h_bucket 1\nh_sum 2\nh_count 1\n", "le belongs on _bucket lines")]
    [InlineData("h_bucket{le=\"+Inf\"} 1\nh_sum{le=\"1\"} 2\nh_count 1\n", "le belongs on _bucket lines")]
    [InlineData("h_bucket{le=\"x\"} 1\nh_bucket{le=\"+Inf\"} 1\nh_sum 2\nh_count 1\n", "'x' is not a number")]
    public void A_histogram_needs_increasing_le_up_to_inf_cumulative_counts_and_a_matching_count_and_sum(string samples, string message)
    {
        var e = Assert.Throws<FormatException>(() => PrometheusText.Parse("# TYPE h histogram\n" + samples));
        Assert.Contains(message, e.Message, StringComparison.Ordinal);
    }
}
