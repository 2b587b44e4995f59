#!/usr/bin/env bash
# Boot benchmark: `berth start` to ready vs the floor, in one run, same machine.
#
#   floor = the same kernel, same QEMU machine/accelerator/CPUs/memory,
#           booting a trivial init that prints a line (time from QEMU spawn
#           to that line on the serial console)
#   berth = `berth start` wall time (CLI -> daemon -> helpers -> QEMU ->
#           agent init -> vsock gRPC ping answered), data disk already formatted
#
# Also prints the idle RSS of the daemon and of the agent.
# Usage: tests/bench/boot.sh [RUNS]   (needs packaging/setup.sh done)
set -euo pipefail
runs=${1:-7}
prefix=${BERTH_PREFIX:-$HOME/.local}
assets=${BERTH_ASSETS:-$prefix/share/berth}
berth=${BERTH_BIN:-$prefix/bin/berth}
cpus=${BENCH_CPUS:-1}
mem=${BENCH_MEMORY_MIB:-1024}
work=$(mktemp -d)
export BERTH_HOME=$work/home BERTH_ASSETS=$assets
cleanup() { "$berth" stop >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
mkdir -p "$BERTH_HOME" "$work/share"
printf '[vm]\ncpus = %s\nmemory-mib = %s\ndisk-gib = 8\nshares = ["%s"]\n' "$cpus" "$mem" "$work/share" > "$BERTH_HOME/config.toml"

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# --- the floor: trivial init on the same kernel -----------------------------
floor_root=$work/floor-root
mkdir -p "$floor_root"/{bin,dev,proc}
cp "$(command -v busybox)" "$floor_root/bin/busybox"
cat > "$floor_root/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox mount -t devtmpfs dev /dev
echo FLOOR-READY > /dev/console
/bin/busybox reboot -f
INIT
chmod +x "$floor_root/init"
(cd "$floor_root" && find . | cpio --quiet -o -H newc -R 0:0) > "$work/floor.cpio"
tsc_khz=$(awk -F: '/^cpu MHz/ {printf "%d", $2 * 1000; exit}' /proc/cpuinfo)
kernel=$assets/vmlinux; [ -f "$kernel" ] || kernel=$assets/bzImage
case "${BERTH_ACCEL:-auto}" in
  kvm) accel=(-accel kvm -cpu host) ;;
  tcg) accel=(-accel tcg,thread=multi -cpu max) ;;
  *) if grep -qwE 'vmx|svm' /proc/cpuinfo && [ -w /dev/kvm ]; then accel=(-accel kvm -cpu host); else accel=(-accel tcg,thread=multi -cpu max); fi ;;
esac
floor_once() {
  local out=$work/floor.out start end
  rm -f "$out"
  start=$(now_ms)
  qemu-system-x86_64 -nodefaults -no-user-config -nographic -no-reboot "${accel[@]}" \
    -M microvm,memory-backend=mem -object "memory-backend-memfd,id=mem,size=${mem}M,share=on" \
    -m "${mem}M" -smp "$cpus" -kernel "$kernel" -initrd "$work/floor.cpio" \
    -append "console=ttyS0 quiet reboot=t panic=-1 8250.nr_uarts=1 cryptomgr.notests tsc_early_khz=$tsc_khz" \
    -serial "file:$out" &
  local pid=$!
  until grep -q FLOOR-READY "$out" 2>/dev/null; do sleep 0.002; done
  end=$(now_ms)
  wait "$pid" || true
  echo $(( end - start ))
}

berth_once() {
  local start end
  start=$(now_ms)
  "$berth" start >/dev/null
  end=$(now_ms)
  echo $(( end - start ))
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : int((a[NR/2]+a[NR/2+1])/2))}'; }

# First boot formats the data disk: not what we measure.
"$berth" start >/dev/null && "$berth" stop >/dev/null
floor=(); ours=()
for _ in $(seq "$runs"); do
  floor+=("$(floor_once)")
  ours+=("$(berth_once)")
  "$berth" stop >/dev/null
done
floor_med=$(printf '%s\n' "${floor[@]}" | median)
ours_med=$(printf '%s\n' "${ours[@]}" | median)

# --- idle memory --------------------------------------------------------------
"$berth" start >/dev/null
sleep 3
daemon_pid=$("$berth" status --json | sed -n 's/.*"daemon_pid": \([0-9]*\).*/\1/p')
daemon_rss=$(awk '/^VmRSS/ {print $2}' "/proc/$daemon_pid/status")
agent_rss=$("$berth" shell -- awk '/^VmRSS/ {print $2}' /proc/1/status | tr -d '\r')
"$berth" stop >/dev/null

printf '\nBoot to ready (%s runs, %s vCPU, %s MiB, accel %s), milliseconds\n' "$runs" "$cpus" "$mem" "${accel[1]%%,*}"
printf '  %-34s %8s %8s %8s\n' "" median min max
printf '  %-34s %8s %8s %8s\n' "floor (same kernel, trivial init)" "$floor_med" \
  "$(printf '%s\n' "${floor[@]}" | sort -n | head -1)" "$(printf '%s\n' "${floor[@]}" | sort -n | tail -1)"
printf '  %-34s %8s %8s %8s\n' "berth start (agent answering)" "$ours_med" \
  "$(printf '%s\n' "${ours[@]}" | sort -n | head -1)" "$(printf '%s\n' "${ours[@]}" | sort -n | tail -1)"
printf '  ratio berth/floor: %s   (target <= 1.20)\n' "$(awk -v a="$ours_med" -v b="$floor_med" 'BEGIN {printf "%.2f", a/b}')"
printf '\nIdle RSS\n'
printf '  berth daemon: %6.1f MiB   (target <= 30)\n' "$(awk -v k="$daemon_rss" 'BEGIN {print k/1024}')"
printf '  berth-agent:  %6.1f MiB   (target <= 20)\n' "$(awk -v k="$agent_rss" 'BEGIN {print k/1024}')"
