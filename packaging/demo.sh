#!/usr/bin/env bash
# Sets everything up and runs the main job: boot the Berth VM and run a
# command in it (what runs there: our kernel, the data disk, the shared home).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
prefix=${BERTH_PREFIX:-$HOME/.local}
"$repo/packaging/setup.sh"
berth=$prefix/bin/berth
"$berth" start
"$berth" status
# The host's home directory is shared into the VM at the same path.
"$berth" shell -- sh -c "echo; echo \"Hello from \$(uname -sr) in the Berth VM (\$(nproc) CPUs)\"; df -h /var/lib/berth '$HOME'"
