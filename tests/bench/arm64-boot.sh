#!/usr/bin/env bash
# arm64 boot benchmark: `berth start` of the arm64 guest (qemu-system-aarch64
# -M virt) to ready vs the floor, with the x86_64 guest's figures beside it,
# in one run on one machine. The method is boot.sh's:
#
#   floor = the same kernel on the same machine, accelerator, CPUs and
#           memory, booting a trivial static init (busybox of the guest's
#           arch) that prints a line and powers off: QEMU spawn to that line
#   berth = `berth start` wall time (CLI -> daemon -> helpers -> QEMU ->
#           agent init -> the agent's readiness), data disk already formatted
#
# On an x86_64 host the arm64 guest is emulated (TCG) whatever the x86_64
# one gets (KVM where usable): the ratio is the comparison that holds.
# Usage: tests/bench/arm64-boot.sh [RUNS]   (needs BERTH_ARCHES="x86_64 aarch64" packaging/setup.sh)
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
runs=${1:-5}
prefix=${BERTH_PREFIX:-$HOME/.local}
assets=${BERTH_ASSETS:-$prefix/share/berth}
berth=${BERTH_BIN:-$prefix/bin/berth}
cpus=${BENCH_CPUS:-1}
mem=${BENCH_MEMORY_MIB:-1024}
work=$(mktemp -d)
export BERTH_ASSETS=$assets
for f in "$assets/aarch64/Image" "$assets/aarch64/initramfs.cpio"; do
  [ -f "$f" ] || { echo "no $f: build the arm64 guest (BERTH_ARCHES=\"x86_64 aarch64\" packaging/setup.sh)" >&2; exit 1; }
done
homes=()
cleanup() {
  for h in "${homes[@]}"; do BERTH_HOME=$h "$berth" stop >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
trap cleanup EXIT
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : int((a[NR/2]+a[NR/2+1])/2))}'; }
minmax() { sort -n | awk 'NR==1 {min=$1} {max=$1} END {print min, max}'; }

# --- the floors: a trivial init of each arch on its kernel ----------------------
floor_cpio() {  # BUSYBOX OUT
  local root=$work/floor-root-$$-$RANDOM
  mkdir -p "$root"/{bin,dev}
  cp "$1" "$root/bin/busybox"
  printf '#!/bin/busybox sh\n/bin/busybox mount -t devtmpfs dev /dev\necho FLOOR-READY > /dev/console\n/bin/busybox reboot -f\n' > "$root/init"
  chmod +x "$root/init"
  (cd "$root" && find . | cpio --quiet -o -H newc -R 0:0) > "$2"
}
floor_cpio "$(command -v busybox)" "$work/floor-x86_64.cpio"
floor_cpio "$("$repo/initramfs/foreign-sysroot.sh" aarch64)/bin/busybox" "$work/floor-aarch64.cpio"

kvm_ok() { grep -qwE 'vmx|svm' /proc/cpuinfo && [ -w /dev/kvm ]; }
x86_accel=(-accel tcg,thread=multi -cpu max)
if [ "${BERTH_ACCEL:-auto}" = kvm ] || { [ "${BERTH_ACCEL:-auto}" = auto ] && kvm_ok; }; then x86_accel=(-accel kvm -cpu host); fi
tsc_khz=$(awk -F: '/^cpu MHz/ {printf "%d", $2 * 1000; exit}' /proc/cpuinfo)
x86_kernel=$assets/vmlinux; [ -f "$x86_kernel" ] || x86_kernel=$assets/bzImage

