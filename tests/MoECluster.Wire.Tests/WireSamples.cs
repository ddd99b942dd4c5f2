using MoECluster.Model.Dispatch;

namespace MoECluster.Wire.Tests;

/// <summary>Valid requests and responses on fresh random values, for tests to round-trip or to break.</summary>
internal sealed class WireSamples
{
    public const string Model = "moe-test-model";
    public const int Layer = 3;
    public const int FirstExpert = 16;
    public const int ExpertCount = 16;

    /// <summary>The sample shard's experts: [FirstExpert, FirstExpert + ExpertCount), unless a request names others.</summary>
    public static readonly int[] ShardExperts = [.. Enumerable.Range(FirstExpert, ExpertCount)];

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

    /// <summary>
    /// A routed request: each row gets 1..4 distinct experts of the shard (<paramref name="shard"/>, ascending, or
    /// <see cref="ShardExperts"/>) with positive weights.
    /// </summary>
    public (ShardRequest Request, float[] Rows, RoutedPairs Pairs) Request(
        int rows, int width, WireDType dtype, WireDType responseDType = WireDType.F32, string model = Model, int[]? shard = null)
    {
        shard ??= ShardExperts;
        float[] values = Values(rows * width);
        var offsets = new int[rows + 1];
        var experts = new List<int>();
        var weights = new List<float>();
        for (int r = 0; r < rows; r++)
        {
            int count = Random.Next(1, Math.Min(4, shard.Length) + 1);
            offsets[r + 1] = offsets[r] + count;
            foreach (int e in shard.OrderBy(_ => Random.Next()).Take(count))
            {
                experts.Add(e);
                weights.Add((float)Random.NextDouble());
            }
        }

        var pairs = new RoutedPairs(offsets, [.. experts], [.. weights]);
        ShardRequest request = WireFormat.BuildRequest(
            model, Layer, shard, values, width, dtype, pairs, responseDType, Random.NextInt64());
        return (request, values, pairs);
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
