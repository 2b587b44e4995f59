#!/usr/bin/env bash
# One-stop set-up for a Debian 12 machine: system packages, Rust targets, the
# VM helper programs, the guest kernel, the agent + initramfs and the `berth`
# binary. Idempotent; expensive artifacts are cached by content hash in
# $BERTH_BUILD_CACHE (default ~/.cache/berth-build).
#
# Installs into $BERTH_PREFIX (default ~/.local):
#   bin/berth
#   share/berth/{vmlinux,initramfs.cpio}      guest kernel + initramfs
#   share/berth/bin/{virtiofsd,vhost-device-vsock,berth-agent}
#   share/berth/aarch64/{Image,initramfs.cpio}  the arm64 guest, only when asked:
#
#   BERTH_ARCHES="x86_64 aarch64" packaging/setup.sh
#
# (default: x86_64 alone, the guest the default setup has always built). The
# arm64 guest is cross-built here (Debian's gcc-aarch64-linux-gnu, arm64
# .debs for its userland) and runs under qemu-system-aarch64 `-M virt`.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${BERTH_BUILD_CACHE:-$HOME/.cache/berth-build}
prefix=${BERTH_PREFIX:-$HOME/.local}
share=$prefix/share/berth
export BERTH_BUILD_CACHE=$cache
log() { printf '[setup %s] %s\n' "$(date +%T)" "$*" >&2; }
arches=${BERTH_ARCHES:-x86_64}
wants_arch() { [[ " $arches " == *" $1 "* ]]; }
for a in $arches; do
  case "$a" in x86_64|aarch64) ;; *) log "BERTH_ARCHES: unknown architecture '$a' (known: x86_64 aarch64)"; exit 1 ;; esac
done

# --- system packages --------------------------------------------------------
apt_pkgs=(
  qemu-system-x86 qemu-utils          # the VM monitor
  passt                               # the VM uplink when asked ([vm] uplink = "passt"; slirp by default)
  linux-source-6.1 bc bison flex libelf-dev libssl-dev lz4 xz-utils cpio  # guest kernel
  busybox-static e2fsprogs binutils   # initramfs userland, mke2fs for the data disk, strip
  tini                                # `docker run --init` (tini-static, as Docker's docker-init)
  nftables                            # the VM's firewall and NAT (nft rides in the initramfs)
  iperf3                              # the networking benchmark
  libcap-ng-dev libseccomp-dev pkg-config  # virtiofsd build
  diod                                # the 9P file server of [vm] share-transport = "9p"
  protobuf-compiler musl-tools        # agent protocol, static agent
  curl ca-certificates
  python3 util-linux                  # test image builder (tests/images), script(1) for tty tests
  docker-registry skopeo              # a real local registry for the pull tests
  docker-compose                      # compose 1.29, the client of the compose tests
  zip unzip                           # the Windows zip (packaging/windows) and its test
  debootstrap                         # the package test's clean Debian 12 root (tests/package)
)
if wants_arch aarch64; then
  # Cross compiler and binutils for the kernel and the agent's link, the
  # emulator; the guest's arm64 userland comes as .debs (initramfs/foreign-sysroot.sh).
  # ring's C includes <stdint.h> and <string.h>: the cross gcc only recommends
  # the arm64 C headers, and we install without recommends.
  apt_pkgs+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-system-arm)
fi
if [ "${BERTH_CROSS_CHECK:-0}" = 1 ]; then
  # tests/run.sh links berth.exe (x86_64-pc-windows-gnu, .cargo/config.toml):
  # MinGW-w64's gcc and binutils. The win32 thread model alone (the -posix
  # variant would double the ~300 MB): Rust's std needs no winpthreads.
  apt_pkgs+=(gcc-mingw-w64-x86-64-win32)
fi
# The tests drive Berth with the real docker CLI; Debian ships it in docker.io.
command -v docker >/dev/null || apt_pkgs+=(docker.io)
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# qemu-utils must match qemu-system-x86's version (see below).
if [ "$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null)" != "$(dpkg-query -W -f='${Version}' qemu-system-x86 2>/dev/null)" ]; then
  missing+=(qemu-system-x86 qemu-utils)
