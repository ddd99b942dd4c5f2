using System.CommandLine;
using MoECluster.Cli.Commands;

namespace MoECluster.Cli;

/// <summary>The <c>moecluster</c> command line. Bad input: one line on stderr naming what is wrong, exit code 2.</summary>
public static class CliApp
{
    public const int ExitOk = 0;
    public const int ExitUsage = 2;
    public const int ExitFailure = 1;

    public static int Run(string[] args, TextWriter output, TextWriter error)
    {
        var root = new RootCommand("MoECluster: LatentMoE and standard MoE layers, in process and on an Orleans cluster.")
        {
            ForwardCommand.Create(output, error),
            InitModelCommand.Create(output, error),
            InfoCommand.Create(output, error),
            SiloCommand.Create(output, error),
            RunCommand.Create(output, error),
            BenchCommand.Create(output, error),
            LoadCommand.Create(output, error),
            ProbeCommand.Create(output, error),
            PrepareModelsCommand.Create(output, error),
            ChaosCommand.Create(output, error),
            TlsCommand.Create(output, error),
            WarmupCommand.Create(output, error),
            CostCommand.Create(output, error),
        };

        ParseResult parsed = root.Parse(args);
        if (parsed.Errors.Count > 0)
        {
            string verb = parsed.CommandResult.Command == root ? "moecluster" : $"moecluster {parsed.CommandResult.Command.Name}";
            string message = string.Join(' ', parsed.Errors[0].Message.Split(['\r', '\n', '\t'], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
            error.WriteLine($"{verb}: error: {message} (see '{verb} --help')");
            return ExitUsage;
        }

        // Ctrl+C / SIGTERM cancel the verb's token; `run` then stops its silos, which can take a few seconds.
        return parsed.Invoke(new InvocationConfiguration { Output = output, Error = error, EnableDefaultExceptionHandler = false, ProcessTerminationTimeout = TimeSpan.FromSeconds(30) });
    }
}
