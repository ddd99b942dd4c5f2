using System.Buffers.Binary;
using MoECluster.Model.Checkpoints;
using MoECluster.Model.Numerics;
using MoECluster.Testing;

namespace MoECluster.Kernels.Gpu.Tests;

/// <summary>Weight matrices written to a temporary safetensors file and mapped back, as the model loads them.</summary>
internal sealed class TestWeights : IDisposable
{
    private readonly TempDirectory _dir = new("moecluster-gpu-test-");
    private readonly List<(TensorSpec Spec, byte[] Data)> _pending = [];
    private SafetensorsFile? _file;

    /// <summary>Adds a [rows, cols] tensor of random values exactly representable in <paramref name="dtype"/>; returns its fp32 values.</summary>
    public float[] Add(string name, DType dtype, int rows, int cols, Random rng, double scale = 1.0)
    {
        var values = new float[rows * cols];
        for (int i = 0; i < values.Length; i++)
        {
            values[i] = Representable(dtype, (float)(((rng.NextDouble() * 2) - 1) * scale));
        }

        _pending.Add((new TensorSpec(name, dtype, [rows, cols]), Encode(dtype, values)));
        return values;
    }

    /// <summary>Writes the file (once) and returns the named tensor as a weight.</summary>
    public WeightMatrix Get(string name)
    {
        if (_file is null)
        {
            string path = _dir.File("weights.safetensors");
            SafetensorsWriter.Write(path, [.. _pending.Select(p => (p.Spec, (ReadOnlyMemory<byte>)p.Data))]);
            _file = SafetensorsFile.Open(path);
        }

        TensorInfo info = _file.GetTensor(name);
        return new WeightMatrix(new TensorRef(_file, info), (int)info.Shape[0], (int)info.Shape[1]);
    }

    public void Dispose()
    {
        _file?.Dispose();
        _dir.Dispose();
    }

    private static float Representable(DType dtype, float v) => dtype switch
    {
        DType.BF16 => BitConverter.UInt32BitsToSingle(BitConverter.SingleToUInt32Bits(v) & 0xFFFF_0000u),
        DType.F16 => (float)(Half)v,
        _ => v,
    };

    private static byte[] Encode(DType dtype, float[] values)
    {
        int size = DTypes.SizeOf(dtype);
        var bytes = new byte[values.Length * size];
        for (int i = 0; i < values.Length; i++)
        {
            Span<byte> slot = bytes.AsSpan(i * size, size);
            switch (dtype)
            {
                case DType.F32:
                    BinaryPrimitives.WriteSingleLittleEndian(slot, values[i]);
                    break;
                case DType.F64:
                    BinaryPrimitives.WriteDoubleLittleEndian(slot, values[i]);
                    break;
                case DType.F16:
                    BinaryPrimitives.WriteHalfLittleEndian(slot, (Half)values[i]);
                    break;
                case DType.BF16:
                    BinaryPrimitives.WriteUInt16LittleEndian(slot, (ushort)(BitConverter.SingleToUInt32Bits(values[i]) >> 16));
                    break;
                default:
                    throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "not a float dtype");
            }
        }

        return bytes;
    }
}

internal static class Fp64
{
    public static float[] RandomVector(Random rng, int length, double scale = 1.0) =>
        [.. Enumerable.Range(0, length).Select(_ => (float)(((rng.NextDouble() * 2) - 1) * scale))];

    /// <summary>y[t, o] = Σ_i w[o, i] · x[t, i] in fp64.</summary>
    public static double[] Linear(float[] w, int rows, int cols, float[] x, int tokens)
    {
        var y = new double[tokens * rows];
        for (int t = 0; t < tokens; t++)
        {
            for (int o = 0; o < rows; o++)
            {
                double s = 0;
                for (int i = 0; i < cols; i++)
                {
                    s += (double)w[(o * cols) + i] * x[(t * cols) + i];
                }

                y[(t * rows) + o] = s;
            }
        }

        return y;
    }

    public static double[] Relu2(double[] h) => [.. h.Select(v => v > 0 ? v * v : 0)];

    public static float[] ToFloat(double[] v) => [.. v.Select(d => (float)d)];
    public static int NewSeed() => Random.Shared.Next();
}
