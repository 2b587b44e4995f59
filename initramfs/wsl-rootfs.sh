#!/usr/bin/env bash
# The WSL 2 root filesystem: Berth's guest userland (the agent, busybox,
# mke2fs, nft, tini, CA certificates; the initramfs's own list, build.sh)
# as the tarball that `wsl --import berth <dir> berth-wsl-rootfs.tar
# --version 2` registers as the `berth` distro; the daemon starts the agent
# in it as a service (host/src/vm/wsl/plan.rs).
#
#   initramfs/wsl-rootfs.sh AGENT_BINARY [OUTPUT]   (default: berth-wsl-rootfs.tar)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
agent=${1:?usage: wsl-rootfs.sh AGENT_BINARY [OUTPUT]}
exec "$here/build.sh" --wsl "$agent" "${2:-berth-wsl-rootfs.tar}"
