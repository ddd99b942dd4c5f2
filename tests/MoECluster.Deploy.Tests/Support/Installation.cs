using System.Security.Cryptography;
using MoECluster.Testing;

namespace MoECluster.Deploy.Tests.Support;

/// <summary>
/// deploy/install.sh run for real into a temporary root (DESTDIR-style, --root ... --no-user), from a stand-in
/// published directory: an executable `moecluster` script (which runs the real `moecluster tls` verb), a dll and a
/// native library in a subdirectory.
/// </summary>
public sealed class Installation : IDisposable
{
    public const string AdvertiseIp = "192.0.2.10";

    public const string Redis = "redis.test:6379";

    public const int Gpus = 2;

    private readonly TempDirectory _dir = new("moecluster-install-");

    public Installation()
    {
        Publish = Path.Combine(_dir.Path, "publish");
        Root = Path.Combine(_dir.Path, "root");
        Directory.CreateDirectory(Path.Combine(Publish, "runtimes", "linux-x64", "native"));
        // `moecluster tls ...` (install.sh makes the cluster's certificates with it) runs the real verb.
        WriteFile("moecluster", $"#!/bin/sh\nif [ \"$1\" = tls ]; then exec dotnet '{ChildProcess.CliDll}' \"$@\"; fi\necho \"stand-in moecluster $*\"\n", executable: true);
        WriteFile("moecluster.dll", "not really a dll\n");
        WriteFile("runtimes/linux-x64/native/libstandin.so", "not really a library\n");
    }

    public string Publish { get; }

    public string Root { get; }

    /// <summary>The path of an installed file (an absolute path of the target system) under the temporary root.</summary>
    public string Under(string absolute) => Root + absolute;

    public void WriteFile(string relative, string text, bool executable = false)
    {
        string path = Path.Combine(Publish, relative);
        File.WriteAllText(path, text);
        File.SetUnixFileMode(path, executable
            ? UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute | UnixFileMode.GroupRead | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherExecute
            : UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead);
    }

    /// <summary>Runs install.sh with <paramref name="args"/> (no --root: the caller says where).</summary>
    public static ChildProcess.Result Script(params string[] args) =>
        ChildProcess.Run("bash", [Repo.File("deploy", "install.sh"), .. args], TimeSpan.FromMinutes(1));

    /// <summary>install.sh into this root with the test settings; extra arguments come before the published directory.</summary>
    public ChildProcess.Result Install(params string[] extra) =>
        Script(["--root", Root, "--no-user", "--gpus", Gpus.ToString(System.Globalization.CultureInfo.InvariantCulture), "--advertise-ip", AdvertiseIp, "--redis", Redis, .. extra, Publish]);

    public ChildProcess.Result Uninstall(params string[] extra) => Script(["--uninstall", "--root", Root, .. extra]);

    /// <summary>Every entry under the root: path, kind, mode and (files) content hash.</summary>
    public IReadOnlyList<string> Snapshot()
    {
        if (!Directory.Exists(Root))
        {
            return [];
        }

        return Directory.EnumerateFileSystemEntries(Root, "*", SearchOption.AllDirectories)
            .Select(p =>
            {
                string relative = Path.GetRelativePath(Root, p);
                var info = new FileInfo(p);
                if (info.LinkTarget is not null)
                {
                    return $"{relative} -> {info.LinkTarget}";
                }

                string mode = Convert.ToString((int)File.GetUnixFileMode(p), 8);
                return Directory.Exists(p)
                    ? $"{relative}/ {mode}"
                    : $"{relative} {mode} {Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(p)))}";
            })
            .Order(StringComparer.Ordinal)
            .ToList();
    }

    public static string ModeOf(string path) => Convert.ToString((int)File.GetUnixFileMode(path), 8);

    public void Dispose() => _dir.Dispose();
}

/// <summary>One installation shared by the read-only checks of a test class.</summary>
public sealed class InstalledFixture : IDisposable
{
    public InstalledFixture()
    {
        Result = Installation.Install();
    }

    public Installation Installation { get; } = new();

    public ChildProcess.Result Result { get; }

    public void Dispose() => Installation.Dispose();
}