fi
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  sudo_cmd=(); [ "$(id -u)" = 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -q >&2
  # Some images ship a newer qemu-utils than Debian 12's QEMU, which then
  # refuses to install beside it: pin both to the version apt offers for
  # qemu-system-x86 (a downgrade of qemu-utils where needed).
  qemu_ver=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ {print $2}')
  pkgs=()
  for p in "${missing[@]}"; do
    case "$p" in qemu-utils) ;; *) pkgs+=("$p") ;; esac
  done
  # Install services (docker.io's dockerd) without starting them: the
  # tests only need the docker CLI, and containers often cannot start them.
  policy=/usr/sbin/policy-rc.d
  added_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo_cmd[@]}" tee "$policy" >/dev/null
    "${sudo_cmd[@]}" chmod 0755 "$policy"
    added_policy=1
  fi
  status=0
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends \
    --allow-downgrades "${pkgs[@]}" "qemu-utils=$qemu_ver" >&2 || status=$?
  [ "$added_policy" = 0 ] || "${sudo_cmd[@]}" rm -f "$policy"
  [ "$status" = 0 ] || { log "apt-get install failed ($status)"; exit "$status"; }
fi

# --- Rust -------------------------------------------------------------------
command -v cargo >/dev/null || { log "cargo not found: install Rust with rustup first"; exit 1; }
want_targets=(x86_64-unknown-linux-musl)
wants_arch aarch64 && want_targets+=(aarch64-unknown-linux-musl)
[ "${BERTH_CROSS_CHECK:-0}" = 1 ] && want_targets+=(aarch64-apple-darwin x86_64-apple-darwin x86_64-pc-windows-gnu)
have_targets=$(rustup target list --installed)
for t in "${want_targets[@]}"; do
  grep -qx "$t" <<<"$have_targets" || { log "adding Rust target $t"; rustup target add "$t" >&2; }
done
# -msvc, the target Windows users get, is only checked (no MSVC linker
# here): best effort, since rustup's server may be out of reach; tests/run.sh
# checks it when it is installed.
if [ "${BERTH_CROSS_CHECK:-0}" = 1 ] && ! grep -qx x86_64-pc-windows-msvc <<<"$have_targets"; then
  log "adding Rust target x86_64-pc-windows-msvc (best effort)"
  timeout 300 rustup target add x86_64-pc-windows-msvc >&2 || log "could not add x86_64-pc-windows-msvc: its check is skipped"
fi

# --- helper programs from crates.io, cached by name+version -----------------
install_tool() {  # name version bin
  local name=$1 version=$2 bin=$3 dir=$cache/tools/$1-$2
  if [ ! -x "$dir/bin/$bin" ]; then
    log "building $name $version from crates.io (cached in $dir)"
    cargo install --quiet --locked --version "$version" --root "$dir.tmp" "$name" >&2
    rm -rf "$dir" && mv "$dir.tmp" "$dir"
  fi
  mkdir -p "$share/bin"
  install -m 0755 "$dir/bin/$bin" "$share/bin/$bin"
}
install_tool virtiofsd 1.14.0 virtiofsd
install_tool vhost-device-vsock 0.3.0 vhost-device-vsock

# --- guest kernel -----------------------------------------------------------
kdir=$("$repo/kernel-config/build.sh")
mkdir -p "$share"
install -m 0644 "$kdir/vmlinux" "$share/vmlinux"
install -m 0644 "$kdir/bzImage" "$share/bzImage"

# --- agent, initramfs, host binary ------------------------------------------
log "building berth-agent (static musl) and berth"
(cd "$repo" && cargo build --quiet --release -p berth-agent --target x86_64-unknown-linux-musl >&2)
(cd "$repo" && cargo build --quiet --release -p berth >&2)
"$repo/initramfs/build.sh" "$repo/target/x86_64-unknown-linux-musl/release/berth-agent" "$share/initramfs.cpio" >&2
# The same static agent, for the local backend (no VM).
install -m 0755 "$repo/target/x86_64-unknown-linux-musl/release/berth-agent" "$share/bin/berth-agent"
mkdir -p "$prefix/bin"
install -m 0755 "$repo/target/release/berth" "$prefix/bin/berth"

# --- the arm64 guest (only when asked) ---------------------------------------
if wants_arch aarch64; then
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    log "adding Debian's arm64 architecture (for the guest's userland .debs)"
    sudo_cmd=(); [ "$(id -u)" = 0 ] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" dpkg --add-architecture arm64
    "${sudo_cmd[@]}" apt-get update -q >&2
  fi
  log "building the arm64 guest: kernel, berth-agent, initramfs"
  kdir=$("$repo/kernel-config/build.sh" aarch64)
  mkdir -p "$share/aarch64"
  install -m 0644 "$kdir/Image" "$share/aarch64/Image"
  (cd "$repo" && cargo build --quiet --release -p berth-agent --target aarch64-unknown-linux-musl >&2)
  "$repo/initramfs/build.sh" --arch aarch64 "$repo/target/aarch64-unknown-linux-musl/release/berth-agent" \
    "$share/aarch64/initramfs.cpio" >&2
fi
log "ready: $prefix/bin/berth (assets in $share)"
