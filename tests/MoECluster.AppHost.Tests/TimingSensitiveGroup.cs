using MoECluster.Testing;

namespace MoECluster.AppHost.Tests;

/// <summary>The launcher end to end (restarts within 15 s, the chaos run): one test at a time, after the assembly's other tests.</summary>
[CollectionDefinition(TimingSensitive.Name, DisableParallelization = true)]
public sealed class TimingSensitiveGroup;
