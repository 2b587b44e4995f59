#!/usr/bin/env python3
"""Times create+start+wait+remove of `busybox true` through the Docker API
from one process (no process spawned per request, unlike curl): the engine's
own cost plus four HTTP requests on fresh Unix-socket connections.

usage: api-lifecycle.py SOCK RUNS   a warm-up, then one line per run: microseconds
       api-lifecycle.py SOCK        one run per line read on stdin, answering
                                    microseconds or "ERR <what failed>" (so a
                                    caller can interleave it with other series)
With RUNS, exits non-zero with the failing request and answer on stderr.
"""
import http.client
import json
import socket
import sys
import time


class Failed(Exception):
    pass


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost")
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(120)
        self.sock.connect(self.path)


def call(sock, method, url, body=None, want=(200,)):
    conn = UnixConnection(sock)
    headers = {"Content-Type": "application/json"} if body is not None else {}
    conn.request(method, url, body=json.dumps(body) if body is not None else None, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    if resp.status not in want:
        raise Failed(f"{method} {url}: HTTP {resp.status}: {data.decode(errors='replace').strip()}")
    return data


def once(sock):
    created = json.loads(call(sock, "POST", "/containers/create", {"Image": "busybox", "Cmd": ["true"]}, (201,)))
    cid = created["Id"]
    call(sock, "POST", f"/containers/{cid}/start", want=(204,))
    waited = json.loads(call(sock, "POST", f"/containers/{cid}/wait"))
    if waited.get("StatusCode") != 0:
        raise Failed(f"POST /containers/{cid}/wait: {waited}")
    call(sock, "DELETE", f"/containers/{cid}", want=(204,))


def timed(sock):
    t0 = time.perf_counter_ns()
    once(sock)
    return (time.perf_counter_ns() - t0) // 1000


def main():
    sock = sys.argv[1]
    if len(sys.argv) > 2:
        try:
            once(sock)  # warm-up
            for _ in range(int(sys.argv[2])):
                print(timed(sock), flush=True)
        except (Failed, OSError) as e:
            sys.exit(str(e))
        return
    for _ in sys.stdin:
        try:
            print(timed(sock), flush=True)
        except (Failed, OSError, ValueError, KeyError) as e:
            print("ERR", str(e).replace("\n", " "), flush=True)


if __name__ == "__main__":
    main()
