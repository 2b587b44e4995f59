#!/usr/bin/env bash
# Builds the Berth guest kernel from Debian's linux-source package, with our
# patches (kernel-config/*.patch, applied in name order), and caches it by
# content hash (config fragments + patches + this script + source version + arch).
# Prints the directory that holds `vmlinux` (PVH-bootable ELF) and `bzImage`.
#
#   kernel-config/build.sh [--print-dir]
#
# Env: BERTH_BUILD_CACHE (default ~/.cache/berth-build), JOBS (default nproc).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
arch=$(uname -m)
cache=${BERTH_BUILD_CACHE:-$HOME/.cache/berth-build}
src_pkg=linux-source-6.1
src_tar=/usr/src/$src_pkg.tar.xz
jobs=${JOBS:-$(nproc)}

[ -f "$src_tar" ] || { echo "kernel: $src_tar missing; install Debian package $src_pkg (packaging/setup.sh does)" >&2; exit 1; }
[ -f "$here/$arch.config" ] || { echo "kernel: no config fragment for $arch ($here/$arch.config)" >&2; exit 1; }

src_ver=$(dpkg-query -W -f='${Version}' "$src_pkg")
patches=$(ls "$here"/*.patch 2>/dev/null | sort || true)
# shellcheck disable=SC2086 # one patch path per word
key=$( { cat "$here/berth.config" "$here/$arch.config" "$here/build.sh" $patches; echo "$src_ver $arch"; } | sha256sum | cut -c1-16)
out=$cache/kernel/$arch-$key
if [ -f "$out/vmlinux" ] && [ -f "$out/bzImage" ]; then
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
frag=$work/fragment.config
cat "$here/berth.config" "$here/$arch.config" > "$frag"
make -s ARCH="$arch" tinyconfig >&2
scripts/kconfig/merge_config.sh -m .config "$frag" >&2
make -s ARCH="$arch" olddefconfig >&2

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

make -s ARCH="$arch" -j"$jobs" vmlinux bzImage >&2
mkdir -p "$out.tmp"
cp vmlinux "$out.tmp/vmlinux"
strip --strip-debug "$out.tmp/vmlinux" 2>/dev/null || true
cp arch/x86/boot/bzImage "$out.tmp/bzImage"
cp .config "$out.tmp/config"
echo "$src_ver" > "$out.tmp/source-version"
rm -rf "$out" && mv "$out.tmp" "$out"
echo "kernel: built in $(( $(date +%s) - start ))s -> $out" >&2
echo "$out"
