namespace MoECluster.Model.Numerics;

public static class Activations
{
    /// <summary>relu(x)² in place (Nemotron-H's "relu2").</summary>
    public static void Relu2(Span<float> values)
    {
        for (int i = 0; i < values.Length; i++)
        {
            float v = values[i] > 0f ? values[i] : 0f;
            values[i] = v * v;
        }
    }
}
