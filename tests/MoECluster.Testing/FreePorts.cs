using System.Net;
using System.Net.Sockets;

namespace MoECluster.Testing;

public static class FreePorts
{
    /// <summary>
    /// Distinct ports that were free on loopback a moment ago, drawn at random below Linux's ephemeral range (32768 and up):
    /// a port the kernel hands out for port 0 can be taken as the source port of any outgoing connection before the
    /// process under test binds it ("Address already in use": CI saw a silo fail so); below the range only an explicit bind takes it.
    /// </summary>
    public static int[] Take(int count)
    {
        var ports = new List<int>(count);
        for (int attempt = 0; ports.Count < count; attempt++)
        {
            if (attempt > 10_000)
            {
                throw new InvalidOperationException($"no {count} free ports in 20000..32000");
            }

            int port = Random.Shared.Next(20000, 32000);
            if (!ports.Contains(port) && IsFree(port))
            {
                ports.Add(port);
            }
        }

        return [.. ports];
    }

    /// <summary>The first of <paramref name="count"/> consecutive ports free now, below the ephemeral range (silo port P, expert i at P + i).</summary>
    public static int Consecutive(int count)
    {
        for (int attempt = 0; attempt < 1000; attempt++)
        {
            int first = Random.Shared.Next(20000, 32000 - count);
            if (Enumerable.Range(first, count).All(IsFree))
            {
                return first;
            }
        }

        throw new InvalidOperationException($"no {count} consecutive free ports in 20000..32000");
    }

    private static bool IsFree(int port)
    {
        try
        {
            var listener = new TcpListener(IPAddress.Loopback, port);
            listener.Start();
            listener.Stop();
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }
}
