namespace MoECluster.Testing;

/// <summary>
/// The name of the xunit collection of tests that measure wall-clock bounds on real processes (a restart within 15 s,
/// a worst latency within 5 s, a p99 within 1 s): each test assembly that has them defines the collection with
/// <c>DisableParallelization = true</c>, so they run one at a time after the assembly's other tests, not beside other
/// clusters of the same run. The README's test command runs one test assembly at a time (<c>-m:1</c>) for the same
/// reason: a bound measured on a 2-core machine must not be measured against another assembly's load.
/// </summary>
public static class TimingSensitive
{
    public const string Name = "timing-sensitive: one at a time, after the rest";
}
