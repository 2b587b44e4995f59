#!/usr/bin/env bash
# Installs a Berth .deb in a clean Debian 12 root and uses it as a new user
# would: `apt-get install ./berth.deb`, `berth start`, `docker run --rm
# busybox echo ok`, `berth stop`, `apt-get purge berth`; then checks that the
# purge left no file under the package's paths and no process behind.
#
# usage: tests/package/debian-root.sh BERTH.deb BUSYBOX.tar    (as root)
#
# BUSYBOX.tar is a `docker save` archive (tests/images/busybox-archive.py):
# the machine reaches no registry, so the image is loaded first. The docker
# CLI is the host's (`command -v docker`), copied into the root: Debian 12
# ships it only inside docker.io, with a dockerd the test has no use for.
#
# The root is debootstrapped once per (suite, mirror, preinstalled packages)
# and kept in $BERTH_BUILD_CACHE/debian-root/<hash> (default
# ~/.cache/berth-build); the package's dependencies are preinstalled there, so
# a run needs no network. Each run writes to an overlay on top of the cached
# root, in a private mount namespace: the cache stays clean, and every mount
# goes away with the namespace even if the test is killed.
set -euo pipefail
deb=$(realpath "$1")
busybox_tar=$(realpath "$2")
[ "$(id -u)" = 0 ] || { echo "debian-root.sh: needs root (debootstrap, chroot, mounts)" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "debian-root.sh: debootstrap is missing (apt-get install debootstrap)" >&2; exit 1; }
docker_cli=$(command -v docker) || { echo "debian-root.sh: the docker CLI is missing" >&2; exit 1; }
cache=${BERTH_BUILD_CACHE:-$HOME/.cache/berth-build}/debian-root
suite=bookworm
mirror=${BERTH_DEBIAN_MIRROR:-http://deb.debian.org/debian}
log() { printf '[debian-root %s] %s\n' "$(date +%T)" "$*" >&2; }

# The package's dependencies, without version constraints: what apt would fetch.
preinstall=$(dpkg-deb -f "$deb" Depends | tr ',' '\n' | sed 's/[(|].*//; s/ //g' | grep . | sort -u | tr '\n' ' ')
key=$(printf '%s\n' "v1" "$suite" "$mirror" "$preinstall" | sha256sum | cut -c1-16)
root=$cache/$key
if [ ! -e "$root/.complete" ]; then
  log "debootstrapping Debian $suite with: $preinstall (cached in $root)"
  rm -rf "$root.tmp"
  mkdir -p "$cache"
  debootstrap --variant=minbase "$suite" "$root.tmp" "$mirror" >&2
  cp /etc/resolv.conf "$root.tmp/etc/resolv.conf"
  # No services start in a chroot (qemu's deps include some).
  printf '#!/bin/sh\nexit 101\n' >"$root.tmp/usr/sbin/policy-rc.d"
  chmod 0755 "$root.tmp/usr/sbin/policy-rc.d"
  # shellcheck disable=SC2086 # one word per package
  unshare --mount --propagation private sh -c "
    mount -t proc proc '$root.tmp/proc' &&
    chroot '$root.tmp' env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
      sh -c 'apt-get install -y -q --no-install-recommends $preinstall && apt-get clean'" >&2
  touch "$root.tmp/.complete"
  rm -rf "$root"
  mv "$root.tmp" "$root"
fi

work=$(mktemp -d /tmp/berth-debian-root.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/upper" "$work/overlay-work" "$work/merged"
cp "$deb" "$work/berth.deb"
cp "$busybox_tar" "$work/busybox.tar"

# Runs as root in the Debian root; `set -x` shows in the test's output which step failed.
cat >"$work/in-root.sh" <<'EOF'
set -eux
apt-get install -y -q --no-install-recommends /mnt/berth.deb
command -v berth
berth version
berth start --cpus 1 --memory 512M --disk 2G
berth doctor
berth list
docker load -i /mnt/busybox.tar
test "$(docker run --rm busybox echo ok)" = ok
berth stop
dpkg -L berth >/mnt/berth-files
apt-get purge -y -q berth
EOF

log "installing and using $(basename "$deb") in a Debian $suite root"
status=0
unshare --mount --propagation private sh -eu -c '
  work=$1 root=$2 docker_cli=$3
  m=$work/merged
  mount -t overlay overlay -o "lowerdir=$root,upperdir=$work/upper,workdir=$work/overlay-work" "$m"
  mount -t proc proc "$m/proc"
  mount --rbind /dev "$m/dev"
  mount -t sysfs sysfs "$m/sys"
  mount -t tmpfs tmpfs "$m/tmp"
  mkdir -p "$m/mnt" && mount --bind "$work" "$m/mnt"
  install -m 0755 "$docker_cli" "$m/usr/local/bin/docker"
  # Whatever happens, nothing started in the root outlives the test; a
  # process still there after `berth stop` fails it.
  leftovers() {
    for proc in /proc/[0-9]*; do
      [ "$(readlink "$proc/root" 2>/dev/null)" = "$m" ] && echo "${proc#/proc/}"
    done
    true
  }
  ran=0
  chroot "$m" env -i HOME=/root PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    DEBIAN_FRONTEND=noninteractive sh /mnt/in-root.sh || ran=$?
  pids=$(leftovers)
  if [ -n "$pids" ]; then
    for pid in $pids; do echo "still running in the root: $(tr "\0" " " <"/proc/$pid/cmdline")" >&2; done
    kill -9 $pids 2>/dev/null || true
    exit 1
  fi
  [ "$ran" = 0 ] || exit "$ran"
  # What the purge must have removed: every file the package listed, its
  # own directories, and the dpkg record of it.
  [ -s "$work/berth-files" ] || { echo "dpkg -L berth listed nothing" >&2; exit 1; }
  left=$(
    while read -r path; do
      if [ -e "$m$path" ] && [ ! -d "$m$path" ]; then echo "$path"; fi
    done <"$work/berth-files"
    for path in /usr/lib/berth /usr/share/doc/berth /var/lib/dpkg/info/berth.list; do
      if [ -e "$m$path" ]; then echo "$path"; fi
    done
  )
  [ -z "$left" ] || { echo "left after apt-get purge berth: $left" >&2; exit 1; }
' sh "$work" "$root" "$docker_cli" || status=$?
[ "$status" = 0 ] && log "ok: installed, ran busybox, stopped, purged clean"
exit "$status"
