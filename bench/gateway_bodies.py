#!/usr/bin/env python3
"""N concurrent large bodies at a front-end silo's forward endpoint; its memory from /proc.

usage: gateway_bodies.py PORT PID [COUNT] [MIB]

Each of COUNT clients (default 40) opens its own connection and POSTs MIB MiB (default 60) of JSON (spaces, then
"{}", which the gateway refuses with 400 once read whole). A client stops sending as soon as the server answers. Prints
one JSON line: the statuses, how many answers came before the client had sent its whole body, the front-end's VmRSS
before, its peak (VmHWM) and its VmRSS right after and 10 s after the burst, in MiB.
"""
import json
import socket
import sys
import threading
import time
from collections import Counter


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def main():
    port, pid = int(sys.argv[1]), int(sys.argv[2])
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 40
    size = (int(sys.argv[4]) if len(sys.argv) > 4 else 60) << 20
    body = memoryview(b" " * (size - 2) + b"{}")
    head = (b"POST /v1/forward HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n" % size)
    results = [None] * count

    def one(i):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(head)
        sent, early = 0, False
        while sent < size:
            s.settimeout(0.0)
            try:
                if s.recv(1, socket.MSG_PEEK):
                    early = True
                    break
            except BlockingIOError:
                pass
            except OSError:
                break
            s.settimeout(60)
            try:
                sent += s.send(body[sent:sent + (1 << 20)])
            except OSError:
                early = True
                break
        s.settimeout(120)
        response = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                response += chunk
        except OSError:
            pass
        s.close()
        line = response.split(b"\r\n", 1)[0].decode(errors="replace")
        results[i] = (line.split(" ", 2)[1] if line.startswith("HTTP/") else "none", early, sent)

    before = status_kib(pid, "VmRSS")
    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    started = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.time() - started
    after = status_kib(pid, "VmRSS")
    time.sleep(10)
    print(json.dumps({
        "bodies": count, "mib_each": size >> 20, "seconds": round(elapsed, 1),
        "statuses": dict(Counter(r[0] for r in results)),
        "answered_before_body_sent": sum(1 for r in results if r[1]),
        "rss_before_mib": before // 1024, "rss_peak_mib": status_kib(pid, "VmHWM") // 1024,
        "rss_after_mib": after // 1024, "rss_10s_after_mib": status_kib(pid, "VmRSS") // 1024,
    }))


if __name__ == "__main__":
    main()
