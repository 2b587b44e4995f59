#!/usr/bin/env bash
# Published-port benchmark through a Berth VM, side by side in one run:
#
#   TCP throughput   one stream host -> container through `-p` (a netprobe
#                    tcp-sink in the container) vs the raw vsock stream under
#                    it (host -> a netprobe vsock-sink in the VM, through the
#                    same hybrid vsock socket the daemon uses, with the window
#                    the agent gives its streams): the ceiling. The same the
#                    other way (container -> host: tcp-source, vsock-source).
#   connections/s    connect, 1 byte each way, close, through `-p`, one client,
#                    vs the same on a raw vsock stream (a netprobe vsock-echo
#                    in the VM through the hybrid vsock socket): the ceiling.
#   UDP datagrams/s  64-byte datagrams echoed through `-p/udp`, 32 in flight.
#   run overhead     `docker run --rm -p PORT:80 busybox true` vs
#                    `docker run --rm busybox true`, interleaved.
#
# Uses $BERTH_BIN and $BERTH_ASSETS if set (else the installed berth), builds
# tests/images/netprobe.c with musl-gcc. Not a timed test: it prints figures.
# Usage: tests/bench/ports.sh [MIB] [RUNS]   (default 1024 MiB per stream, 10 runs)
set -euo pipefail
mib=${1:-1024}
runs=${2:-10}
root=$(cd "$(dirname "$0")/../.." && pwd)
berth=${BERTH_BIN:-$(command -v berth)}
client=$root/tests/bench/ports-client.py
work=$(mktemp -d)
export BERTH_HOME=$work/home DOCKER_CONFIG=$work/docker-config
mkdir -p "$BERTH_HOME" "$work/share"
cleanup() {
  set +e
  [ -n "${shell_pid:-}" ] && kill "$shell_pid" 2>/dev/null
  [ -n "${echo_shell_pid:-}" ] && kill "$echo_shell_pid" 2>/dev/null
  [ -n "${source_shell_pid:-}" ] && kill "$source_shell_pid" 2>/dev/null
  timeout 60 "$berth" stop >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT
printf '[vm]\ncpus = 2\nmemory-mib = 1024\ndisk-gib = 2\nshares = ["%s"]\n' "$work/share" > "$BERTH_HOME/config.toml"
musl-gcc -static -O2 -o "$work/share/netprobe" "$root/tests/images/netprobe.c"
python3 "$root/tests/images/busybox-archive.py" "$work/busybox.tar"
"$berth" start >/dev/null
sock=$BERTH_HOME/run/docker.sock
D() { timeout 120 docker -H "unix://$sock" "$@"; }
D load -i "$work/busybox.tar" >/dev/null
accel=$("$berth" status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["accel"])')
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("",0)); print(s.getsockname()[1])'; }
wait_ready() { for _ in $(seq 100); do D logs "$1" 2>&1 | grep -q ready && return 0; sleep 0.1; done; echo "$1 never got ready" >&2; exit 1; }
probe=(-v "$work/share/netprobe:/netprobe:ro")

# The raw vsock ceiling: a sink on vsock port 5000 in the VM itself.
"$berth" shell -- "$work/share/netprobe" vsock-sink 5000 >"$work/vsock.out" 2>&1 &
shell_pid=$!
"$berth" shell -- "$work/share/netprobe" vsock-echo 5001 >"$work/vsock-echo.out" 2>&1 &
echo_shell_pid=$!
"$berth" shell -- "$work/share/netprobe" vsock-source 5003 >"$work/vsock-source.out" 2>&1 &
source_shell_pid=$!
for out in vsock vsock-echo vsock-source; do
  for _ in $(seq 100); do grep -q ready "$work/$out.out" 2>/dev/null && break; sleep 0.1; done
done
uds=$BERTH_HOME/run/agent.vsock

tcp=$(free_port) echo_port=$(free_port) udp=$(free_port) run_port=$(free_port) source_port=$(free_port)
D run -d --name sink "${probe[@]}" -p "$tcp:5201" busybox /netprobe tcp-sink 5201 >/dev/null
D run -d --name echo "${probe[@]}" -p "$echo_port:5202" busybox /netprobe tcp-echo 5202 >/dev/null
D run -d --name udp "${probe[@]}" -p "$udp:5353/udp" busybox /netprobe udp-echo 5353 >/dev/null
D run -d --name source "${probe[@]}" -p "$source_port:5203" busybox /netprobe tcp-source 5203 >/dev/null
for c in sink echo udp source; do wait_ready "$c"; done

# Three rounds of each stream, interleaved; the best of each (the machine is
# shared, and TCG's first rounds still translate code).
best() { printf '%s\n' "$@" | sort -g | tail -1; }
vs=() ps=() vr=() pr=()
for _ in 1 2 3; do
  vs+=("$(python3 "$client" vsock-send "$uds" 5000 "$mib")")
  ps+=("$(python3 "$client" tcp-send "$tcp" "$mib")")
  vr+=("$(python3 "$client" vsock-receive "$uds" 5003 "$mib")")
  pr+=("$(python3 "$client" tcp-receive "$source_port" "$mib")")
done
raw=$(best "${vs[@]}") published=$(best "${ps[@]}")
raw_out=$(best "${vr[@]}") published_out=$(best "${pr[@]}")
conns=$(python3 "$client" connect-rate "$echo_port" 5)
vsock_conns=$(python3 "$client" vsock-connect-rate "$uds" 5001 5)
dgrams=$(python3 "$client" udp-rate "$udp" 5)

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR % 2 ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2)}'; }
ms() { local t0=$EPOCHREALTIME; "$@" >/dev/null; local t1=$EPOCHREALTIME; echo $(( (${t1/./} - ${t0/./}) / 1000 )); }
plain=() with=()
D run --rm busybox true >/dev/null   # warm-up
for _ in $(seq "$runs"); do
  plain+=("$(ms D run --rm busybox true)")
  with+=("$(ms D run --rm -p "$run_port:80" busybox true)")
done

printf '\nPublished ports through the Berth VM (accel %s, %s MiB per stream, best of 3)\n' "$accel" "$mib"
printf '  %-44s %10s\n' "raw vsock stream (host -> VM), Gbit/s" "$raw" \
  "published TCP port (host -> container), Gbit/s" "$published"
awk -v p="$published" -v r="$raw" 'BEGIN { printf "  %-44s %9.2fx  (target >= 0.8x)\n", "published / raw vsock", p / r }'
printf '  %-44s %10s\n' "raw vsock stream (VM -> host), Gbit/s" "$raw_out" \
  "published TCP port (container -> host), Gbit/s" "$published_out"
awk -v p="$published_out" -v r="$raw_out" 'BEGIN { printf "  %-44s %9.2fx\n", "published / raw vsock, out", p / r }'
printf '  %-44s %10s\n' "raw vsock connections/s (host -> VM echo)" "$vsock_conns" \
  "TCP connections/s through -p" "$conns" \
  "UDP datagrams/s through -p/udp (64 B)" "$dgrams" \
  "docker run --rm busybox true, ms (median)" "$(median "${plain[@]}")" \
  "docker run --rm -p P:80 busybox true, ms" "$(median "${with[@]}")"
