using System.Net;
using System.Net.Sockets;

namespace MoECluster.Cluster.Hosting;

/// <summary>Ports for local clusters (<c>moecluster run</c>, the AppHost): one free on loopback now.</summary>
public static class LoopbackPorts
{
    /// <summary>A port the kernel gives for port 0 on 127.0.0.1, released at once (free now, not reserved).</summary>
    public static int Free()
    {
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        int port = ((IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        return port;
    }
}
