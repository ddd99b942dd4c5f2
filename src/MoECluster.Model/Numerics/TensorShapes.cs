namespace MoECluster.Model.Numerics;

public static class TensorShapes
{
    public static string Format(IReadOnlyList<long> shape) => $"[{string.Join(", ", shape)}]";
}
