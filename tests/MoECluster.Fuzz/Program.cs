using System.Globalization;
using MoECluster.Fuzz;

// moecluster-fuzz: long local fuzz runs of the decoders.
//   dotnet run --project tests/MoECluster.Fuzz -c Release -- list
//   dotnet run --project tests/MoECluster.Fuzz -c Release -- run all --iterations 10000000 [--seed N] [--out DIR]
//   dotnet run --project tests/MoECluster.Fuzz -c Release -- run shard-request --seconds 3600
//   libFuzzer through SharpFuzz (instrument the decoders first; see docs/RELIABILITY.md):
//   libfuzzer-dotnet --target_path=.../MoECluster.Fuzz -- libfuzzer shard-request   (or: ... libfuzzer shard-request corpus/)
using var targets = new FuzzTargets();
if (args.Length == 0 || args[0] is "-h" or "--help")
{
    Console.WriteLine("usage: MoECluster.Fuzz list | run <target|all> [--iterations N] [--seconds S] [--seed N] [--out DIR] | libfuzzer <target> | seeds <target> <DIR>");
    return 0;
}

switch (args[0])
{
    case "list":
        foreach (FuzzTarget target in targets.All)
        {
            Console.WriteLine($"{target.Name,-24} {target.Description} (refusals: {target.Refusals})");
        }

        return 0;

    case "seeds" when args.Length == 3:
    {
        // A starting corpus for libFuzzer or AFL: the valid samples, one file each.
        FuzzTarget target = targets.Get(args[1]);
        Directory.CreateDirectory(args[2]);
        for (int i = 0; i < target.Seeds.Count; i++)
        {
            File.WriteAllBytes(Path.Combine(args[2], $"seed-{i}"), target.Seeds[i]);
        }

        return 0;
    }

    case "libfuzzer" when args.Length >= 2:
    {
        FuzzTarget target = targets.Get(args[1]);
        SharpFuzz.Fuzzer.LibFuzzer.Run(span =>
        {
            // Refusals are the documented answer to bad input; anything else propagates and libFuzzer records a crash.
            byte[] input = span.ToArray();
            try
            {
                target.Decode(input);
            }
            catch (Exception e) when (target.IsRefusal(e))
            {
            }
        });
        return 0;
    }

    case "run" when args.Length >= 2:
    {
        long iterations = long.Parse(Option("--iterations") ?? "1000000", CultureInfo.InvariantCulture);
        double? seconds = Option("--seconds") is { } s ? double.Parse(s, CultureInfo.InvariantCulture) : null;
        int seed = Option("--seed") is { } text ? int.Parse(text, CultureInfo.InvariantCulture) : Random.Shared.Next();
        string output = Option("--out") ?? "fuzz-findings";
        var chosen = args[1] == "all" ? targets.All : [targets.Get(args[1])];
        int findings = 0;
        foreach (FuzzTarget target in chosen)
        {
            var deadline = seconds is double limit ? DateTime.UtcNow.AddSeconds(limit) : DateTime.MaxValue;
            int round = 0;
            do
            {
                // In rounds of a million, so that --seconds can stop a run and each round reports.
                long count = seconds is null ? iterations : 1_000_000;
                FuzzReport report = FuzzRunner.Run(target, count, seed + round, finding =>
                {
                    Directory.CreateDirectory(output);
                    string file = Path.Combine(output, $"{target.Name}-{finding.Kind}-{Interlocked.Increment(ref findings)}.bin");
                    File.WriteAllBytes(file, finding.Input);
                    Console.Error.WriteLine($"{finding.Kind}: {file}: {finding.Detail.Split('\n')[0]}");
                });
                Console.WriteLine(report.Summary);
                round++;
            }
            while (seconds is not null && DateTime.UtcNow < deadline);
        }

        return findings == 0 ? 0 : 1;
    }

    default:
        Console.Error.WriteLine($"MoECluster.Fuzz: unknown command '{string.Join(' ', args)}' (try --help)");
        return 2;
}

string? Option(string name)
{
    int at = Array.IndexOf(args, name);
    return at >= 0 && at + 1 < args.Length ? args[at + 1] : null;
}
