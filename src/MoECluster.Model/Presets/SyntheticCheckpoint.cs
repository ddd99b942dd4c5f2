using System.Runtime.InteropServices;
using MoECluster.Model.Checkpoints;
using MoECluster.Model.Configuration;
using MoECluster.Model.Layers;
using MoECluster.Model.Numerics;

namespace MoECluster.Model.Presets;

/// <summary>
/// Writes a synthetic checkpoint in the Hugging Face layout (config.json + model.safetensors, Nemotron-H tensor
/// names, BF16 weights, F32 gate bias), deterministic from a seed. Weights are uniform with std 1/√fan_in so
/// activations stay O(1) through every projection; norm weights are 1 ± 0.1; the correction bias ±0.05.
/// Each tensor is generated in 1 Mi-element chunks, each from its own seeded stream, in parallel: the bytes do
/// not depend on the number of cores.
/// </summary>
public static class SyntheticCheckpoint
{
    public const string SampleInputFile = "sample_input.safetensors";
    private const int ChunkElements = 1 << 20;

    /// <summary>Describes one synthetic tensor: its spec and how its values are drawn (or its fixed values: a fitted gate bias).</summary>
    private sealed record Draw(TensorSpec Spec, float Center, float HalfWidth)
    {
        public float[]? Values { get; init; }
    }

    public static IReadOnlyList<TensorSpec> Specs(MoeModelConfig config) => [.. Draws(config).Select(d => d.Spec)];

    /// <summary>
    /// Writes config.json and model.safetensors into <paramref name="directory"/>; with <paramref name="skew"/>, each
    /// layer's correction bias is fitted to its gate so that routing follows the skew (<see cref="GateSkew"/>).
    /// </summary>
    public static void Write(string directory, MoeModelConfig config, ulong seed, IProgress<(long Done, long Total)>? progress = null, GateSkew? skew = null)
    {
        config.Validate();
        Directory.CreateDirectory(directory);
        var draws = Draws(config).ToDictionary(d => d.Spec.Name);
        if (skew is not null)
        {
            foreach (int layer in config.MoeLayers)
            {
                float[] gate = Generate(draws[MoeTensorNames.Gate(layer)], seed);
                ushort[] bits = new ushort[gate.Length];
                ElementConversions.SingleToBFloat16(gate, bits);
                ElementConversions.ToSingle(DType.BF16, MemoryMarshal.AsBytes(bits.AsSpan()), gate); // as stored
                string bias = MoeTensorNames.GateBias(layer);
                draws[bias] = draws[bias] with { Values = skew.FitBias(config, gate, seed ^ (ulong)layer) };
            }
        }

        var specs = draws.Values.Select(d => d.Spec).ToList();
        long total = specs.Sum(s => s.ByteLength);
        long done = 0;
        var metadata = new Dictionary<string, string>
        {
            ["format"] = "pt",
            ["generator"] = "moecluster init-model",
            ["seed"] = seed.ToString(System.Globalization.CultureInfo.InvariantCulture),
            ["gate_skew"] = skew?.ToString() ?? "none",
        };
        SafetensorsWriter.Write(Path.Combine(directory, "model.safetensors"), specs, (spec, stream) =>
        {
            WriteTensor(draws[spec.Name], seed, stream);
            done += spec.ByteLength;
            progress?.Report((done, total));
        }, metadata);
        File.WriteAllText(Path.Combine(directory, "config.json"), config.ToJson());
    }

    /// <summary>True when <paramref name="directory"/> already holds the checkpoint this config, seed and skew would write.</summary>
    public static bool IsSame(string directory, MoeModelConfig config, ulong seed, GateSkew? skew = null)
    {
        string configPath = Path.Combine(directory, "config.json");
        string weights = Path.Combine(directory, "model.safetensors");
        if (!File.Exists(configPath) || !File.Exists(weights) || File.ReadAllText(configPath) != config.ToJson())
        {
            return false;
        }

        try
        {
            using var file = SafetensorsFile.Open(weights);
            return file.Metadata.TryGetValue("seed", out string? s)
                && s == seed.ToString(System.Globalization.CultureInfo.InvariantCulture)
                && (file.Metadata.TryGetValue("gate_skew", out string? k) ? k : "none") == (skew?.ToString() ?? "none")
                && file.Tensors.Select(t => t.Name).SequenceEqual(Specs(config).Select(t => t.Name));
        }
        catch (InvalidDataException)
        {
            return false;
        }
    }

    /// <summary>Writes a [tokens, d] F32 <c>hidden_states</c> tensor of standard normal values.</summary>
    public static void WriteSampleInput(string path, int hiddenSize, int tokens, ulong seed)
    {
        var rng = DeterministicRandom.For(seed, "sample_input");
        var values = new float[(long)tokens * hiddenSize];
        for (int i = 0; i < values.Length; i++)
        {
            values[i] = (float)rng.NextGaussian();
        }

        var spec = new TensorSpec("hidden_states", DType.F32, [tokens, hiddenSize]);
        SafetensorsWriter.Write(path, [(spec, (ReadOnlyMemory<byte>)MemoryMarshal.AsBytes(values.AsSpan()).ToArray())]);
    }

