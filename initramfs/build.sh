#!/usr/bin/env bash
# Packs the Berth initramfs: the static berth-agent as /init, busybox for
# `berth shell` and debugging, mke2fs (with its libraries) so the agent
# can format the data disk on first boot, nft (with its libraries) for the
# containers' bridge NAT and filtering, and Debian's static tini as
# /usr/libexec/berth/docker-init for `docker run --init` (Docker's own
# docker-init is tini too).
#
#   initramfs/build.sh [--arch ARCH] [--wsl] AGENT_BINARY OUTPUT
#
# --wsl packs the same userland as a root filesystem tarball for
# `wsl --import` (initramfs/wsl-rootfs.sh): there /init is Microsoft's, so
# the agent is /usr/bin/berth-agent (host/src/vm/wsl/plan.rs starts it as a
# service, `--service`), /etc/wsl.conf sets the distro up, and the output
# is a tar.
#
# ARCH defaults to the host's; for another one (aarch64) the userland comes
# from that architecture's Debian packages, unpacked by foreign-sysroot.sh,
# and AGENT_BINARY must be built for it.
#
# Reproducible: same inputs, same bytes (sorted entries, fixed mtimes and
# owners). Uncompressed on purpose: under software emulation the kernel
# copies an uncompressed archive faster than it can inflate a compressed one.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
arch=$(uname -m)
if [ "${1:-}" = --arch ]; then arch=${2:?--arch needs an architecture}; shift 2; fi
wsl=0
if [ "${1:-}" = --wsl ]; then wsl=1; shift; fi
agent=${1:?usage: build.sh [--arch ARCH] [--wsl] AGENT_BINARY OUTPUT}
out=${2:?usage: build.sh [--arch ARCH] [--wsl] AGENT_BINARY OUTPUT}
agent=$(realpath "$agent")
out=$(realpath -m "$out")
if [ "$arch" = "$(uname -m)" ]; then
  sysroot=
  tools=
  busybox=${BUSYBOX:-/bin/busybox}
  mke2fs=$(command -v mke2fs || echo /sbin/mke2fs)
  nft=$(command -v nft || echo /usr/sbin/nft)
  tini=${TINI:-/usr/bin/tini-static}
  mke2fs_conf=/etc/mke2fs.conf
else
  sysroot=$("$here/foreign-sysroot.sh" "$arch")
  tools=$arch-linux-gnu-
  command -v "${tools}strip" >/dev/null || { echo "initramfs: ${tools}strip missing; install Debian binutils-$arch-linux-gnu" >&2; exit 1; }
  busybox=$sysroot/bin/busybox
  mke2fs=$sysroot/sbin/mke2fs
  nft=$sysroot/usr/sbin/nft
  tini=$sysroot/usr/bin/tini-static
  mke2fs_conf=$sysroot/etc/mke2fs.conf
fi
for f in "$agent" "$busybox" "$mke2fs" "$nft" "$tini"; do
  [ -x "$f" ] || { echo "initramfs: missing $f (packaging/setup.sh installs it)" >&2; exit 1; }
done
# An ELF with a program interpreter is dynamically linked (readelf reads
# every architecture's ELF; ldd runs only the host's).
is_dynamic() { readelf -l "$1" 2>/dev/null | grep -q 'program interpreter'; }
is_elf_for() {  # FILE ARCH
  local machine
  machine=$(readelf -h "$1" 2>/dev/null | awk -F: '/Machine:/ {gsub(/^ +/, "", $2); print $2}')
  case "$2" in
    x86_64) [ "$machine" = "Advanced Micro Devices X86-64" ] ;;
    aarch64) [ "$machine" = AArch64 ] ;;
    *) return 1 ;;
  esac
}
is_elf_for "$agent" "$arch" || { echo "initramfs: $agent is not an $arch program" >&2; exit 1; }
# Bound into containers, whose images may have no libc.
if is_dynamic "$tini"; then
  echo "initramfs: $tini is not static; install Debian tini (tini-static)" >&2; exit 1
fi
if is_dynamic "$busybox"; then
  echo "initramfs: $busybox is not static; install Debian busybox-static" >&2; exit 1
fi
# The applet links: a foreign busybox cannot run here to list its own, so
# the host's lists them, which holds while both are the same Debian build.
if [ -n "$sysroot" ]; then
  host_bb=$(dpkg-query -W -f='${Version}' busybox-static 2>/dev/null || true)
  grep -qx "busybox-static=$host_bb" "$sysroot/.versions" || {
    echo "initramfs: the host's busybox-static ($host_bb) is not the $arch one ($(grep busybox-static= "$sysroot/.versions")); install the same version" >&2
    exit 1
  }
  applets_of=/bin/busybox
