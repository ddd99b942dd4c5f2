using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using MoECluster.Cluster.Security;
using MoECluster.Testing;

namespace MoECluster.Cluster.Tests;

/// <summary>
/// What a silo or client accepts as a peer (the cluster's CA only, in time, with the right usages, no CA), and the
/// one-line start-up errors for unusable TLS files.
/// </summary>
public sealed class ClusterTlsMaterialTests : IDisposable
{
    private readonly TempDirectory _dir = new("moecluster-tls-material-");

    public void Dispose() => _dir.Dispose();

    private ClusterTls NewCluster(string name)
    {
        string dir = _dir.File(name);
        ClusterCertificates.WriteNewCluster(dir, "node", TimeSpan.FromDays(30), DateTimeOffset.UtcNow);
        return ClusterTls.Load(new ClusterTlsOptions { Directory = dir });
    }

    private X509Certificate2 CaOf(string name) =>
        ClusterCertificates.ReadAuthority(_dir.File($"{name}/{ClusterTlsOptions.CaFileName}"), _dir.File($"{name}/{ClusterCertificates.CaKeyFileName}"));

    [Fact]
    public void A_certificate_from_the_clusters_CA_is_trusted_for_both_sides()
    {
        using var tls = NewCluster("a");
        using var ca = CaOf("a");
        using var other = ClusterCertificates.Issue(ca, "node-2", DateTimeOffset.UtcNow.AddMinutes(-1), DateTimeOffset.UtcNow.AddDays(1));
        Assert.True(tls.IsTrusted(other, ClusterTls.ClientAuthOid, out string r1), r1);
        Assert.True(tls.IsTrusted(other, ClusterTls.ServerAuthOid, out string r2), r2);
    }

    [Fact]
    public void A_certificate_from_another_CA_is_refused_even_with_the_same_names()
    {
        using var tls = NewCluster("a");
        using var foreign = NewCluster("b");
        Assert.False(tls.IsTrusted(foreign.Certificate, ClusterTls.ClientAuthOid, out string reason));
        Assert.Contains("not issued by the cluster's CA", reason, StringComparison.Ordinal);
    }

