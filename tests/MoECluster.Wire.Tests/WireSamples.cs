namespace MoECluster.Wire.Tests;

/// <summary>Valid requests and responses on fresh random values, for tests to round-trip or to break.</summary>
internal sealed class WireSamples
{
    public const string Model = "moe-test-model";
    public const int Layer = 3;
    public const int FirstExpert = 16;
    public const int ExpertCount = 16;

    public WireSamples(int? seed = null)
    {
        Seed = seed ?? Random.Shared.Next();
        Random = new Random(Seed);
    }

    /// <summary>The seed of this sample set: failure messages print it so a failing run can be replayed.</summary>
    public int Seed { get; }

    public Random Random { get; }

    public float[] Values(int count, float scale = 4f)
    {
        var values = new float[count];
        for (int i = 0; i < count; i++)
        {
            // Mixed magnitudes and signs, as activations have.
            values[i] = (float)((Random.NextDouble() * 2) - 1) * scale * MathF.Pow(2, Random.Next(-6, 7));
        }

        return values;
    }

    /// <summary>A routed request: each row gets 1..4 distinct experts of this shard with positive weights.</summary>
    public (ShardRequest Request, float[] Rows, byte[] Counts, ushort[] Experts, float[] Weights) Request(
        int rows, int width, WireDType dtype, WireDType responseDType = WireDType.F32, string model = Model)
    {
        float[] values = Values(rows * width);
        var counts = new byte[rows];
        var experts = new List<ushort>();
        var weights = new List<float>();
        for (int r = 0; r < rows; r++)
        {
            counts[r] = (byte)Random.Next(1, 5);
            foreach (int e in Enumerable.Range(FirstExpert, ExpertCount).OrderBy(_ => Random.Next()).Take(counts[r]))
            {
                experts.Add((ushort)e);
                weights.Add((float)Random.NextDouble());
            }
        }

        ShardRequest request = WireFormat.BuildRequest(
            model, Layer, FirstExpert, ExpertCount, values, rows, width, dtype, counts, [.. experts], [.. weights],
            responseDType, Random.NextInt64());
        return (request, values, counts, [.. experts], [.. weights]);
    }

    public ShardRequest SmallRequest() => Request(rows: 8, width: 16, WireDType.F32).Request;

    public ShardResponse Response(int rows, int width, WireDType dtype) => new()
    {
        Partials = ActivationBlock.Encode(Values(rows * width), rows, width, dtype),
        Silo = "silo-a:11111",
        RequestId = Random.NextInt64(),
        ComputeMicroseconds = Random.Next(0, 1_000_000),
    };
}
