using System.Text.Json.Serialization;

namespace MoECluster.Kernels.Bench;

internal sealed record GemmResult(
    [property: JsonPropertyName("tokens")] int Tokens,
    [property: JsonPropertyName("in")] int In,
    [property: JsonPropertyName("out")] int Out,
    [property: JsonPropertyName("seconds")] double Seconds,
    [property: JsonPropertyName("gflops")] double Gflops);

internal sealed record GemmReport(
    [property: JsonPropertyName("path")] string Path,
    [property: JsonPropertyName("weights")] string Weights,
    [property: JsonPropertyName("threads")] int Threads,
    [property: JsonPropertyName("processors")] int Processors,
    [property: JsonPropertyName("results")] IReadOnlyList<GemmResult> Results);

[JsonSourceGenerationOptions(WriteIndented = true)]
[JsonSerializable(typeof(GemmReport))]
internal sealed partial class GemmJsonContext : JsonSerializerContext;
