#!/usr/bin/env bash
# Builds the Berth guest kernel from Debian's linux-source package, with our
# patches (kernel-config/*.patch, applied in name order), for this machine's
# architecture or another (cross-built with Debian's cross gcc), and caches it
# by content hash (config fragments + patches + this script + source version
# + arch). Prints the directory that holds the kernel:
#   x86_64:  vmlinux (PVH-bootable ELF) and bzImage
#   aarch64: Image (uncompressed: what QEMU virt and Virtualization.framework
#            boot) and vmlinux
#
#   kernel-config/build.sh [ARCH]        (ARCH: x86_64 or aarch64; default: uname -m)
#
# Env: BERTH_BUILD_CACHE (default ~/.cache/berth-build), JOBS (default nproc).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
arch=${1:-$(uname -m)}
cache=${BERTH_BUILD_CACHE:-$HOME/.cache/berth-build}
src_pkg=linux-source-6.1
src_tar=/usr/src/$src_pkg.tar.xz
jobs=${JOBS:-$(nproc)}

# Per architecture: kernel ARCH, the image files we keep, the cross compiler,
# and the fragments beyond berth.config (hyperv.config: the Windows HCS
# backend's drivers, x86_64 only for now).
case "$arch" in
  x86_64) karch=x86_64 images="arch/x86/boot/bzImage" cross=x86_64-linux-gnu- cross_pkg=gcc-x86-64-linux-gnu
    fragments="berth.config x86_64.config hyperv.config" ;;
  aarch64) karch=arm64 images="arch/arm64/boot/Image" cross=aarch64-linux-gnu- cross_pkg=gcc-aarch64-linux-gnu
    fragments="berth.config aarch64.config" ;;
  *) echo "kernel: no configuration for architecture '$arch' (known: x86_64, aarch64)" >&2; exit 1 ;;
esac
if [ "$arch" = "$(uname -m)" ]; then cross=; fi

[ -f "$src_tar" ] || { echo "kernel: $src_tar missing; install Debian package $src_pkg (packaging/setup.sh does)" >&2; exit 1; }
if [ -n "$cross" ] && ! command -v "${cross}gcc" >/dev/null; then
  echo "kernel: ${cross}gcc missing; install Debian package $cross_pkg (BERTH_ARCHES=$arch packaging/setup.sh does)" >&2; exit 1
fi

src_ver=$(dpkg-query -W -f='${Version}' "$src_pkg")
patches=$(ls "$here"/*.patch 2>/dev/null | sort || true)
frag_paths=
for f in $fragments; do frag_paths="$frag_paths $here/$f"; done
# shellcheck disable=SC2086 # one path per word
key=$( { cat $frag_paths "$here/build.sh" $patches; echo "$src_ver $arch"; } | sha256sum | cut -c1-16)
out=$cache/kernel/$arch-$key
done_marker=$out/$(basename "${images%% *}")
if [ -f "$out/vmlinux" ] && [ -f "$done_marker" ]; then
  echo "$out"; exit 0
fi

work=$cache/kernel/build-$arch-$key
rm -rf "$work" && mkdir -p "$work"
trap 'rm -rf "$work"' EXIT
start=$(date +%s)
echo "kernel: building $src_pkg $src_ver for $arch (key $key), $jobs jobs" >&2
tar -C "$work" -xf "$src_tar"
cd "$work"/linux-source-*
for p in $patches; do
  patch -s -p1 --forward < "$p" >&2 || { echo "kernel: $p does not apply to $src_pkg $src_ver" >&2; exit 1; }
done
kmake() { make -s ARCH="$karch" CROSS_COMPILE="$cross" "$@"; }
frag=$work/fragment.config
# shellcheck disable=SC2086
cat $frag_paths > "$frag"
kmake tinyconfig >&2
ARCH="$karch" CROSS_COMPILE="$cross" scripts/kconfig/merge_config.sh -m .config "$frag" >&2
kmake olddefconfig >&2

# Every option we asked for must have taken: a silently dropped option is a
# guest feature that is missing at run time.
missing=0
while IFS= read -r line; do
  case "$line" in CONFIG_*=*) ;; *) continue ;; esac
  opt=${line%%=*}; want=${line#*=}
  if [ "$want" = n ]; then
    if grep -q "^$opt=y" .config; then echo "kernel: $opt should be off" >&2; missing=1; fi
  elif ! grep -qx "$line" .config; then
    echo "kernel: $line did not take (got: $(grep "^$opt=\|# $opt " .config || echo unset))" >&2; missing=1
  fi
done < "$frag"
[ "$missing" = 0 ] || { echo "kernel: config fragment did not apply cleanly" >&2; exit 1; }

# shellcheck disable=SC2086
kmake -j"$jobs" vmlinux $(for i in $images; do basename "$i"; done) >&2
mkdir -p "$out.tmp"
cp vmlinux "$out.tmp/vmlinux"
"${cross}strip" --strip-debug "$out.tmp/vmlinux" 2>/dev/null || true
for i in $images; do cp "$i" "$out.tmp/"; done
cp .config "$out.tmp/config"
echo "$src_ver" > "$out.tmp/source-version"
rm -rf "$out" && mv "$out.tmp" "$out"
echo "kernel: built in $(( $(date +%s) - start ))s -> $out" >&2
echo "$out"
