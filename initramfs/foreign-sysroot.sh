#!/usr/bin/env bash
# Unpacks the Debian packages the initramfs carries, for another
# architecture than the host's, into a sysroot that initramfs/build.sh packs
# from. The .debs come from the machine's own apt sources (`apt-get
# download`, after `dpkg --add-architecture`), so the guest's userland is the
# same Debian release as the x86_64 one, and nothing is installed on the host.
# Cached by the packages' versions; prints the sysroot's directory.
#
#   initramfs/foreign-sysroot.sh aarch64
#
# Env: BERTH_BUILD_CACHE (default ~/.cache/berth-build).
set -euo pipefail
arch=${1:?usage: foreign-sysroot.sh aarch64}
case "$arch" in
  aarch64) debarch=arm64 ;;
  *) echo "initramfs: no Debian architecture known for '$arch' (known: aarch64)" >&2; exit 1 ;;
esac
cache=${BERTH_BUILD_CACHE:-$HOME/.cache/berth-build}
# What build.sh packs (busybox, mke2fs, nft, tini) and the libraries mke2fs
# and nft link (build.sh fails naming any library missing here).
pkgs=(busybox-static e2fsprogs tini nftables
  libc6 libext2fs2 libcom-err2 libblkid1 libuuid1
  libnftables1 libedit2 libmnl0 libnftnl11 libxtables12 libjansson4 libgmp10 libtinfo6 libbsd0 libmd0)

if ! dpkg --print-foreign-architectures | grep -qx "$debarch"; then
  echo "initramfs: apt knows no $debarch packages; run: dpkg --add-architecture $debarch && apt-get update" \
    "(BERTH_ARCHES=$arch packaging/setup.sh does)" >&2
  exit 1
fi
versions=$(for p in "${pkgs[@]}"; do
  v=$(apt-cache policy "$p:$debarch" | awk '/Candidate:/ {print $2}')
  [ -n "$v" ] && [ "$v" != "(none)" ] || { echo "initramfs: apt has no $p:$debarch (apt-get update?)" >&2; exit 1; }
  echo "$p=$v"
done)
key=$( { echo "$versions"; cat "$0"; } | sha256sum | cut -c1-16)
root=$cache/sysroot/$arch-$key
if [ -f "$root/.complete" ]; then echo "$root"; exit 0; fi

debs=$(mktemp -d)
chmod 0755 "$debs"  # apt downloads as _apt
trap 'rm -rf "$debs" "$root.tmp"' EXIT
rm -rf "$root.tmp" && mkdir -p "$root.tmp"
# shellcheck disable=SC2046  # one argument per package=version
(cd "$debs" && apt-get download -q $(sed "s/=/:$debarch=/" <<<"$versions") >&2)
for deb in "$debs"/*.deb; do dpkg-deb -x "$deb" "$root.tmp"; done
echo "$versions" > "$root.tmp/.versions"
touch "$root.tmp/.complete"
rm -rf "$root" && mv "$root.tmp" "$root"
echo "$root"
