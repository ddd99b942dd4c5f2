using MoECluster.AppHost.Model;

namespace Projects;

/// <summary>
/// The <c>moecluster</c> command (src/MoECluster.Cli), referenced by the launcher's project and built beside it (Aspire
/// generates such a type for every project an AppHost references).
/// </summary>
public sealed class MoECluster_Cli : IProjectMetadata
{
    public string AssemblyPath => Path.Combine(AppContext.BaseDirectory, "moecluster.dll");

    /// <summary><c>moecluster silo</c> and <c>prepare-models</c> stop when the process named here exits.</summary>
    public string? ParentProcessIdVariable => "MOECLUSTER_PARENT_PID";
}
