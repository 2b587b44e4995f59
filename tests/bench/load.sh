#!/usr/bin/env bash
# `docker load` through a Berth VM, side by side in one run with its two
# floors: the raw transfer (the same bytes through the agent's channel into
# /dev/null in the VM) and hashing (busybox sha256sum of the same bytes on
# the VM's disk, page cache warm). A load that overlaps receiving, hashing
# and unpacking takes about max(transfer, hash); one that runs them one after
# the other takes their sum. Target: load <= 1.3x max(transfer, hash).
# A third figure, `stored`, sends the bytes onto the VM's disk and syncs:
# the write a load makes too, which neither floor includes.
#
#   tests/bench/load.sh [MB...]        (default: 100 400; RUNS=2 each, best kept)
#
# Uses the installed berth and guest assets (packaging/setup.sh), or
# BERTH_BIN / BERTH_ASSETS; the VM and its home are removed on exit.
set -euo pipefail
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(100 400)
runs=${RUNS:-2}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
berth=${BERTH_BIN:-$HOME/.local/bin/berth}
docker=${DOCKER_CLI:-docker}
home=$(mktemp -d)
export BERTH_HOME=$home DOCKER_CONFIG=$home/docker-config
cleanup() { "$berth" stop >/dev/null 2>&1 || true; rm -rf "$home"; }
trap cleanup EXIT
printf '[vm]\ncpus = 2\nmemory-mib = 2048\ndisk-gib = 8\n' > "$home/config.toml"
"$berth" start >/dev/null
export DOCKER_HOST=unix://$home/run/docker.sock

ms() { local t0=$EPOCHREALTIME; "$@" >/dev/null; local t1=$EPOCHREALTIME; echo $(( (${t1/./} - ${t0/./}) / 1000 )); }
best() { local b=$1; shift; for v in "$@"; do [ "$v" -lt "$b" ] && b=$v; done; echo "$b"; }
in_vm() { "$berth" shell -- sh -c "$1"; }
transfer() { in_vm 'cat > /dev/null' < "$1"; }
hash_in_vm() { in_vm 'sha256sum /var/lib/berth/load-bench.tar'; }
# The same bytes through the channel onto the VM's disk, synced: what a load
# cannot skip either (its layers are that many bytes written), which the two
# floors above leave out.
store() { in_vm 'cat > /var/lib/berth/load-bench.tar && sync' < "$1"; }
load() { "$docker" load -i "$1"; }
unload() { "$docker" rmi -f "bigimage:$1" >/dev/null; }

printf '%-8s %11s %11s %11s %11s %8s %8s\n' "size" "transfer" "sha256" "stored" "load" "ratio" "/stored"
for mb in "${sizes[@]}"; do
  archive=$home/big-$mb.tar
  python3 "$here/big-image-archive.py" "$archive" "$mb" "bigimage:$mb" >/dev/null
  t=() h=() s=() l=()
  for _ in $(seq "$runs"); do
    s+=("$(ms store "$archive")")
    t+=("$(ms transfer "$archive")")
    h+=("$(ms hash_in_vm)")
    l+=("$(ms load "$archive")")
    unload "$mb"
  done
  in_vm 'rm -f /var/lib/berth/load-bench.tar'
  bt=$(best "${t[@]}") bh=$(best "${h[@]}") bs=$(best "${s[@]}") bl=$(best "${l[@]}")
  floor=$(( bt > bh ? bt : bh ))
  printf '%-8s %9d ms %9d ms %9d ms %9d ms %7.2fx %7.2fx\n' "${mb} MB" "$bt" "$bh" "$bs" "$bl" \
    "$(awk -v a="$bl" -v b="$floor" 'BEGIN { print a / b }')" "$(awk -v a="$bl" -v b="$bs" 'BEGIN { print a / b }')"
  rm -f "$archive"
done
echo "(ratio = load / max(transfer, sha256), target <= 1.3; /stored = load / stored; best of $runs; $(nproc) host cores, load average $(cut -d' ' -f1 /proc/loadavg))"