    [Fact]
    public void A_self_signed_certificate_is_refused()
    {
        using var tls = NewCluster("a");
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=node", key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new(ClusterTls.ServerAuthOid), new(ClusterTls.ClientAuthOid)], false));
        using var self = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(1));
        Assert.False(tls.IsTrusted(self, ClusterTls.ClientAuthOid, out string reason));
        Assert.Contains("not issued by the cluster's CA", reason, StringComparison.Ordinal);
    }

    [Fact]
    public void An_expired_or_not_yet_valid_certificate_is_refused()
    {
        // A CA valid from 30 days ago, so that it can issue a certificate that already expired.
        var now = DateTimeOffset.UtcNow;
        using var ca = ClusterCertificates.CreateAuthority("test CA", now.AddDays(-30), now.AddDays(30));
        using var node = ClusterCertificates.Issue(ca, "node", now.AddDays(-1), now.AddDays(1));
        string dir = _dir.File("old-ca");
        Directory.CreateDirectory(dir);
        ClusterCertificates.WriteCertificates(Path.Combine(dir, ClusterTlsOptions.CaFileName), ca);
        ClusterCertificates.WriteCertificates(Path.Combine(dir, ClusterTlsOptions.CertificateFileName), node);
        ClusterCertificates.WritePrivateKey(Path.Combine(dir, ClusterTlsOptions.KeyFileName), node);
        using var tls = ClusterTls.Load(new ClusterTlsOptions { Directory = dir });
        using var expired = ClusterCertificates.Issue(ca, "old", DateTimeOffset.UtcNow.AddDays(-10), DateTimeOffset.UtcNow.AddDays(-1));
        Assert.False(tls.IsTrusted(expired, ClusterTls.ClientAuthOid, out string reason));
        Assert.Contains("not valid now", reason, StringComparison.Ordinal);
        using var future = ClusterCertificates.Issue(ca, "new", DateTimeOffset.UtcNow.AddDays(1), DateTimeOffset.UtcNow.AddDays(10));
        Assert.False(tls.IsTrusted(future, ClusterTls.ClientAuthOid, out _));
    }

    [Fact]
    public void A_certificate_without_the_usage_of_its_side_is_refused()
    {
        using var tls = NewCluster("a");
        using var ca = CaOf("a");
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=server-only", key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature, true));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new(ClusterTls.ServerAuthOid)], false));
        using var serverOnly = request.Create(ca, DateTimeOffset.UtcNow.AddMinutes(-1), DateTimeOffset.UtcNow.AddDays(1), [1, 2, 3]);
        Assert.True(tls.IsTrusted(serverOnly, ClusterTls.ServerAuthOid, out string ok), ok);
        Assert.False(tls.IsTrusted(serverOnly, ClusterTls.ClientAuthOid, out string reason));
        Assert.Contains("lacks client authentication", reason, StringComparison.Ordinal);
    }

    [Fact]
    public void The_CA_certificate_itself_is_no_peer()
    {
        using var tls = NewCluster("a");
        Assert.False(tls.IsTrusted(tls.Authorities[0], ClusterTls.ClientAuthOid, out string reason));
        Assert.Contains("CA certificate", reason, StringComparison.Ordinal);
    }

    [Fact]
    public void A_CA_file_with_two_CAs_trusts_both_for_rotation()
    {
        using var oldCluster = NewCluster("old");
        using var newCluster = NewCluster("new");
        string bundle = _dir.File("bundle.crt");
        File.WriteAllText(bundle, File.ReadAllText(_dir.File("old/ca.crt")) + File.ReadAllText(_dir.File("new/ca.crt")));
        using var both = ClusterTls.Load(new ClusterTlsOptions { Directory = _dir.File("old"), CaPath = bundle });
        Assert.Equal(2, both.Authorities.Count);
        Assert.True(both.IsTrusted(oldCluster.Certificate, ClusterTls.ClientAuthOid, out string r1), r1);
        Assert.True(both.IsTrusted(newCluster.Certificate, ClusterTls.ClientAuthOid, out string r2), r2);
    }

    [Fact]
    public void Tls_on_without_files_fails_with_one_line_that_names_the_key_and_the_remedy()
    {
        var e = Assert.Throws<InvalidOperationException>(() => ClusterTls.Load(new ClusterTlsOptions()));
        Assert.Contains("MoECluster:Tls:CertificatePath", e.Message, StringComparison.Ordinal);
        Assert.Contains("moecluster tls init --dir DIR", e.Message, StringComparison.Ordinal);
        Assert.Contains("MoECluster__Tls__Enabled=false", e.Message, StringComparison.Ordinal);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void A_missing_or_unreadable_file_is_named()
    {
        using var tls = NewCluster("a");
        var missing = Assert.Throws<InvalidOperationException>(() => ClusterTls.Load(new ClusterTlsOptions { Directory = _dir.File("a"), KeyPath = _dir.File("nope.key") }));
        Assert.Contains($"MoECluster:Tls:KeyPath: {_dir.File("nope.key")} does not exist", missing.Message, StringComparison.Ordinal);

        // The key of another certificate.
        NewCluster("b").Dispose();
        var mismatch = Assert.Throws<InvalidOperationException>(() => ClusterTls.Load(new ClusterTlsOptions { Directory = _dir.File("a"), KeyPath = _dir.File("b/tls.key") }));
        Assert.Contains($"cannot load the certificate {_dir.File("a/tls.crt")} with the private key {_dir.File("b/tls.key")}", mismatch.Message, StringComparison.Ordinal);

        // A certificate the configured CA did not issue.
        var foreign = Assert.Throws<InvalidOperationException>(() => ClusterTls.Load(new ClusterTlsOptions { Directory = _dir.File("a"), CaPath = _dir.File("b/ca.crt") }));
        Assert.Contains("cannot serve in this cluster: it is not issued by the cluster's CA", foreign.Message, StringComparison.Ordinal);

        // A node certificate where the CA should be.
        var notCa = Assert.Throws<InvalidOperationException>(() => ClusterTls.Load(new ClusterTlsOptions { Directory = _dir.File("a"), CaPath = _dir.File("a/tls.crt") }));
        Assert.Contains("which is not a CA certificate", notCa.Message, StringComparison.Ordinal);
    }

    [Fact]
    [System.Runtime.Versioning.SupportedOSPlatform("linux")]
    public void Keys_are_written_with_mode_0600()
    {
        NewCluster("a").Dispose();
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(_dir.File("a/tls.key")));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(_dir.File("a/ca.key")));
    }
}
