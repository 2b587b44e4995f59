#!/usr/bin/env bash
# File sharing through a Berth VM, side by side in one run: the same work on
# a share (virtio-fs, what a bind mount is), on the VM's own disk (what a
# volume is) and on the host's filesystem directly (the ceiling).
#   seq write / seq read   one file of SEQ_MIB MiB (read after dropping the
#                          guest's page cache)
#   create                 FILES small files in 50 directories (the shell's
#                          own echo: no process per file, which under TCG
#                          would be most of what is measured)
#   stat                   stat of all of them (a cold `find -exec stat`)
#   walk                   a `git status`-like tree walk (find -type f)
#   writes                 FILES 2-byte writes to one open file: on a share
#                          each is one FUSE round trip to the host, the floor
#                          under every other figure there (a small file's
#                          create is two: CREATE and its WRITE)
#
#   tests/bench/files.sh [FILES] [SEQ_MIB]     (defaults: 5000 256)
#
# BENCH_TMP (default /tmp) is where the share and the VM's home (its disk
# image) go: BENCH_TMP=/dev/shm takes the host's disk out of both columns,
# for a host disk that is slow to create files (one here took 4.6 s for
# 5,000 in /tmp, 0.14 s in /dev/shm).
set -euo pipefail
files=${1:-5000}
seq_mib=${2:-256}
berth=${BERTH_BIN:-$HOME/.local/bin/berth}
home=$(mktemp -d -p "${BENCH_TMP:-/tmp}")
share=$(mktemp -d -p "${BENCH_TMP:-/tmp}")
export BERTH_HOME=$home
cleanup() { "$berth" stop >/dev/null 2>&1 || true; rm -rf "$home" "$share"; }
trap cleanup EXIT
printf '[vm]\ncpus = 2\nmemory-mib = 1024\ndisk-gib = 4\nshares = ["%s"]\n' "$share" > "$home/config.toml"
"$berth" start >/dev/null

# Each step starts with the host's disk idle: the write-back of the step
# before (256 MiB of seq write, the VM disk's image) would otherwise land in
# whichever step comes next, and this machine's disk made a host-side create
# of the same files take 0.4 s in one run and 5 s three runs later.
ms() { sync; local t0=$EPOCHREALTIME; "$@" >/dev/null; local t1=$EPOCHREALTIME; echo $(( (${t1/./} - ${t0/./}) / 1000 )); }
in_vm() { "$berth" shell -- sh -c "$1"; }
# The first `berth shell` after boot takes 3-4 times as long as later ones
# (168 vs 44-50 ms here): not the round trip every step pays.
in_vm true
base=$(ms in_vm true)
per_dir=$((files / 50))
create="for d in \$(seq 1 50); do mkdir -p D/\$d; for f in \$(seq 1 $per_dir); do echo small-file-contents > D/\$d/\$f; done; done"
stat_all="find D -type f -exec stat -c %s {} + | wc -l"
walk="find D -type f | wc -l"
seq_write="dd if=/dev/zero of=D/seq bs=1M count=$seq_mib conv=fsync 2>/dev/null"
seq_read="dd if=D/seq of=/dev/null bs=1M 2>/dev/null"
writes="exec 3>D/w; for i in \$(seq 1 $files); do echo x >&3; done"
drop="sync; echo 3 > /proc/sys/vm/drop_caches"

# One row: the same steps through `run` (in the VM, or a host shell), with
# `drop` between them (the guest's caches; the host's are left warm) and
# `b` ms (the VM round trip) taken off each.
row() {  # run drop b dir label
  local run=$1 drop=$2 b=$3 d=$4 w r c s k n
  $run "mkdir -p $d"
  w=$(ms $run "${seq_write//D/$d}")
  $run "$drop"
  r=$(ms $run "${seq_read//D/$d}")
  c=$(ms $run "${create//D/$d}")
  $run "$drop"
  s=$(ms $run "${stat_all//D/$d}")
  $run "$drop"
  k=$(ms $run "${walk//D/$d}")
  n=$(ms $run "${writes//D/$d}")
  printf '%-22s %9d %9d %9d %9d %9d %9d\n' "$5" $((w - b)) $((r - b)) $((c - b)) $((s - b)) $((k - b)) $((n - b))
}
on_host() { sh -c "$1"; }

# This kind of machine is itself a VM, and time its hypervisor takes away
# (steal) hits the share's column, which waits on three host threads per
# round trip, far harder than the VM disk's: two runs here, 6% stolen ->
# create 9.6 s on the share, 14% -> 16.2 s, the VM disk 3.4 and 3.2 s. The
# closing line says how much was stolen, so runs can be compared.
cpu_ticks() { awk '/^cpu / {t = 0; for (i = 2; i <= 9; i++) t += $i; print $9, t}' /proc/stat; }
read -r steal0 all0 < <(cpu_ticks)

printf '%-22s %9s %9s %9s %9s %9s %9s   (ms; %d files, %d MiB; VM round trip %d ms subtracted)\n' \
  "" "seq-write" "seq-read" "create" "stat" "walk" "writes" "$files" "$seq_mib" "$base"
row in_vm "$drop" "$base" "$share/vm" "bind mount (virtio-fs)"
row in_vm "$drop" "$base" /var/lib/berth/bench "VM disk (volume)"
row on_host : 0 "$share/host" "host filesystem"
read -r steal1 all1 < <(cpu_ticks)
awk -v s=$((steal1 - steal0)) -v a=$((all1 - all0)) \
  'BEGIN {printf "host CPU stolen by its hypervisor during the run: %.1f%%\n", a ? 100 * s / a : 0}'
