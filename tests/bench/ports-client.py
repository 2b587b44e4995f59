#!/usr/bin/env python3
"""The host side of tests/bench/ports.sh (the container side is
tests/images/netprobe.c). Each prints one number.

  ports-client.py tcp-send PORT MIB          Gbit/s of MIB MiB sent to 127.0.0.1:PORT (a netprobe tcp-sink)
  ports-client.py vsock-send UDS PORT MIB    the same to guest vsock PORT through hybrid vsock UDS (raw vsock)
  ports-client.py tcp-receive PORT MIB       Gbit/s of MIB MiB received from 127.0.0.1:PORT (a netprobe tcp-source)
  ports-client.py vsock-receive UDS PORT MIB the same from guest vsock PORT through hybrid vsock UDS (raw vsock)
  ports-client.py connect-rate PORT SECS     connections/s to a netprobe tcp-echo (connect, 1 byte each way, close)
  ports-client.py vsock-connect-rate UDS PORT SECS
                                             the same to a netprobe vsock-echo through hybrid vsock (the ceiling)
  ports-client.py udp-rate PORT SECS         datagrams/s echoed by a netprobe udp-echo (64 bytes, 32 in flight)
"""
import socket
import sys
import time

CHUNK = b"\0" * (256 * 1024)


def send_and_count(sock, mib):
    """Sends MIB MiB (length first), reads the sink's byte count: Gbit/s."""
    total = mib * 1024 * 1024
    t0 = time.perf_counter()
    sock.sendall(total.to_bytes(8, "big"))
    sent = 0
    while sent < total:
        sock.sendall(CHUNK)
        sent += len(CHUNK)
    answer = b""
    while not answer.endswith(b"\n"):
        part = sock.recv(64)
        if not part:
            break
        answer += part
    elapsed = time.perf_counter() - t0
    if int(answer or b"0") != sent:
        sys.exit(f"the sink counted {answer!r}, {sent} were sent")
    return sent * 8 / elapsed / 1e9


def receive_and_count(sock, mib):
    """Asks for MIB MiB (length first) and reads them: Gbit/s."""
    total = mib * 1024 * 1024
    t0 = time.perf_counter()
    sock.sendall(total.to_bytes(8, "big"))
    got = 0
    buf = bytearray(len(CHUNK))
    while got < total:
        n = sock.recv_into(buf)
        if not n:
            sys.exit(f"the source stopped after {got} of {total} bytes")
        got += n
    elapsed = time.perf_counter() - t0
    sock.close()
    return got * 8 / elapsed / 1e9


def hybrid_connect(uds, port):
    """A stream to guest vsock PORT through hybrid vsock's unix socket UDS."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(uds)
    sock.sendall(f"CONNECT {port}\n".encode())
    line = b""
    while not line.endswith(b"\n"):
        byte = sock.recv(1)
        if not byte:
            sys.exit("the vsock device refused the connection")
        line += byte
    if not line.startswith(b"OK"):
        sys.exit(f"hybrid vsock answered {line!r}")
    return sock


def connect_rate(connect, secs):
    """Connections per second for `secs`, each echoing one byte, then closed."""
    count, deadline = 0, time.perf_counter() + secs
    t0 = time.perf_counter()
    while time.perf_counter() < deadline:
        sock = connect()
        sock.sendall(b"x")
        if sock.recv(1) != b"x":
            sys.exit("no echo")
        sock.close()
        count += 1
    return count / (time.perf_counter() - t0)


def main():
    mode = sys.argv[1]
    streams = {"send": send_and_count, "receive": receive_and_count}
    transport, _, direction = mode.partition("-")
    if transport in ("tcp", "vsock") and direction in streams:
        if transport == "tcp":
            sock, mib = socket.create_connection(("127.0.0.1", int(sys.argv[2]))), sys.argv[3]
        else:
            sock, mib = hybrid_connect(sys.argv[2], sys.argv[3]), sys.argv[4]
        print(f"{streams[direction](sock, int(mib)):.2f}")
    elif mode == "vsock-connect-rate":
        uds, port = sys.argv[2], sys.argv[3]
        print(f"{connect_rate(lambda: hybrid_connect(uds, port), float(sys.argv[4])):.0f}")
    elif mode == "connect-rate":
        port = int(sys.argv[2])
        print(f"{connect_rate(lambda: socket.create_connection(('127.0.0.1', port)), float(sys.argv[3])):.0f}")
    elif mode == "udp-rate":
        port, secs = int(sys.argv[2]), float(sys.argv[3])
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.connect(("127.0.0.1", port))
        sock.settimeout(0.5)
        payload = b"d" * 64
        in_flight, answered, lost = 0, 0, 0
        t0 = time.perf_counter()
        deadline = t0 + secs
        while time.perf_counter() < deadline:
            while in_flight < 32:
                sock.send(payload)
                in_flight += 1
            try:
                sock.recv(2048)
                answered += 1
            except socket.timeout:
                lost += in_flight
            in_flight -= 1 if in_flight else 0
            if lost:
                in_flight, lost = 0, 0
        print(f"{answered / (time.perf_counter() - t0):.0f}")
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
