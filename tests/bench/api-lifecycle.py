#!/usr/bin/env python3
"""Times create+start+wait+remove of `busybox true` through the Docker API
from one process (no process spawned per request, unlike curl): the engine's
own cost plus four HTTP requests on fresh Unix-socket connections.

usage: api-lifecycle.py SOCK RUNS   prints one line per run: microseconds
Exits non-zero, with the failing request and answer on stderr, on any error.
"""
import http.client
import json
import socket
import sys
import time


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost")
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


def call(sock, method, url, body=None, want=(200,)):
    conn = UnixConnection(sock)
    headers = {"Content-Type": "application/json"} if body is not None else {}
    conn.request(method, url, body=json.dumps(body) if body is not None else None, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    if resp.status not in want:
        sys.exit(f"{method} {url}: HTTP {resp.status}: {data.decode(errors='replace').strip()}")
    return data


def once(sock):
    created = json.loads(call(sock, "POST", "/containers/create", {"Image": "busybox", "Cmd": ["true"]}, (201,)))
    cid = created["Id"]
    call(sock, "POST", f"/containers/{cid}/start", want=(204,))
    waited = json.loads(call(sock, "POST", f"/containers/{cid}/wait"))
    if waited.get("StatusCode") != 0:
        sys.exit(f"wait: {waited}")
    call(sock, "DELETE", f"/containers/{cid}", want=(204,))


def main():
    sock, runs = sys.argv[1], int(sys.argv[2])
    once(sock)  # warm-up
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        once(sock)
        print((time.perf_counter_ns() - t0) // 1000, flush=True)


if __name__ == "__main__":
    main()
