namespace MoECluster.Cluster.Tests;

/// <summary>Fresh random hidden states for each test run (a failure message carries the seed to replay it).</summary>
internal static class TestInputs
{
    public static int NewSeed() => Random.Shared.Next();

    /// <summary>Standard normal values (Box-Muller), as the end-to-end tests draw them.</summary>
    public static float[] Gaussian(int count, int seed)
    {
        var rng = new Random(seed);
        return [.. Enumerable.Range(0, count).Select(_ => (float)(Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble())))];
    }
}
