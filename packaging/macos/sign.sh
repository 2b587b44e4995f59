#!/usr/bin/env bash
# Ad-hoc signs a berth binary with the entitlements Virtualization.framework
# requires (com.apple.security.virtualization): without them `berth start`
# fails with "the VM configuration is invalid ... entitlement". The VM
# helper is the same binary (`berth vz-vmm`), so one signature covers both.
# An ad-hoc signature is enough on the Mac that built the binary; giving it
# to other Macs needs a Developer ID signature and notarisation instead.
#
# Usage: packaging/macos/sign.sh [path/to/berth]   (default: target/release/berth)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [ "$(uname -s)" != Darwin ]; then
  echo "sign.sh: codesign exists only on macOS; run this on the Mac that builds berth" >&2
  exit 1
fi
binary=${1:-$here/../../target/release/berth}
if [ ! -f "$binary" ]; then
  echo "sign.sh: no berth binary at $binary (build it with \`cargo build --release -p berth\`)" >&2
  exit 1
fi
codesign --force --sign - --entitlements "$here/berth.entitlements" "$binary"
# Fails loudly if the entitlement did not make it into the signature.
codesign --display --entitlements - "$binary" 2>/dev/null | grep -q com.apple.security.virtualization || {
  echo "sign.sh: $binary is signed but lacks com.apple.security.virtualization" >&2
  exit 1
}
echo "signed $binary with $(basename "$here/berth.entitlements")" >&2
