using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace MoECluster.Cluster.Security;

/// <summary>
/// Makes a cluster's certificates with .NET alone (no openssl): a CA, and certificates it issues that serve for TLS
/// server and client authentication (every silo is both: it accepts connections and opens them). Keys are ECDSA
/// P-256; files are PEM; private keys are written with mode 0600.
/// </summary>
public static class ClusterCertificates
{
    public const string CaKeyFileName = "ca.key";

    public static readonly TimeSpan DefaultAuthorityLifetime = TimeSpan.FromDays(3650);

    public static readonly TimeSpan DefaultLifetime = TimeSpan.FromDays(365);

    private const string ServerAuthOid = "1.3.6.1.5.5.7.3.1";
    private const string ClientAuthOid = "1.3.6.1.5.5.7.3.2";

    /// <summary>A self-signed CA certificate with its private key: CA:true, path length 0, key usage cert sign + CRL sign.</summary>
    public static X509Certificate2 CreateAuthority(string commonName, DateTimeOffset notBefore, DateTimeOffset notAfter)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest(Subject(commonName), key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(certificateAuthority: true, hasPathLengthConstraint: true, pathLengthConstraint: 0, critical: true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, critical: true));
        request.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(request.PublicKey, critical: false));
        return request.CreateSelfSigned(notBefore, notAfter);
    }

    /// <summary>
    /// A certificate issued by <paramref name="authority"/> (which must hold its private key) with its own private key:
    /// CA:false, key usage digital signature, extended key usage server and client authentication, subject alternative
    /// names <paramref name="commonName"/>, localhost and 127.0.0.1 plus <paramref name="dnsNames"/> and
    /// <paramref name="addresses"/>. Its validity ends no later than the authority's.
    /// </summary>
    public static X509Certificate2 Issue(
        X509Certificate2 authority, string commonName, DateTimeOffset notBefore, DateTimeOffset notAfter,
        IEnumerable<string>? dnsNames = null, IEnumerable<IPAddress>? addresses = null)
    {
        ArgumentNullException.ThrowIfNull(authority);
        if (!authority.HasPrivateKey)
        {
            throw new ArgumentException($"the CA certificate {authority.Subject} has no private key to sign with", nameof(authority));
        }

        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest(Subject(commonName), key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(certificateAuthority: false, hasPathLengthConstraint: false, pathLengthConstraint: 0, critical: true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature, critical: true));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new(ServerAuthOid), new(ClientAuthOid)], critical: false));
        request.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(request.PublicKey, critical: false));
        request.CertificateExtensions.Add(X509AuthorityKeyIdentifierExtension.CreateFromCertificate(authority, includeKeyIdentifier: true, includeIssuerAndSerial: false));
        var names = new SubjectAlternativeNameBuilder();
        foreach (string dns in new[] { commonName, "localhost" }.Concat(dnsNames ?? []).Distinct(StringComparer.OrdinalIgnoreCase))
        {
            names.AddDnsName(dns);
        }

        foreach (var address in new[] { IPAddress.Loopback }.Concat(addresses ?? []).Distinct())
        {
            names.AddIpAddress(address);
        }

        request.CertificateExtensions.Add(names.Build());
        DateTimeOffset end = notAfter < authority.NotAfter ? notAfter : new DateTimeOffset(authority.NotAfter.ToUniversalTime());
        DateTimeOffset start = notBefore > authority.NotBefore ? notBefore : new DateTimeOffset(authority.NotBefore.ToUniversalTime());
        using var issued = request.Create(authority, start, end, RandomNumberGenerator.GetBytes(16));
        return issued.CopyWithPrivateKey(key);
    }

    /// <summary>Writes certificates as PEM (mode 0644), replacing the file.</summary>
    public static void WriteCertificates(string path, params X509Certificate2[] certificates)
    {
        string pem = string.Concat(certificates.Select(c => c.ExportCertificatePem() + "\n"));
        WriteFile(path, pem, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead);
    }

    /// <summary>Writes the certificate's private key as unencrypted PKCS#8 PEM, created with mode 0600, replacing the file.</summary>
    public static void WritePrivateKey(string path, X509Certificate2 certificate)
    {
        using var key = certificate.GetECDsaPrivateKey() ?? throw new ArgumentException($"{certificate.Subject} has no ECDSA private key", nameof(certificate));
        WriteFile(path, key.ExportPkcs8PrivateKeyPem() + "\n", UnixFileMode.UserRead | UnixFileMode.UserWrite);
    }

    /// <summary>Reads a CA certificate and its private key (for issuing more certificates).</summary>
    public static X509Certificate2 ReadAuthority(string certificatePath, string keyPath)
    {
        var authority = X509Certificate2.CreateFromPemFile(certificatePath, keyPath);
        if (authority.Extensions.OfType<X509BasicConstraintsExtension>().FirstOrDefault() is not { CertificateAuthority: true })
        {
            authority.Dispose();
            throw new CryptographicException($"{certificatePath} is not a CA certificate (basic constraints CA:true)");
        }

        return authority;
    }

    /// <summary>
    /// Writes a new CA (<c>ca.crt</c>, <c>ca.key</c>) and a certificate it issues (<c>tls.crt</c>, <c>tls.key</c>) into
    /// <paramref name="directory"/>, replacing what is there.
    /// </summary>
    public static void WriteNewCluster(string directory, string nodeName, TimeSpan lifetime, DateTimeOffset now)
    {
        Directory.CreateDirectory(directory);
        // A CA's name says when it was made and tells it from every other (logs of refused peers name the issuer).
        string caName = $"moecluster CA {now.ToString("yyyy-MM-dd", System.Globalization.CultureInfo.InvariantCulture)} {Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(4))}";
        using var authority = CreateAuthority(caName, now.AddMinutes(-5), now + DefaultAuthorityLifetime);
        using var node = Issue(authority, nodeName, now.AddMinutes(-5), now + lifetime);

        // The keys first: a directory with certificates but no keys is never left behind as if complete.
        WritePrivateKey(Path.Combine(directory, CaKeyFileName), authority);
        WritePrivateKey(Path.Combine(directory, ClusterTlsOptions.KeyFileName), node);
        WriteCertificates(Path.Combine(directory, ClusterTlsOptions.CertificateFileName), node);
        WriteCertificates(Path.Combine(directory, ClusterTlsOptions.CaFileName), authority);
    }

    /// <summary>Issues a certificate from the CA in <paramref name="caDirectory"/> into <paramref name="outDirectory"/> (<c>tls.crt</c>, <c>tls.key</c>, and a copy of <c>ca.crt</c>).</summary>
    public static void WriteIssued(string caDirectory, string outDirectory, string name, TimeSpan lifetime, DateTimeOffset now, IEnumerable<string>? dnsNames = null, IEnumerable<IPAddress>? addresses = null)
    {
        using var authority = ReadAuthority(Path.Combine(caDirectory, ClusterTlsOptions.CaFileName), Path.Combine(caDirectory, CaKeyFileName));
        using var issued = Issue(authority, name, now.AddMinutes(-5), now + lifetime, dnsNames, addresses);
        Directory.CreateDirectory(outDirectory);
        WritePrivateKey(Path.Combine(outDirectory, ClusterTlsOptions.KeyFileName), issued);
        WriteCertificates(Path.Combine(outDirectory, ClusterTlsOptions.CertificateFileName), issued);
        string caSource = Path.Combine(caDirectory, ClusterTlsOptions.CaFileName);
        string caTarget = Path.Combine(outDirectory, ClusterTlsOptions.CaFileName);
        if (!string.Equals(Path.GetFullPath(caSource), Path.GetFullPath(caTarget), StringComparison.Ordinal))
        {
            WriteFile(caTarget, File.ReadAllText(caSource), UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead);
        }
    }

    private static X500DistinguishedName Subject(string commonName)
    {
        var builder = new X500DistinguishedNameBuilder();
        builder.AddOrganizationName("MoECluster");
        builder.AddCommonName(commonName);
        return builder.Build();
    }

    /// <summary>Writes through a temporary file created with <paramref name="mode"/>, then renames it: never a moment with a wider mode or half a file.</summary>
    private static void WriteFile(string path, string content, UnixFileMode mode)
    {
        string full = Path.GetFullPath(path);
        string temp = full + ".tmp-" + Environment.ProcessId.ToString(System.Globalization.CultureInfo.InvariantCulture);
        var options = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write };
        if (!OperatingSystem.IsWindows())
        {
            options.UnixCreateMode = mode;
        }

        File.Delete(temp);
        using (var stream = new FileStream(temp, options))
        using (var writer = new StreamWriter(stream))
        {
            writer.Write(content);
        }

        File.Move(temp, full, overwrite: true);
    }
}
