using System.Security.Authentication;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Orleans.Connections.Security;

namespace MoECluster.Cluster.Security;

/// <summary>
/// A process's TLS material, loaded and checked: its certificate (with private key) and the cluster's CA
/// certificates. It validates peers itself: a peer's certificate must chain to one of the configured CAs and to
/// nothing else (<see cref="X509ChainTrustMode.CustomRootTrust"/>: the system's trust store plays no part), be within
/// its validity period, carry the extended key usage of its side (client authentication for a peer that connected
/// to us, server authentication for a peer we connected to), the digital signature key usage, and not be a CA.
/// Host names are not checked: silos are reached by IP address and every holder of a certificate from the cluster's
/// CA is a member of the cluster (the CA is the boundary).
/// </summary>
public sealed partial class ClusterTls : IDisposable
{
    public const string ServerAuthOid = "1.3.6.1.5.5.7.3.1";
    public const string ClientAuthOid = "1.3.6.1.5.5.7.3.2";

    private const string MakeThem = "make them with `moecluster tls init --dir DIR` and set MoECluster__Tls__Directory=DIR, or turn TLS off explicitly with MoECluster__Tls__Enabled=false (then anyone who reaches the Orleans ports can join)";

    private readonly ClusterTlsOptions _options;

    private ClusterTls(X509Certificate2 certificate, X509Certificate2Collection authorities, ClusterTlsOptions options)
    {
        Certificate = certificate;
        Authorities = authorities;
        _options = options;
    }

    /// <summary>This process's certificate, with its private key.</summary>
    public X509Certificate2 Certificate { get; }

    /// <summary>The trust anchors: the cluster's CA certificate(s).</summary>
    public X509Certificate2Collection Authorities { get; }

    /// <summary>The options of "MoECluster:Tls" in <paramref name="configuration"/>.</summary>
    public static ClusterTlsOptions BindOptions(IConfiguration configuration)
    {
        var options = new ClusterTlsOptions();
        configuration.GetSection(ClusterTlsOptions.Section).Bind(options);
        return options;
    }

    /// <summary>The material "MoECluster:Tls" names, or null when TLS is turned off; <see cref="InvalidOperationException"/> with one line that says which file, why, and how to make it.</summary>
    public static ClusterTls? FromConfiguration(IConfiguration configuration)
    {
        var options = BindOptions(configuration);
        return options.Enabled ? Load(options) : null;
    }

    /// <summary>Loads and checks the files; throws <see cref="InvalidOperationException"/> with one line naming the file, the problem and the remedy.</summary>
    public static ClusterTls Load(ClusterTlsOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (options.HandshakeTimeoutSeconds is not (> 0 and <= 3600) || double.IsNaN(options.HandshakeTimeoutSeconds))
        {
            throw new InvalidOperationException($"{ClusterTlsOptions.Section}:{nameof(ClusterTlsOptions.HandshakeTimeoutSeconds)} = {options.HandshakeTimeoutSeconds} is out of range: must be > 0 and <= 3600");
        }

        string certificatePath = RequireFile(options.ResolvedCertificatePath, nameof(ClusterTlsOptions.CertificatePath));
        string keyPath = RequireFile(options.ResolvedKeyPath, nameof(ClusterTlsOptions.KeyPath));
        string caPath = RequireFile(options.ResolvedCaPath, nameof(ClusterTlsOptions.CaPath));

        var authorities = new X509Certificate2Collection();
        try
        {
            authorities.ImportFromPemFile(caPath);
        }
        catch (Exception e) when (e is CryptographicException or IOException or UnauthorizedAccessException)
        {
            throw new InvalidOperationException($"{Key(nameof(ClusterTlsOptions.CaPath))}: cannot read the CA certificate(s) in {caPath}: {OneLine(e.Message)}; {MakeThem}", e);
        }

        if (authorities.Count == 0)
        {
            throw new InvalidOperationException($"{Key(nameof(ClusterTlsOptions.CaPath))}: {caPath} holds no PEM certificate; {MakeThem}");
        }

        foreach (var authority in authorities)
        {
            if (authority.Extensions.OfType<X509BasicConstraintsExtension>().FirstOrDefault() is not { CertificateAuthority: true })
            {
                throw new InvalidOperationException($"{Key(nameof(ClusterTlsOptions.CaPath))}: {caPath} holds {authority.Subject}, which is not a CA certificate (basic constraints CA:true); {MakeThem}");
            }
        }

        X509Certificate2 certificate;
        try
        {
            certificate = X509Certificate2.CreateFromPemFile(certificatePath, keyPath);
        }
        catch (Exception e) when (e is CryptographicException or IOException or UnauthorizedAccessException or ArgumentException)
        {
            throw new InvalidOperationException(
                $"{Key(nameof(ClusterTlsOptions.CertificatePath))}: cannot load the certificate {certificatePath} with the private key {keyPath}: {OneLine(e.Message)} (both PEM, the key unencrypted and the certificate's own); {MakeThem}", e);
        }

        var tls = new ClusterTls(certificate, authorities, options);
        foreach (string usage in new[] { ServerAuthOid, ClientAuthOid })
        {
            if (!tls.IsTrusted(certificate, usage, out string reason))
            {
                string subject = certificate.Subject;
                tls.Dispose();
                throw new InvalidOperationException(
                    $"{Key(nameof(ClusterTlsOptions.CertificatePath))}: the certificate {certificatePath} ({subject}) cannot serve in this cluster: {reason}; {MakeThem}");
            }
        }

        return tls;
    }