# The machine arguments berth's QEMU plan uses (host/src/vm/qemu_machine.rs).
floor_cmd() {  # ARCH OUT
  local memargs=(-object "memory-backend-memfd,id=mem,size=${mem}M,share=on" -m "${mem}M" -smp "$cpus")
  case "$1" in
    x86_64) echo qemu-system-x86_64 -nodefaults -no-user-config -nographic -no-reboot "${x86_accel[@]}" \
      -M microvm,memory-backend=mem "${memargs[@]}" -kernel "$x86_kernel" -initrd "$work/floor-x86_64.cpio" \
      -append "'console=ttyS0 quiet reboot=t panic=-1 8250.nr_uarts=1 cryptomgr.notests tsc=reliable tsc_early_khz=$tsc_khz'" \
      -serial "file:$2" ;;
    aarch64) echo qemu-system-aarch64 -nodefaults -no-user-config -nographic -no-reboot -accel tcg,thread=multi -cpu max \
      -M virt,gic-version=max,memory-backend=mem "${memargs[@]}" -kernel "$assets/aarch64/Image" \
      -initrd "$work/floor-aarch64.cpio" -append "'console=ttyAMA0 quiet panic=-1 cryptomgr.notests'" \
      -serial "file:$2" ;;
  esac
}
floor_once() {  # ARCH
  local out=$work/floor-$1.out start end pid
  rm -f "$out"
  start=$(now_ms)
  eval "$(floor_cmd "$1" "$out")" &
  pid=$!
  until grep -q FLOOR-READY "$out" 2>/dev/null; do
    kill -0 "$pid" 2>/dev/null || { echo "the $1 floor VM exited without its line:" >&2; cat "$out" >&2; exit 1; }
    sleep 0.002
  done
  end=$(now_ms)
  wait "$pid" || true
  echo $(( end - start ))
}

# --- berth start of each arch ---------------------------------------------------
berth_home() {  # ARCH -> home dir (formatted disk)
  local home=$work/home-$1
  mkdir -p "$home" "$work/share"
  printf '[vm]\narch = "%s"\ncpus = %s\nmemory-mib = %s\ndisk-gib = 4\nshares = ["%s"]\n' \
    "$1" "$cpus" "$mem" "$work/share" > "$home/config.toml"
  homes+=("$home")
  # The first boot formats the data disk: not what is measured.
  BERTH_HOME=$home "$berth" start >/dev/null && BERTH_HOME=$home "$berth" stop >/dev/null
  echo "$home"
}
berth_once() {  # HOME
  local start end
  start=$(now_ms)
  BERTH_HOME=$1 "$berth" start >/dev/null
  end=$(now_ms)
  BERTH_HOME=$1 "$berth" stop >/dev/null
  echo $(( end - start ))
}

declare -A floor ours
for arch in x86_64 aarch64; do
  home=$(berth_home "$arch")
  f=(); o=()
  for _ in $(seq "$runs"); do
    f+=("$(floor_once "$arch")")
    o+=("$(berth_once "$home")")
  done
  floor[$arch]="${f[*]}"
  ours[$arch]="${o[*]}"
done

row() {  # LABEL VALUES...
  local label=$1; shift
  printf '  %-50s %8s %8s %8s\n' "$label" "$(printf '%s\n' "$@" | median)" $(printf '%s\n' "$@" | minmax)
}
printf '\nBoot to ready (%s runs, %s vCPU, %s MiB), milliseconds\n' "$runs" "$cpus" "$mem"
printf '  %-50s %8s %8s %8s\n' "" median min max
for arch in aarch64 x86_64; do
  accel=tcg; [ "$arch" = x86_64 ] && accel=${x86_accel[1]%%,*}
  # shellcheck disable=SC2086 # one run per word
  row "$arch floor (same kernel, trivial init; $accel)" ${floor[$arch]}
  # shellcheck disable=SC2086
  row "$arch berth start (agent ready)" ${ours[$arch]}
  # shellcheck disable=SC2086
  printf '  %-50s %8s\n' "$arch ratio berth/floor" "$(awk -v a="$(printf '%s\n' ${ours[$arch]} | median)" \
    -v b="$(printf '%s\n' ${floor[$arch]} | median)" 'BEGIN {printf "%.2f", a/b}')"
done
