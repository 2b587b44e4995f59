#!/usr/bin/env bash
# Builds the Berth guest kernel for another architecture than the host's
# (today: aarch64, cross-built with Debian's gcc-aarch64-linux-gnu) from the
# same Debian linux-source package as build.sh, cached by content hash
# (berth.config + <arch>.config + this script + source version + arch).
# Prints the directory that holds `Image` (uncompressed: what QEMU virt and
# Virtualization.framework boot) and `vmlinux`.
#
#   kernel-config/build-arch.sh aarch64
#
# Why a second script instead of an arch argument to build.sh: build.sh's own
# bytes are part of the x86_64 cache key, so any edit to it rebuilds the
# x86_64 kernel on every machine. Fold the two together when that rebuild is
# due anyway.
#
# Env: BERTH_BUILD_CACHE (default ~/.cache/berth-build), JOBS (default nproc).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
arch=${1:?usage: build-arch.sh aarch64}
cache=${BERTH_BUILD_CACHE:-$HOME/.cache/berth-build}
src_pkg=linux-source-6.1
src_tar=/usr/src/$src_pkg.tar.xz
jobs=${JOBS:-$(nproc)}

case "$arch" in
  aarch64) karch=arm64 image=arch/arm64/boot/Image cross=aarch64-linux-gnu- cross_pkg=gcc-aarch64-linux-gnu ;;
  *) echo "kernel: build-arch.sh knows no architecture '$arch' (known: aarch64)" >&2; exit 1 ;;
esac
if [ "$arch" = "$(uname -m)" ]; then cross=; fi

[ -f "$src_tar" ] || { echo "kernel: $src_tar missing; install Debian package $src_pkg (packaging/setup.sh does)" >&2; exit 1; }
[ -f "$here/$arch.config" ] || { echo "kernel: no config fragment for $arch ($here/$arch.config)" >&2; exit 1; }
if [ -n "$cross" ] && ! command -v "${cross}gcc" >/dev/null; then
  echo "kernel: ${cross}gcc missing; install Debian package $cross_pkg (BERTH_ARCHES=$arch packaging/setup.sh does)" >&2; exit 1
fi

src_ver=$(dpkg-query -W -f='${Version}' "$src_pkg")
key=$( { cat "$here/berth.config" "$here/$arch.config" "$here/build-arch.sh"; echo "$src_ver $arch"; } | sha256sum | cut -c1-16)
out=$cache/kernel/$arch-$key
if [ -f "$out/Image" ] && [ -f "$out/vmlinux" ]; then
  echo "$out"; exit 0
fi

work=$cache/kernel/build-$arch-$key
rm -rf "$work" && mkdir -p "$work"
trap 'rm -rf "$work"' EXIT
start=$(date +%s)
echo "kernel: building $src_pkg $src_ver for $arch (key $key), $jobs jobs" >&2
tar -C "$work" -xf "$src_tar"
cd "$work"/linux-source-*
kmake() { make -s ARCH="$karch" CROSS_COMPILE="$cross" "$@"; }
frag=$work/fragment.config
cat "$here/berth.config" "$here/$arch.config" > "$frag"
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

kmake -j"$jobs" vmlinux Image >&2
mkdir -p "$out.tmp"
cp "$image" "$out.tmp/Image"
cp vmlinux "$out.tmp/vmlinux"
"${cross}strip" --strip-debug "$out.tmp/vmlinux" 2>/dev/null || true
cp .config "$out.tmp/config"
echo "$src_ver" > "$out.tmp/source-version"
rm -rf "$out" && mv "$out.tmp" "$out"
echo "kernel: built in $(( $(date +%s) - start ))s -> $out" >&2
echo "$out"
