using System.Globalization;
using System.Runtime.InteropServices;
using MoECluster.Model.Compute;
using MoECluster.Model.Checkpoints;
using MoECluster.Model.Numerics;
using MoECluster.Testing;

namespace MoECluster.Kernels.Tests.Cpu;

/// <summary>
/// A random weight written to a real safetensors file in a given dtype and opened as a memory-mapped
/// <see cref="WeightMatrix"/>; <see cref="Values"/> holds the fp32 values the stored elements stand for.
/// </summary>
internal sealed class CheckpointWeight : IDisposable
{
    private readonly TempDirectory _directory = new("moecluster-kernels-");
    private readonly SafetensorsFile _file;

    public CheckpointWeight(DType dtype, int rows, int cols, int seed)
    {
        var rng = new Random(seed);
        float[] values = Random(rng, rows * cols);
        byte[] bytes;
        switch (dtype)
        {
            case DType.BF16:
                var bf16 = new ushort[values.Length];
                ElementConversions.SingleToBFloat16(values, bf16);
                bytes = MemoryMarshal.AsBytes(bf16.AsSpan()).ToArray();
                break;
            case DType.F16:
                var f16 = new ushort[values.Length];
                ElementConversions.SingleToHalf(values, f16);
                bytes = MemoryMarshal.AsBytes(f16.AsSpan()).ToArray();
                break;
            case DType.F32:
                bytes = MemoryMarshal.AsBytes(values.AsSpan()).ToArray();
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "BF16, F16 or F32");
        }

        string path = _directory.File("weight.safetensors");
        SafetensorsWriter.Write(path, [(new TensorSpec("w", dtype, [rows, cols]), (ReadOnlyMemory<byte>)bytes)]);
        _file = SafetensorsFile.Open(path);
        Matrix = new WeightMatrix(new TensorRef(_file, _file.GetTensor("w")), rows, cols);
        Values = new float[rows * cols];
        for (int r = 0; r < rows; r++)
        {
            Matrix.ReadRow(r, Values.AsSpan(r * cols, cols));
        }
    }

    public WeightMatrix Matrix { get; }

    /// <summary>The stored weights widened to fp32, row-major [rows, cols].</summary>
    public float[] Values { get; }

    /// <summary>Uniform values in [-1, 1).</summary>
    public static float[] Random(Random rng, int count)
    {
        var values = new float[count];
        for (int i = 0; i < count; i++)
        {
            values[i] = (float)((rng.NextDouble() * 2) - 1);
        }

        return values;
    }

    /// <summary>y[t, o] = Σ_i W[o, i]·x[t, i] in plain fp64 loops.</summary>
    public static double[] Reference(float[] w, int rows, int cols, float[] x, int tokens)
    {
        var y = new double[tokens * rows];
        for (int t = 0; t < tokens; t++)
        {
            for (int o = 0; o < rows; o++)
            {
                double sum = 0;
                for (int i = 0; i < cols; i++)
                {
                    sum += (double)w[(o * cols) + i] * x[(t * cols) + i];
                }

                y[(t * rows) + o] = sum;
            }
        }

        return y;
    }
    /// <summary>
    /// Runs <paramref name="backend"/>'s Linear over fresh random inputs of each token count and checks that every output
    /// element was written and that the result is within <paramref name="tolerance"/> of the fp64 reference of <see cref="Values"/>.
    /// </summary>
    public void AssertLinearMatchesReference(IComputeBackend backend, IPreparedLinear prepared, IEnumerable<int> tokenCounts, Random rng, string label, double tolerance)
    {
        int n = Matrix.Rows, k = Matrix.Cols;
        foreach (int tokens in tokenCounts)
        {
            float[] x = Random(rng, tokens * k);
            float[] y = new float[tokens * n];
            y.AsSpan().Fill(float.NaN);

            backend.Linear(prepared, x, tokens, y);

            string shape = string.Create(CultureInfo.InvariantCulture, $"{label} T={tokens} K={k} N={n}");
            Assert.True(Array.TrueForAll(y, float.IsFinite), $"{shape}: an output element was not written");
            double error = Metrics.RelativeError(y, Reference(Values, n, k, x, tokens));
            Assert.True(error <= tolerance, $"{shape}: relative error {error}");
        }
    }

    public void Dispose()
    {
        _file.Dispose();
        _directory.Dispose();
    }
}
