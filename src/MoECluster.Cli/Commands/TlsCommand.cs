using System.CommandLine;
using System.Globalization;
using System.Net;
using MoECluster.Cluster.Security;

namespace MoECluster.Cli.Commands;

/// <summary>
/// <c>moecluster tls init</c>: a cluster's CA and a node certificate (TLS server and client), made in .NET, written
/// as PEM with the names of a Kubernetes TLS Secret; <c>moecluster tls issue</c>: one more certificate from that CA
/// (a new node, an Orleans client, or a renewal).
/// </summary>
internal static class TlsCommand
{
    public static Command Create(TextWriter output, TextWriter error)
    {
        var command = new Command("tls", "Certificates for mutual TLS between silos and Orleans clients (init, issue).");
        command.Subcommands.Add(Init(output, error));
        command.Subcommands.Add(Issue(output, error));
        return command;
    }

    private static Command Init(TextWriter output, TextWriter error)
    {
        var dir = new Option<string>("--dir") { Description = "Where to write ca.crt, ca.key, tls.crt and tls.key.", Required = true };
        var names = new Option<string[]>("--name") { Description = "Also issue a certificate named NAME into DIR/NAME/ (tls.crt, tls.key, ca.crt); repeatable.", AllowMultipleArgumentsPerToken = false };
        var (days, dns, ips, force) = CommonOptions();
        var command = new Command("init", "Make a cluster CA (ca.crt, ca.key) and a node certificate it issues (tls.crt, tls.key), usable as TLS server and client.")
        {
            dir, names, days, dns, ips, force,
        };
        command.SetAction(parse => VerbRunner.Guard("tls init", error, () =>
        {
            string directory = Path.GetFullPath(parse.GetValue(dir)!);
            string[] extra = parse.GetValue(names) ?? [];
            TimeSpan lifetime = Lifetime(parse.GetValue(days));
            var (dnsNames, addresses) = Names(parse.GetValue(dns), parse.GetValue(ips));
            extra.ToList().ForEach(CheckName);
            string[] targets = [
                ClusterTlsOptions.CaFileName, ClusterCertificates.CaKeyFileName, ClusterTlsOptions.CertificateFileName, ClusterTlsOptions.KeyFileName,
                .. extra.SelectMany(n => new[] { Path.Combine(n, ClusterTlsOptions.CertificateFileName), Path.Combine(n, ClusterTlsOptions.KeyFileName) })];
            RefuseOverwrite(directory, targets, parse.GetValue(force));
            var now = DateTimeOffset.UtcNow;
            ClusterCertificates.WriteNewCluster(directory, "moecluster-node", lifetime, now);
            if (dnsNames.Count > 0 || addresses.Count > 0)
            {
                ClusterCertificates.WriteIssued(directory, directory, "moecluster-node", lifetime, now, dnsNames, addresses);
            }

            foreach (string name in extra)
            {
                ClusterCertificates.WriteIssued(directory, Path.Combine(directory, name), name, lifetime, now, dnsNames, addresses);
            }

            output.WriteLine($"wrote {Path.Combine(directory, ClusterTlsOptions.CaFileName)}: the cluster CA certificate (every node and client trusts it)");
            output.WriteLine($"wrote {Path.Combine(directory, ClusterCertificates.CaKeyFileName)}: the CA private key (mode 0600; only for `moecluster tls issue`: keep it off the nodes)");
            output.WriteLine($"wrote {Path.Combine(directory, ClusterTlsOptions.CertificateFileName)}, {ClusterTlsOptions.KeyFileName}: a node certificate (TLS server + client, {lifetime.TotalDays:F0} days; key mode 0600)");
            foreach (string name in extra)
            {
                output.WriteLine($"wrote {Path.Combine(directory, name)}/: tls.crt, tls.key, ca.crt for '{name}'");
            }

            output.WriteLine($"use: MoECluster__Tls__CertificatePath={Path.Combine(directory, ClusterTlsOptions.CertificateFileName)} MoECluster__Tls__KeyPath={Path.Combine(directory, ClusterTlsOptions.KeyFileName)} MoECluster__Tls__CaPath={Path.Combine(directory, ClusterTlsOptions.CaFileName)}");
            return CliApp.ExitOk;
        }));
        return command;
    }

