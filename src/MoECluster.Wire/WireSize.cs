namespace MoECluster.Wire;

/// <summary>Analytic sizes of wire payloads.</summary>
public static class WireSize
{
    /// <summary>Bytes of the raw element block of a [<paramref name="rows"/>, <paramref name="width"/>] activation in <paramref name="dtype"/>.</summary>
    public static long ActivationBytes(int rows, int width, WireDType dtype)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(rows);
        ArgumentOutOfRangeException.ThrowIfNegative(width);
        return WireCodecs.Get(dtype).PayloadBytes(rows, width);
    }
}
