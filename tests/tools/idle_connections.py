#!/usr/bin/env python3
"""A flood of idle keep-alive connections, as one client of many addresses makes it (tests/MoECluster.EndToEnd.Tests,
BoundedResourcesTests).

usage: idle_connections.py PORT FIRST COUNT PER_ADDRESS

Opens COUNT connections to 127.0.0.1:PORT, PER_ADDRESS from each source address, the addresses numbered from FIRST
(address k is 127.0.(1 + k // 200).(1 + k % 200), never 127.0.0.1). Each sends one "GET /alive" and is counted as
served (a 200 came back) or refused (closed, reset, or no answer within 20 s). Prints {"served": S, "refused": R}
on one line once every connection is settled, then holds the served connections open, idle, until it is killed.
A process may hold only as many connections as its open-file limit allows: the test starts several for a large flood.
"""
import json
import selectors
import socket
import sys
import time

REQUEST = b"GET /alive HTTP/1.1\r\nHost: gateway\r\n\r\n"
IN_FLIGHT = 500
TIMEOUT = 20.0


def address(k):
    return f"127.0.{1 + k // 200}.{1 + k % 200}"


def main():
    port, first, count, per_address = (int(a) for a in sys.argv[1:5])
    selector = selectors.DefaultSelector()
    pending = {}
    held = []
    refused = 0
    opened = 0

    def drop(sock):
        nonlocal refused
        refused += 1
        selector.unregister(sock)
        del pending[sock]
        sock.close()

    while opened < count or pending:
        while opened < count and len(pending) < IN_FLIGHT:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((address(first + opened // per_address), 0))
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
            pending[sock] = [False, time.monotonic(), b""]
            selector.register(sock, selectors.EVENT_WRITE)
            opened += 1
        for key, _ in selector.select(timeout=0.2):
            sock = key.fileobj
            state = pending[sock]
            if not state[0]:
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
                    drop(sock)
                    continue
                try:
                    sock.send(REQUEST)
                except OSError:
                    drop(sock)
                    continue
                state[0] = True
                selector.modify(sock, selectors.EVENT_READ)
                continue
            try:
                data = sock.recv(4096)
            except OSError:
                data = b""
            if not data:
                drop(sock)
                continue
            state[2] += data
            if b"\r\n\r\n" in state[2]:
                selector.unregister(sock)
                del pending[sock]
                if state[2].startswith(b"HTTP/1.1 200"):
                    held.append(sock)
                else:
                    refused += 1
                    sock.close()
        now = time.monotonic()
        for sock in [s for s, st in pending.items() if now - st[1] > TIMEOUT]:
            drop(sock)

    print(json.dumps({"served": len(held), "refused": refused}), flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