else
  applets_of=$busybox
fi

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cd "$stage"
mkdir -p bin sbin usr/bin usr/sbin etc root proc sys dev run tmp var/lib/berth lib lib64
agent_path=init
[ "$wsl" = 0 ] || agent_path=usr/bin/berth-agent
mkdir -p "$(dirname "$agent_path")"
install -m 0755 "$agent" "$agent_path"
# Symbols stay in the build's copy; the VM's (copied to a tmpfs at every
# boot, under TCG) is 2.4 MB smaller without them.
"${tools}strip" --strip-all "$agent_path"
install -m 0755 "$busybox" bin/busybox
"$applets_of" --list-full | while read -r applet; do
  case "$applet" in linuxrc|sbin/init|"") continue ;; esac
  mkdir -p "$(dirname "$applet")"
  [ -e "$applet" ] || ln -s /bin/busybox "$applet"
done

# mke2fs and nft are dynamically linked: bring their libraries and the
# loader along.
install_dynamic() {  # PROGRAM DEST_DIR
  install -m 0755 "$1" "$2/$(basename "$1").real"
  rm -f "$2/$(basename "$1")" && mv "$2/$(basename "$1").real" "$2/$(basename "$1")"
  if [ -z "$sysroot" ]; then
    ldd "$1" | awk '/=>/ {print $3} /^\t\/lib/ {print $1}'
  else
    foreign_libs "$1"
  fi | while read -r lib; do
    [ -f "$sysroot$lib" ] || continue
    mkdir -p ".$(dirname "$lib")"
    # 0755: the kernel needs exec permission on the ELF interpreter.
    install -m 0755 "$(readlink -f "$sysroot$lib")" ".$lib"
  done
}
# What ldd would print for a foreign program: its interpreter and, found
# in the sysroot's multiarch directories the way Debian's loader searches
# them, every library it needs, recursively.
foreign_libs() {  # PROGRAM
  local todo=("$1") seen=" " file lib dir found
  readelf -l "$1" | sed -n 's/.*program interpreter: \(.*\)]/\1/p'
  while [ ${#todo[@]} -gt 0 ]; do
    file=${todo[0]}; todo=("${todo[@]:1}")
    for lib in $(readelf -d "$file" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p'); do
      case "$seen" in *" $lib "*) continue ;; esac
      seen="$seen$lib "
      found=
      for dir in /lib/$arch-linux-gnu /usr/lib/$arch-linux-gnu /lib /usr/lib; do
        if [ -e "$sysroot$dir/$lib" ]; then found=$dir/$lib; break; fi
      done
      [ -n "$found" ] || { echo "initramfs: $lib (needed by $(basename "$file")) is not in $sysroot; add its package to foreign-sysroot.sh" >&2; exit 1; }
      echo "$found"
      todo+=("$(readlink -f "$sysroot$found")")
    done
  done
}
install_dynamic "$mke2fs" sbin
install_dynamic "$nft" usr/sbin
[ -f "$mke2fs_conf" ] && install -m 0644 "$mke2fs_conf" etc/mke2fs.conf
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
if [ "$wsl" = 1 ]; then
  # No boot command: the agent's key is made by the daemon at each start,
  # so the daemon starts the agent (`wsl.exe --exec`, the key through
  # WSLENV); a boot command's agent would have no key, refuse everyone and
  # hold port 1024. No systemd (WSL's init reaps; the agent mounts cgroup
  # v2 itself); Windows drives at /mnt/<letter> with Linux metadata, where
  # Docker Desktop's paths put them.
  cat > etc/wsl.conf <<'WSL'
[boot]
systemd = false

[automount]
enabled = true
root = /mnt/
options = "metadata"
mountFsTab = false

[network]
hostname = berth
generateHosts = true
generateResolvConf = true

[interop]
enabled = false
appendWindowsPath = false

[user]
default = root
WSL
  chmod 0644 etc/wsl.conf
fi

find . -exec touch -h -d @0 {} +
mkdir -p "$(dirname "$out")"
if [ "$wsl" = 1 ]; then
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf "$out.tmp" .
else
  find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort | cpio --quiet -o -H newc --reproducible -R 0:0 > "$out.tmp"
fi
mv "$out.tmp" "$out"
echo "initramfs: $(du -h "$out" | cut -f1) -> $out" >&2
