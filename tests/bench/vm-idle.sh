#!/usr/bin/env bash
# What an idle Berth VM costs the host, and what it gives back after a spike.
#   idle CPU     QEMU's CPU time over SECONDS with no container, in % of one
#                host core; side by side with the same VM on the jiffies
#                clocksource (what the guest used before `tsc=reliable`: a
#                periodic 250 Hz tick on every vCPU)
#   memory       QEMU's RSS idle, right after a container wrote 1 GB to
#                /dev/shm and exited, and 10 s / 30 s later (free page
#                reporting hands the freed pages back)
#
#   tests/bench/vm-idle.sh [SECONDS]     (default 60)
set -euo pipefail
seconds=${1:-60}
berth=${BERTH_BIN:-$HOME/.local/bin/berth}
here=$(cd "$(dirname "$0")" && pwd)
home=$(mktemp -d)
export BERTH_HOME=$home
cleanup() { "$berth" stop >/dev/null 2>&1 || true; rm -rf "$home"; }
trap cleanup EXIT
printf '[vm]\ncpus = 2\nmemory-mib = 1536\ndisk-gib = 4\nshares = []\n' > "$home/config.toml"

qemu_pid() { pgrep -f "qemu-system.*$home" | head -1; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_mib() { awk '/VmRSS/ {print int($2 / 1024)}' "/proc/$1/status"; }
idle_percent() {  # extra kernel args
  BERTH_KERNEL_ARGS=$1 "$berth" start >/dev/null
  sleep 5  # boot work settles
  local q a b hz
  q=$(qemu_pid); hz=$(getconf CLK_TCK)
  a=$(cpu_ticks "$q"); sleep "$seconds"; b=$(cpu_ticks "$q")
  "$berth" stop >/dev/null
  awk -v t=$((b - a)) -v hz="$hz" -v s="$seconds" 'BEGIN {printf "%.2f", 100 * t / hz / s}'
}

berth_idle=$(idle_percent "")
jiffies_idle=$(idle_percent "clocksource=refined-jiffies")

"$berth" start >/dev/null
docker=(docker -H "unix://$home/run/docker.sock")
python3 "$here/../images/busybox-archive.py" "$home/busybox.tar"
"${docker[@]}" load -i "$home/busybox.tar" >/dev/null
q=$(qemu_pid)
idle=$(rss_mib "$q")
"${docker[@]}" run --rm --shm-size 1100m busybox dd if=/dev/zero of=/dev/shm/spike bs=1M count=1000 2>/dev/null
spike=$(rss_mib "$q")
sleep 10; after10=$(rss_mib "$q")
sleep 20; after30=$(rss_mib "$q")

printf '%-34s %10s %10s\n' "idle CPU over ${seconds}s (% core)" "berth" "jiffies"
printf '%-34s %10s %10s\n' "" "$berth_idle" "$jiffies_idle"
printf '%-34s %8s MiB\n' "QEMU RSS idle" "$idle" "after a 1 GB container" "$spike" \
  "10 s later" "$after10" "30 s later" "$after30"
