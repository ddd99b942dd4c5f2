namespace MoECluster.Cluster.Security;

/// <summary>
/// The "MoECluster:Tls" section: mutual TLS on every Orleans connection (silo to silo, Orleans client to gateway).
/// TLS is on unless <see cref="Enabled"/> is set to false; the files are PEM: this process's certificate and private
/// key, and the cluster's CA certificate(s), the only trust anchors a peer's certificate may chain to. The names
/// fit a Kubernetes TLS Secret (<c>tls.crt</c>, <c>tls.key</c>, <c>ca.crt</c>): setting <see cref="Directory"/>
/// is enough when the three sit together; an explicit path wins over the directory.
/// </summary>
public sealed class ClusterTlsOptions
{
    public const string Section = "MoECluster:Tls";
    public const string CertificateFileName = "tls.crt";
    public const string KeyFileName = "tls.key";
    public const string CaFileName = "ca.crt";

    /// <summary>
    /// false turns TLS off: plain TCP between silos and from clients, no authentication; logged as a warning at every
    /// start. A TLS-less process cannot join a TLS cluster, nor a TLS process a TLS-less one (their handshakes fail).
    /// </summary>
    public bool Enabled { get; set; } = true;

    /// <summary>A directory with <c>tls.crt</c>, <c>tls.key</c> and <c>ca.crt</c> (what <c>moecluster tls init</c> writes, or a mounted Secret).</summary>
    public string? Directory { get; set; }

    /// <summary>This process's certificate (PEM), issued by the cluster CA, usable for TLS server and client authentication.</summary>
    public string? CertificatePath { get; set; }

    /// <summary>Its private key (PEM, PKCS#8 or the algorithm's own format, unencrypted; keep it mode 0600).</summary>
    public string? KeyPath { get; set; }

    /// <summary>The cluster CA certificate(s) (PEM, one or more): a peer is trusted only if its certificate chains to one of them.</summary>
    public string? CaPath { get; set; }

    /// <summary>Longest a TLS handshake may take before the connection is dropped.</summary>
    public double HandshakeTimeoutSeconds { get; set; } = 10;

    internal string? ResolvedCertificatePath => CertificatePath ?? Combine(CertificateFileName);

    internal string? ResolvedKeyPath => KeyPath ?? Combine(KeyFileName);

    internal string? ResolvedCaPath => CaPath ?? Combine(CaFileName);

    private string? Combine(string name) => string.IsNullOrWhiteSpace(Directory) ? null : System.IO.Path.Combine(Directory, name);
}
