namespace MoECluster.Model.Balancing;

/// <summary>Load arithmetic shared by the planner and the reports.</summary>
public static class ExpertLoad
{
    /// <summary>The largest value over the mean (1: even; 1 when nothing was measured).</summary>
    public static double Imbalance(IEnumerable<double> values)
    {
        ArgumentNullException.ThrowIfNull(values);
        double[] v = [.. values];
        double mean = v.Length == 0 ? 0 : v.Average();
        return mean > 0 ? v.Max() / mean : 1;
    }
}
