using System.Net;
using System.Net.Sockets;

namespace MoECluster.AppHost.Model;

/// <summary>Ports on 127.0.0.1: free ones (bound to port 0, then released) and whether a given one is free now.</summary>
public static class PortAllocator
{
    public static int FreePort(ISet<int> taken)
    {
        for (int attempt = 0; attempt < 100; attempt++)
        {
            using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
            int port = ((IPEndPoint)listener.LocalEndPoint!).Port;
            if (taken.Add(port))
            {
                return port;
            }
        }

        throw new DistributedApplicationException("could not find a free port on 127.0.0.1");
    }

    public static bool IsFree(int port)
    {
        try
        {
            using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            listener.Bind(new IPEndPoint(IPAddress.Loopback, port));
            listener.Listen();
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }
}