    /// <summary>
    /// Whether a peer's certificate is trusted for <paramref name="usageOid"/> (<see cref="ServerAuthOid"/> or
    /// <see cref="ClientAuthOid"/>): it chains to one of <see cref="Authorities"/> only, is valid now, has the usage,
    /// signs (digital signature) and is no CA.
    /// </summary>
    public bool IsTrusted(X509Certificate2 certificate, string usageOid, out string reason)
    {
        ArgumentNullException.ThrowIfNull(certificate);
        if (certificate.Extensions.OfType<X509BasicConstraintsExtension>().FirstOrDefault() is { CertificateAuthority: true })
        {
            reason = "it is a CA certificate, not a node's";
            return false;
        }

        if (certificate.Extensions.OfType<X509KeyUsageExtension>().FirstOrDefault() is { } keyUsage
            && (keyUsage.KeyUsages & X509KeyUsageFlags.DigitalSignature) == 0)
        {
            reason = $"its key usage ({keyUsage.KeyUsages}) lacks digital signature";
            return false;
        }

        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.AddRange(Authorities);
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        chain.ChainPolicy.DisableCertificateDownloads = true;
        chain.ChainPolicy.ApplicationPolicy.Add(new Oid(usageOid));
        chain.ChainPolicy.VerificationTime = DateTime.Now;
        if (chain.Build(certificate))
        {
            reason = string.Empty;
            return true;
        }

        var problems = chain.ChainStatus.Select(s => s.Status switch
        {
            X509ChainStatusFlags.UntrustedRoot or X509ChainStatusFlags.PartialChain => "it is not issued by the cluster's CA",
            X509ChainStatusFlags.NotTimeValid => $"it is not valid now (valid {certificate.NotBefore.ToUniversalTime():u} to {certificate.NotAfter.ToUniversalTime():u})",
            X509ChainStatusFlags.NotValidForUsage or X509ChainStatusFlags.InvalidExtension => $"its extended key usage lacks {(usageOid == ServerAuthOid ? "server" : "client")} authentication",
            _ => OneLine(s.StatusInformation),
        }).Distinct().ToList();
        reason = problems.Count == 0 ? "its chain does not build" : string.Join("; ", problems);
        return false;
    }

    /// <summary>TLS for connections this process accepts (silo and gateway ports): a client certificate is required and checked for client authentication.</summary>
    public TlsOptions ServerOptions(ILogger? logger = null) => Options(ClientAuthOid, "a connecting peer", logger ?? NullLogger.Instance);

    /// <summary>TLS for connections this process opens (to other silos, or to a gateway): it presents its certificate and checks the server's for server authentication.</summary>
    public TlsOptions ClientOptions(ILogger? logger = null) => Options(ServerAuthOid, "the silo connected to", logger ?? NullLogger.Instance);

    public void Dispose()
    {
        Certificate.Dispose();
        foreach (var authority in Authorities)
        {
            authority.Dispose();
        }
    }

    private TlsOptions Options(string usageOid, string peer, ILogger logger) => new()
    {
        LocalCertificate = Certificate,
        RemoteCertificateMode = RemoteCertificateMode.RequireCertificate,
        ClientCertificateMode = RemoteCertificateMode.RequireCertificate,
        SslProtocols = SslProtocols.Tls13,
        CheckCertificateRevocation = false,
        HandshakeTimeout = TimeSpan.FromSeconds(_options.HandshakeTimeoutSeconds),
        RemoteCertificateValidation = (certificate, _, _) =>
        {
            // The chain SslStream built and its policy errors are not used: they come from the system's trust
            // store and check host names. IsTrusted builds its own chain on the cluster's CA alone.
            if (IsTrusted(certificate, usageOid, out string reason))
            {
                return true;
            }

            LogRefused(logger, peer, certificate.Subject, certificate.Issuer, reason);
            return false;
        },
    };

    private static string RequireFile(string? path, string property)
    {
        if (string.IsNullOrWhiteSpace(path))
        {
            throw new InvalidOperationException(
                $"TLS is required ({Key(nameof(ClusterTlsOptions.Enabled))} is not false) but neither {Key(property)} nor {Key(nameof(ClusterTlsOptions.Directory))} is set; {MakeThem}");
        }

        if (!File.Exists(path))
        {
            throw new InvalidOperationException($"{Key(property)}: {path} does not exist; {MakeThem}");
        }

        return path;
    }

    private static string Key(string property) => $"{ClusterTlsOptions.Section}:{property}";

    private static string OneLine(string text) => text.ReplaceLineEndings(" ").Trim();

    [LoggerMessage(Level = LogLevel.Warning, Message = "TLS: refused {Peer}: certificate {Subject} (issuer {Issuer}): {Reason}")]
    private static partial void LogRefused(ILogger logger, string peer, string subject, string issuer, string reason);
}
