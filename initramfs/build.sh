#!/usr/bin/env bash
# Packs the Berth initramfs: the static berth-agent as /init, busybox for
# `berth shell` and debugging, mke2fs (with its libraries) so the agent
# can format the data disk on first boot, nft (with its libraries) for the
# containers' bridge NAT and filtering, and Debian's static tini as
# /usr/libexec/berth/docker-init for `docker run --init` (Docker's own
# docker-init is tini too).
#
#   initramfs/build.sh AGENT_BINARY OUTPUT.cpio
#
# Reproducible: same inputs, same bytes (sorted entries, fixed mtimes and
# owners). Uncompressed on purpose: under software emulation the kernel
# copies an uncompressed archive faster than it can inflate a compressed one.
set -euo pipefail
agent=${1:?usage: build.sh AGENT_BINARY OUTPUT.cpio}
out=${2:?usage: build.sh AGENT_BINARY OUTPUT.cpio}
agent=$(realpath "$agent")
out=$(realpath -m "$out")
busybox=${BUSYBOX:-/bin/busybox}
mke2fs=$(command -v mke2fs || echo /sbin/mke2fs)
nft=$(command -v nft || echo /usr/sbin/nft)
tini=${TINI:-/usr/bin/tini-static}
for f in "$agent" "$busybox" "$mke2fs" "$nft" "$tini"; do
  [ -x "$f" ] || { echo "initramfs: missing $f (packaging/setup.sh installs it)" >&2; exit 1; }
done
# Bound into containers, whose images may have no libc.
if ldd "$tini" >/dev/null 2>&1; then
  echo "initramfs: $tini is not static; install Debian tini (tini-static)" >&2; exit 1
fi
# ldd succeeds only on dynamically linked programs.
if ldd "$busybox" >/dev/null 2>&1; then
  echo "initramfs: $busybox is not static; install Debian busybox-static" >&2; exit 1
fi

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cd "$stage"
mkdir -p bin sbin usr/bin usr/sbin etc root proc sys dev run tmp var/lib/berth lib lib64
install -m 0755 "$agent" init
# Symbols stay in the build's copy; the VM's (copied to a tmpfs at every
# boot, under TCG) is 2.4 MB smaller without them.
strip --strip-all init
install -m 0755 "$busybox" bin/busybox
"$busybox" --list-full | while read -r applet; do
  case "$applet" in linuxrc|sbin/init|"") continue ;; esac
  mkdir -p "$(dirname "$applet")"
  [ -e "$applet" ] || ln -s /bin/busybox "$applet"
done

# mke2fs and nft are dynamically linked: bring their libraries and the
# loader along.
install_dynamic() {  # PROGRAM DEST_DIR
  install -m 0755 "$1" "$2/$(basename "$1").real"
  rm -f "$2/$(basename "$1")" && mv "$2/$(basename "$1").real" "$2/$(basename "$1")"
  ldd "$1" | awk '/=>/ {print $3} /^\t\/lib/ {print $1}' | while read -r lib; do
    [ -f "$lib" ] || continue
    mkdir -p ".$(dirname "$lib")"
    # 0755: the kernel needs exec permission on the ELF interpreter.
    install -m 0755 "$(readlink -f "$lib")" ".$lib"
  done
}
install_dynamic "$mke2fs" sbin
install_dynamic "$nft" usr/sbin
[ -f /etc/mke2fs.conf ] && install -m 0644 /etc/mke2fs.conf etc/mke2fs.conf
mkdir -p usr/libexec/berth
install -m 0755 "$tini" usr/libexec/berth/docker-init
# Root certificates for image pulls over HTTPS (Debian's ca-certificates).
ca=/etc/ssl/certs/ca-certificates.crt
[ -f "$ca" ] || { echo "initramfs: $ca is missing; install Debian ca-certificates" >&2; exit 1; }
mkdir -p etc/ssl/certs
install -m 0644 "$ca" etc/ssl/certs/ca-certificates.crt

printf 'root:x:0:0:root:/root:/bin/sh\n' > etc/passwd
printf 'root:x:0:\ntty:x:5:\n' > etc/group
printf 'berth\n' > etc/hostname
printf '/bin/sh\n' > etc/shells
chmod 0700 root
chmod 1777 tmp

find . -exec touch -h -d @0 {} +
mkdir -p "$(dirname "$out")"
find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort | cpio --quiet -o -H newc --reproducible -R 0:0 > "$out.tmp"
mv "$out.tmp" "$out"
echo "initramfs: $(du -h "$out" | cut -f1) -> $out" >&2
