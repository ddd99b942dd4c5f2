using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.Json;
using MoECluster.Model.Checkpoints;

namespace MoECluster.Testing;

/// <summary>
/// A checkpoint, input and float64 expected outputs written by the independent numpy implementation
/// (tests/tools/independent_moe.py, run with Debian's /usr/bin/python3 and python3-numpy).
/// </summary>
public sealed record IndependentModel(string Directory, int Seed, int[] MoeLayers, int HiddenSize)
{
    public const string Python = "/usr/bin/python3";

    public string ModelPath => Path.Combine(Directory, "model");

    public string InputPath => Path.Combine(Directory, "input.safetensors");

    public string ExpectedPath => Path.Combine(Directory, "expected.safetensors");

    public static string Script
    {
        get
        {
            var dir = new DirectoryInfo(AppContext.BaseDirectory);
            while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "MoECluster.sln")))
            {
                dir = dir.Parent;
            }

            return Path.Combine(dir?.FullName ?? throw new InvalidOperationException("repository root not found"), "tests", "tools", "independent_moe.py");
        }
    }

    public static IndependentModel Generate(string directory, string flags)
    {
        int seed = Random.Shared.Next(1, int.MaxValue);
        var gen = ChildProcess.Run(Python, [Script, "--out", directory, "--seed", seed.ToString(CultureInfo.InvariantCulture), .. flags.Split(' ', StringSplitOptions.RemoveEmptyEntries)]);
        if (gen.ExitCode != 0)
        {
            throw new InvalidOperationException($"the independent generator failed (is python3-numpy installed?): {gen}");
        }

        using var summary = JsonDocument.Parse(gen.Stdout.Trim().Split('\n')[^1]);
        int[] layers = [.. summary.RootElement.GetProperty("moe_layers").EnumerateArray().Select(e => e.GetInt32())];
        return new IndependentModel(directory, seed, layers, summary.RootElement.GetProperty("d").GetInt32());
    }

    /// <summary>"layer_N" or "stack" from expected.safetensors, in float64.</summary>
    public double[] Expected(string name)
    {
        using var file = SafetensorsFile.Open(ExpectedPath);
        var info = file.GetTensor(name);
        if (info.DType != DType.F64)
        {
            throw new InvalidDataException($"{name} is {info.DType}, expected F64");
        }

        return MemoryMarshal.Cast<byte, double>(file.GetBytes(info)).ToArray();
    }

    /// <summary>The F32 'hidden_states' that <c>moecluster forward</c> wrote.</summary>
    public static float[] ReadOutput(string path)
    {
        using var file = SafetensorsFile.Open(path);
        var info = file.GetTensor("hidden_states");
        return new TensorRef(file, info).ReadAllAsFloat32();
    }
}
