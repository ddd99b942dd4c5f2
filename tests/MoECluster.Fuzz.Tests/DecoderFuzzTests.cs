using System.Globalization;
using Xunit.Abstractions;

namespace MoECluster.Fuzz.Tests;

/// <summary>The targets, shared by the tests of one run (their file targets keep a temporary directory).</summary>
public sealed class FuzzTargetsFixture : IDisposable
{
    public FuzzTargets Targets { get; } = new();

    public void Dispose() => Targets.Dispose();
}

/// <summary>
/// Every decoder of untrusted bytes answers every fuzzed input with its value or its documented exception, allocates
/// no more than 64 bytes per input byte plus 64 KiB (so nothing is sized by a length the input claims), and takes
/// less than a second per input. 100,000 inputs per decoder (MOECLUSTER_FUZZ_ITERATIONS; the targets that write each
/// input to a real file, on tmpfs where there is one, take MOECLUSTER_FUZZ_FILE_ITERATIONS, also 100,000 by default).
/// The seed is random and printed (MOECLUSTER_FUZZ_SEED replays one); with MOECLUSTER_FUZZ_REPORT set, one JSON
/// line per target is appended to that file. The tests of this class run one after the other, so throughputs are
/// each measured alone.
/// </summary>
public sealed class DecoderFuzzTests(FuzzTargetsFixture fixture, ITestOutputHelper output) : IClassFixture<FuzzTargetsFixture>
{
    public const long DefaultIterations = 100_000;
    public const long DefaultFileIterations = 100_000;

    private static readonly string[] Names =
    [
        "shard-request", "shard-response", "gateway-request", "gateway-response", "activation-block", "activation-block-fields",
        "block-mxfp8-e4m3", "block-mxfp8-e5m2", "block-mxfp6-e3m2", "block-mxfp6-e2m3", "block-mxfp4", "block-nvfp4",
        "gateway-json-body", "gateway-msgpack-body", "kserve-json-body", "kserve-binary-body", "safetensors-header", "safetensors-file", "hidden-states", "hidden-states-file",
        "checkpoint-index",
    ];

    [Fact]
    public void Every_target_of_the_catalog_is_fuzzed_here()
    {
        Assert.Equal(fixture.Targets.All.Select(t => t.Name).Order(), Names.Order());
    }

    [Theory]
    [InlineData("shard-request")]
    [InlineData("shard-response")]
    [InlineData("gateway-request")]
    [InlineData("gateway-response")]
    [InlineData("activation-block")]
    [InlineData("activation-block-fields")]
    [InlineData("block-mxfp8-e4m3")]
    [InlineData("block-mxfp8-e5m2")]
    [InlineData("block-mxfp6-e3m2")]
    [InlineData("block-mxfp6-e2m3")]
    [InlineData("block-mxfp4")]
    [InlineData("block-nvfp4")]
    [InlineData("gateway-json-body")]
    [InlineData("gateway-msgpack-body")]
    [InlineData("kserve-json-body")]
    [InlineData("kserve-binary-body")]
    [InlineData("safetensors-header")]
    [InlineData("safetensors-file")]
    [InlineData("hidden-states")]
    [InlineData("hidden-states-file")]
    [InlineData("checkpoint-index")]
    public void Decoder_answers_every_fuzzed_input_with_a_value_or_its_documented_refusal(string name)
    {
        FuzzTarget target = fixture.Targets.Get(name);
        long iterations = target.UsesFiles
            ? Setting("MOECLUSTER_FUZZ_FILE_ITERATIONS") ?? DefaultFileIterations
            : Setting("MOECLUSTER_FUZZ_ITERATIONS") ?? DefaultIterations;
        int seed = (int?)Setting("MOECLUSTER_FUZZ_SEED") ?? Random.Shared.Next();
        FuzzReport report = FuzzRunner.Run(target, iterations, seed);
        output.WriteLine(report.Summary);
        if (Environment.GetEnvironmentVariable("MOECLUSTER_FUZZ_REPORT") is { Length: > 0 } file)
        {
            lock (Names)
            {
                File.AppendAllText(file, report.Json + "\n");
            }
        }

        string replay = $"{report.Summary}\nreplay: MOECLUSTER_FUZZ_SEED={seed}\n";
        Assert.Equal(iterations, report.Iterations);
        Assert.True(report.Crashes == 0, $"{replay}undocumented exceptions (allowed: {target.Refusals}):\n{FuzzRunner.Describe(report.Findings)}");
        Assert.True(report.AllocationViolations == 0, $"{replay}allocations past {target.BytesPerInputByte} x input + {target.ConstantBytes}:\n{FuzzRunner.Describe(report.Findings)}");
        Assert.True(report.SlowInputs == 0, $"{replay}inputs over {FuzzRunner.SlowInputMilliseconds} ms:\n{FuzzRunner.Describe(report.Findings)}");

        // Both answers must occur: a decoder that refuses everything, or accepts everything, is not being exercised.
        Assert.True(report.Accepted >= iterations / 100, $"{replay}only {report.Accepted} inputs were accepted");
        Assert.True(report.Refused >= iterations / 4, $"{replay}only {report.Refused} inputs were refused");
    }

    private static long? Setting(string name) =>
        Environment.GetEnvironmentVariable(name) is { Length: > 0 } text ? long.Parse(text, CultureInfo.InvariantCulture) : null;
}
