namespace MoECluster.Model.Checkpoints;

internal static class ShapeMath
{
    public static long ElementCount(IReadOnlyList<long> shape)
    {
        ArgumentNullException.ThrowIfNull(shape);
        long product = 1;
        for (int i = 0; i < shape.Count; i++)
        {
            long dim = shape[i];
            if (dim < 0)
            {
                throw new ArgumentException($"Shape dimension {i} is negative ({dim}).", nameof(shape));
            }

            product = checked(product * dim);
        }

        return product;
    }
}
