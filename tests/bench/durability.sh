#!/usr/bin/env bash
# What "acknowledged means durable" costs through a Berth VM, and which of the
# two ways is cheaper for the shape of work an image load or a container exit
# leaves behind: many freshly written files on the data disk.
#   syncfs    one syncfs(2) of the data filesystem (what the engine does)
#   fsync     an fsync(2) of every file and directory (the alternative)
# Each round writes FILES new 4 KiB files in 20 directories (not timed), then
# times one way; the other way gets its own fresh files. Printed side by side,
# with `berth shell true` (the round trip alone) subtracted.
#
#   tests/bench/durability.sh [FILES] [ROUNDS]     (defaults: 2000 3)
set -euo pipefail
files=${1:-2000}
rounds=${2:-3}
berth=${BERTH_BIN:-$HOME/.local/bin/berth}
home=$(mktemp -d)
export BERTH_HOME=$home
cleanup() { "$berth" stop >/dev/null 2>&1 || true; rm -rf "$home"; }
trap cleanup EXIT
printf '[vm]\ncpus = 2\nmemory-mib = 1024\ndisk-gib = 4\nshares = []\n' > "$home/config.toml"
"$berth" start >/dev/null

ms() { local t0=$EPOCHREALTIME; "$@" >/dev/null; local t1=$EPOCHREALTIME; echo $(( (${t1/./} - ${t0/./}) / 1000 )); }
make_files() {  # dir
  "$berth" shell -- sh -c "sync; mkdir -p $1; for d in \$(seq 1 20); do mkdir $1/\$d; \
    for f in \$(seq 1 $((files / 20))); do head -c 4096 /dev/urandom > $1/\$d/\$f; done; done"
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2 ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2)}'; }

base=() syncfs=() fsync=()
for round in $(seq 1 "$rounds"); do
  base+=("$(ms "$berth" shell -- true)")
  make_files "/var/lib/berth/bench-s$round"
  syncfs+=("$(ms "$berth" shell -- sync -f "/var/lib/berth/bench-s$round")")
  make_files "/var/lib/berth/bench-f$round"
  fsync+=("$(ms "$berth" shell -- sh -c "find /var/lib/berth/bench-f$round -exec sync {} +")")
done
b=$(printf '%s\n' "${base[@]}" | median)
s=$(printf '%s\n' "${syncfs[@]}" | median)
f=$(printf '%s\n' "${fsync[@]}" | median)
printf 'durability of %d new files (median of %d, ms, round trip of %d ms subtracted)\n' "$files" "$rounds" "$b"
printf '  %-28s %8d\n' "syncfs of the data disk" $((s - b))
printf '  %-28s %8d\n' "fsync of each file and dir" $((f - b))
awk -v s=$((s - b)) -v f=$((f - b)) 'BEGIN { if (s > 0) printf "  fsync each / syncfs: %.1fx\n", f / s }'