    private static Command Issue(TextWriter output, TextWriter error)
    {
        var dir = new Option<string>("--dir") { Description = "The directory of the CA: ca.crt and ca.key (as tls init wrote them).", Required = true };
        var name = new Option<string>("--name") { Description = "The certificate's name (its common name); also the output directory's name under --dir unless --out is given.", Required = true };
        var outDir = new Option<string?>("--out") { Description = "Where to write tls.crt, tls.key and ca.crt (default DIR/NAME)." };
        var (days, dns, ips, force) = CommonOptions();
        var command = new Command("issue", "Issue one more certificate (TLS server + client) from the CA in --dir: a new node, an Orleans client, a renewal.")
        {
            dir, name, outDir, days, dns, ips, force,
        };
        command.SetAction(parse => VerbRunner.Guard("tls issue", error, () =>
        {
            string directory = Path.GetFullPath(parse.GetValue(dir)!);
            string n = parse.GetValue(name)!;
            CheckName(n);
            string target = Path.GetFullPath(parse.GetValue(outDir) ?? Path.Combine(directory, n));
            foreach (string file in new[] { ClusterTlsOptions.CaFileName, ClusterCertificates.CaKeyFileName })
            {
                if (!File.Exists(Path.Combine(directory, file)))
                {
                    throw new UsageException($"{Path.Combine(directory, file)} does not exist: --dir must hold the CA (moecluster tls init --dir {directory} makes one)");
                }
            }

            RefuseOverwrite(target, [ClusterTlsOptions.CertificateFileName, ClusterTlsOptions.KeyFileName], parse.GetValue(force));
            TimeSpan lifetime = Lifetime(parse.GetValue(days));
            var (dnsNames, addresses) = Names(parse.GetValue(dns), parse.GetValue(ips));
            try
            {
                ClusterCertificates.WriteIssued(directory, target, n, lifetime, DateTimeOffset.UtcNow, dnsNames, addresses);
            }
            catch (System.Security.Cryptography.CryptographicException e)
            {
                throw new UsageException($"cannot use the CA in {directory}: {e.Message}");
            }

            output.WriteLine($"wrote {target}/: tls.crt, tls.key (mode 0600), ca.crt for '{n}' ({lifetime.TotalDays:F0} days)");
            return CliApp.ExitOk;
        }));
        return command;
    }

    private static (Option<int> Days, Option<string[]> Dns, Option<string[]> Ips, Option<bool> Force) CommonOptions() => (
        new Option<int>("--days") { Description = "Validity of the issued certificates, in days (the CA: 3650).", DefaultValueFactory = _ => (int)ClusterCertificates.DefaultLifetime.TotalDays },
        new Option<string[]>("--dns") { Description = "An extra DNS name in the certificates (subject alternative name); repeatable. Peers are not checked against names: the CA is the trust boundary.", AllowMultipleArgumentsPerToken = false },
        new Option<string[]>("--ip") { Description = "An extra IP address in the certificates; repeatable.", AllowMultipleArgumentsPerToken = false },
        new Option<bool>("--force") { Description = "Replace existing files (nodes holding the old ones then stop trusting or being trusted)." });

    private static TimeSpan Lifetime(int days) =>
        days is >= 1 and <= 3650 ? TimeSpan.FromDays(days) : throw new UsageException($"--days = {days} is out of range: must be 1..3650");

    private static (List<string> Dns, List<IPAddress> Ips) Names(string[]? dns, string[]? ips)
    {
        var addresses = new List<IPAddress>();
        foreach (string ip in ips ?? [])
        {
            addresses.Add(IPAddress.TryParse(ip, out var a) ? a : throw new UsageException($"--ip {ip} is not an IP address"));
        }

        foreach (string d in dns ?? [])
        {
            if (Uri.CheckHostName(d) != UriHostNameType.Dns)
            {
                throw new UsageException($"--dns {d} is not a DNS name");
            }
        }

        return ([.. dns ?? []], addresses);
    }

    private static void CheckName(string name)
    {
        if (name.Length is 0 or > 64 || !name.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.') || name.StartsWith('.'))
        {
            throw new UsageException($"--name {name}: use 1..64 letters, digits, '-', '_' or '.' (not starting with '.')");
        }
    }

    private static void RefuseOverwrite(string directory, IEnumerable<string> files, bool force)
    {
        if (force)
        {
            return;
        }

        string? existing = files.Select(f => Path.Combine(directory, f)).FirstOrDefault(File.Exists);
        if (existing is not null)
        {
            throw new UsageException(string.Create(CultureInfo.InvariantCulture,
                $"{existing} exists; refusing to overwrite it (--force replaces the files: nodes holding the old ones then need the new ones)"));
        }
    }
}