    private static IEnumerable<Draw> Draws(MoeModelConfig c)
    {
        int d = c.HiddenSize;
        int w = c.RoutedWidth;
        int m = c.MoeIntermediateSize;
        static float Std(int fanIn) => MathF.Sqrt(3f / fanIn);
        foreach (int layer in c.MoeLayers)
        {
            yield return new(new(MoeTensorNames.Norm(layer), DType.BF16, [d]), 1f, 0.1f);
            yield return new(new(MoeTensorNames.Gate(layer), DType.BF16, [c.NRoutedExperts, d]), 0f, Std(d));
            yield return new(new(MoeTensorNames.GateBias(layer), DType.F32, [c.NRoutedExperts]), 0f, 0.05f);
            if (c.MoeLatentSize is int l)
            {
                yield return new(new(MoeTensorNames.LatentDown(layer), DType.BF16, [l, d]), 0f, Std(d));
                yield return new(new(MoeTensorNames.LatentUp(layer), DType.BF16, [d, l]), 0f, Std(l));
            }

            for (int e = 0; e < c.NRoutedExperts; e++)
            {
                yield return new(new(MoeTensorNames.ExpertUp(layer, e), DType.BF16, [m, w]), 0f, Std(w));
                yield return new(new(MoeTensorNames.ExpertDown(layer, e), DType.BF16, [w, m]), 0f, Std(m));
            }

            if (c.HasSharedExpert)
            {
                int ms = c.MoeSharedExpertIntermediateSize;
                yield return new(new(MoeTensorNames.SharedUp(layer), DType.BF16, [ms, d]), 0f, Std(d));
                yield return new(new(MoeTensorNames.SharedDown(layer), DType.BF16, [d, ms]), 0f, Std(ms));
            }
        }
    }

    /// <summary>Every value of a drawn tensor, as <see cref="WriteTensor"/> draws them (before BF16 rounding).</summary>
    private static float[] Generate(Draw draw, ulong seed)
    {
        long elements = draw.Spec.ByteLength / DTypes.SizeOf(draw.Spec.DType);
        var values = new float[elements];
        for (long chunk = 0, start = 0; start < elements; chunk++, start += ChunkElements)
        {
            DrawChunk(draw, seed, chunk, values.AsSpan((int)start, (int)Math.Min(ChunkElements, elements - start)));
        }

        return values;
    }

    /// <summary>The values of chunk <paramref name="chunk"/> of a drawn tensor, from that chunk's own seeded stream.</summary>
    private static void DrawChunk(Draw draw, ulong seed, long chunk, Span<float> values)
    {
        var rng = DeterministicRandom.For(seed, draw.Spec.Name, chunk);
        for (int j = 0; j < values.Length; j++)
        {
            values[j] = draw.Center + rng.NextSymmetric(draw.HalfWidth);
        }
    }

    private static void WriteTensor(Draw draw, ulong seed, Stream stream)
    {
        if (draw.Values is float[] fixedValues)
        {
            if (draw.Spec.DType != DType.F32)
            {
                throw new InvalidOperationException($"fixed values are written as F32 only ({draw.Spec.Name} is {draw.Spec.DType})");
            }

            stream.Write(MemoryMarshal.AsBytes(fixedValues.AsSpan()));
            return;
        }

        long elements = draw.Spec.ByteLength / DTypes.SizeOf(draw.Spec.DType);
        int chunks = (int)((elements + ChunkElements - 1) / ChunkElements);
        int batch = Math.Max(1, Environment.ProcessorCount * 2);
        int elementSize = DTypes.SizeOf(draw.Spec.DType);
        var buffer = new byte[(long)Math.Min(chunks, batch) * ChunkElements * elementSize];
        for (int first = 0; first < chunks; first += batch)
        {
            int count = Math.Min(batch, chunks - first);
            Parallel.For(0, count, i =>
            {
                long chunk = first + i;
                long start = chunk * ChunkElements;
                int n = (int)Math.Min(ChunkElements, elements - start);
                var values = new float[n];
                DrawChunk(draw, seed, chunk, values);

                var target = buffer.AsSpan(i * ChunkElements * elementSize, n * elementSize);
                if (draw.Spec.DType == DType.BF16)
                {
                    ElementConversions.SingleToBFloat16(values, MemoryMarshal.Cast<byte, ushort>(target));
                }
                else
                {
                    MemoryMarshal.AsBytes(values.AsSpan()).CopyTo(target);
                }
            });
            long written = Math.Min((long)count * ChunkElements, elements - ((long)first * ChunkElements)) * elementSize;
            stream.Write(buffer, 0, (int)written);
        }
    }
}
