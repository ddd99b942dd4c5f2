using MoECluster.Testing;

namespace MoECluster.EndToEnd.Tests;

/// <summary>Fault and attack tests with wall-clock bounds: run one at a time, after the assembly's other tests.</summary>
[CollectionDefinition(TimingSensitive.Name, DisableParallelization = true)]
public sealed class TimingSensitiveGroup;
