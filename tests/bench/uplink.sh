#!/usr/bin/env bash
# The VM's uplink on QEMU, passt vs slirp, side by side in one run: iperf3
# from a container on the default bridge to an iperf3 server on this host's
# loopback (reached as the uplink's gateway, 10.0.2.2, which both map to the
# host's loopback), one stream each way:
#
#   egress     container -> host (iperf3 -c)
#   download   host -> container (iperf3 -c -R)
#
# The host's iperf3 and its libraries ride in through the share and run
# with their own loader in the busybox test image. Each uplink gets its own
# VM (its own BERTH_HOME); the best of RUNS per direction is printed.
# Uses $BERTH_BIN and $BERTH_ASSETS if set (else the installed berth).
# Not a timed test: it prints figures.
# Usage: tests/bench/uplink.sh [SECONDS] [RUNS]   (default 5 s per run, 2 runs)
set -euo pipefail
secs=${1:-5}
runs=${2:-2}
root=$(cd "$(dirname "$0")/../.." && pwd)
berth=${BERTH_BIN:-$(command -v berth)}
command -v passt >/dev/null || { echo "uplink.sh: needs Debian's passt (packaging/setup.sh installs it)" >&2; exit 1; }
work=$(mktemp -d)
export DOCKER_CONFIG=$work/docker-config
mkdir -p "$work/share/lib"
cleanup() {
  set +e
  [ -n "${server_pid:-}" ] && kill "$server_pid" 2>/dev/null
  for uplink in passt slirp; do
    [ -d "$work/$uplink" ] && BERTH_HOME=$work/$uplink timeout 60 "$berth" stop >/dev/null 2>&1
  done
  rm -rf "$work"
}
trap cleanup EXIT

iperf=$(command -v iperf3)
cp "$iperf" "$work/share/iperf3"
ldd "$iperf" | awk '/=> \// {print $3} /^[ \t]*\/.*ld-linux/ {print $1}' | while read -r lib; do
  cp -L "$lib" "$work/share/lib/"
done
loader=$(ldd "$iperf" | awk '/ld-linux/ {print $1}' | xargs basename)
python3 "$root/tests/images/busybox-archive.py" "$work/busybox.tar"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
iperf3 -s -B 127.0.0.1 -p "$port" >"$work/server.log" 2>&1 &
server_pid=$!

best() { printf '%s\n' "$@" | sort -g | tail -1; }
# One iperf3 run from a container; Gbit/s as the receiver counted it.
gbits() {
  local sock=$1
  shift
  timeout 300 docker -H "unix://$sock" run --rm -v "$work/share:/iperf:ro" busybox \
    "/iperf/lib/$loader" --library-path /iperf/lib /iperf/iperf3 -c 10.0.2.2 -p "$port" -t "$secs" -J "$@" |
    python3 -c 'import json,sys; b=json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]; print("%.2f" % (b / 1e9))'
}

declare -A egress download
for uplink in passt slirp; do
  home=$work/$uplink
  mkdir -p "$home"
  printf '[vm]\ncpus = 2\nmemory-mib = 1024\ndisk-gib = 2\nshares = ["%s"]\nuplink = "%s"\n' \
    "$work/share" "$uplink" >"$home/config.toml"
  BERTH_HOME=$home "$berth" start >/dev/null
  got=$(BERTH_HOME=$home "$berth" status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["uplink"])')
  [ "$got" = "$uplink" ] || { echo "asked for $uplink, the VM got $got" >&2; exit 1; }
  accel=$(BERTH_HOME=$home "$berth" status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["accel"])')
  sock=$home/run/docker.sock
  timeout 120 docker -H "unix://$sock" load -i "$work/busybox.tar" >/dev/null
  up=() down=()
  for _ in $(seq "$runs"); do
    up+=("$(gbits "$sock")")
    down+=("$(gbits "$sock" -R)")
  done
  egress[$uplink]=$(best "${up[@]}") download[$uplink]=$(best "${down[@]}")
  BERTH_HOME=$home timeout 60 "$berth" stop >/dev/null
done

printf '\nThe VM uplink, container <-> host loopback via 10.0.2.2 (accel %s, %s s per run, best of %s; load %s)\n' \
  "$accel" "$secs" "$runs" "$(cut -d' ' -f1-3 /proc/loadavg)"
printf '  %-36s %10s %10s\n' "" passt slirp \
  "egress (container -> host), Gbit/s" "${egress[passt]}" "${egress[slirp]}" \
  "download (host -> container), Gbit/s" "${download[passt]}" "${download[slirp]}"
