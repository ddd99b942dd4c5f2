using System.Net;
using System.Net.Sockets;

namespace MoECluster.Testing;

public static class FreePorts
{
    /// <summary>Ports that were free on loopback a moment ago (bound to port 0, then released).</summary>
    public static int[] Take(int count)
    {
        var listeners = Enumerable.Range(0, count).Select(_ =>
        {
            var l = new TcpListener(IPAddress.Loopback, 0);
            l.Start();
            return l;
        }).ToList();
        int[] ports = [.. listeners.Select(l => ((IPEndPoint)l.LocalEndpoint).Port)];
        listeners.ForEach(l => l.Stop());
        return ports;
    }
}
