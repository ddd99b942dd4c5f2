using System.CommandLine;
using MoECluster.Cli.LocalCluster;
using MoECluster.Model.Presets;

namespace MoECluster.Cli.Commands;

/// <summary>
/// <c>moecluster prepare-models</c> (hidden; the launcher's one-shot <c>models</c> resource): writes the standard +
/// latent pair of a preset into <c>&lt;models-dir&gt;/&lt;preset&gt;-&lt;experts&gt;x&lt;layers&gt;</c> unless it is already
/// there (same config and seed), exactly as <c>moecluster run</c> does, and prints one <c>ID=DIR</c> line per model.
/// </summary>
internal static class PrepareModelsCommand
{
    public static Command Create(TextWriter output, TextWriter error)
    {
        var preset = new Option<string>("--preset") { Description = "Model pair: tiny, super (Nemotron-3 Super widths) or paper16b.", DefaultValueFactory = _ => "super" };
        preset.AcceptOnlyFromAmong([.. ModelPairs.Names]);
        var experts = new Option<int?>("--experts") { Description = "Routed experts per layer (default: the preset's)." };
        var layers = new Option<int>("--layers") { Description = "MoE layers.", DefaultValueFactory = _ => 1 };
        var modelsDir = new Option<string>("--models-dir") { Description = "Where the models are written (and reused).", DefaultValueFactory = _ => "models" };
        var seed = new Option<ulong>("--seed") { Description = "Seed of the generated models.", DefaultValueFactory = _ => 1UL };
        var skew = new Option<string?>("--gate-skew") { Description = "Skewed routing (zipf:S), as init-model --gate-skew." };
        var parentPid = new Option<int?>("--parent-pid") { Description = "Stop when this process exits (default: $MOECLUSTER_PARENT_PID)." };
        var command = new Command("prepare-models", "Generate the served model pair of a preset if it is missing (used by the launcher).")
        {
            preset, experts, layers, modelsDir, seed, parentPid, skew,
        };
        command.Hidden = true;
        command.SetAction(parse => VerbRunner.Guard("prepare-models", error, () =>
        {
            if (ParentProcess.Resolve(parse.GetValue(parentPid)) is int pid)
            {
                ParentProcess.ExitWithParent(pid, error);
            }

            int l = parse.GetValue(layers);
            if (l < 1 || l > 200)
            {
                throw new UsageException($"--layers = {l} is out of range: must be 1..200");
            }

            var members = ModelPairs.Plan(parse.GetValue(preset)!, parse.GetValue(experts), l, parse.GetValue(modelsDir)!,
                parse.GetValue(skew) is string text ? InitModelCommand.ParseSkew(text) : null);
            foreach (var (id, path) in ModelPreparation.Prepare(members, parse.GetValue(seed), output, progress: output))
            {
                output.WriteLine($"{id}={path}");
            }

            return CliApp.ExitOk;
        }));
        return command;
    }
}
