#!/usr/bin/env bash
# Sets everything up and runs the main job: boot the Berth VM and run a
# container in it with the real docker CLI (our kernel, our engine, Docker's
# default isolation), then a command in the VM itself.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
prefix=${BERTH_PREFIX:-$HOME/.local}
"$repo/packaging/setup.sh"
berth=$prefix/bin/berth
"$berth" start
"$berth" status
# No registry is needed for the demo: an image of Debian's static busybox.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$repo/tests/images/busybox-archive.py" "$work/busybox.tar"
docker --context berth load -i "$work/busybox.tar"
docker --context berth run --rm --memory 64m busybox sh -c \
  'echo; echo "Hello from a container in the Berth VM: $(uname -sr), PID $$, hostname $(hostname)";
   echo "memory limit: $(cat /sys/fs/cgroup/memory.max) bytes; $(grep -E "^Seccomp:" /proc/self/status)"'
# The host's home directory is shared into the VM at the same path.
"$berth" shell -- sh -c "echo; echo \"The VM: \$(nproc) CPUs\"; df -h /var/lib/berth '$HOME'"
