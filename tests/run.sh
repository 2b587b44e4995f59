#!/usr/bin/env bash
# Sets everything up (packaging/setup.sh) and runs the whole test suite:
# unit tests, the local-agent protocol test, the end-to-end VM tests, and the
# cross-platform compile checks of the host crate (macOS, Windows).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
prefix=${BERTH_PREFIX:-$HOME/.local}
export BERTH_CROSS_CHECK=1
# The suite proves the arm64 guest too (tests/vm/arm64.rs): its assets are
# built, and the test fails rather than skips when they are missing.
BERTH_ARCHES="x86_64 aarch64" "$repo/packaging/setup.sh"
export BERTH_REQUIRE_ARM64=1

export BERTH_ASSETS=$prefix/share/berth
export BERTH_BIN=$prefix/bin/berth
cd "$repo"
echo "== cross-platform checks (host crate)" >&2
# -msvc (the target Windows users get) only where its std is installed:
# `check` needs no MSVC tools, but rustup may not reach its server.
windows_targets=x86_64-pc-windows-gnu
if rustup target list --installed 2>/dev/null | grep -qx x86_64-pc-windows-msvc; then
  windows_targets="$windows_targets x86_64-pc-windows-msvc"
fi
for target in aarch64-apple-darwin x86_64-apple-darwin $windows_targets; do
  timeout 900 cargo check --quiet -p berth --target "$target"
done
# cfg-gated code is only type-checked by `check`; the VZ, WSL and HCS
# backends and the Windows platform code are linted too, tests included.
for target in aarch64-apple-darwin x86_64-apple-darwin $windows_targets; do
  timeout 900 cargo clippy --quiet -p berth --all-targets --target "$target" -- -D warnings
done
# berth.exe linked (Debian's MinGW-w64, .cargo/config.toml): a debug build
# is enough to prove the link and read its import table.
echo "== berth.exe (x86_64-pc-windows-gnu)" >&2
timeout 1800 cargo build --quiet -p berth --target x86_64-pc-windows-gnu
packaging/windows/check-exe.sh "${CARGO_TARGET_DIR:-$repo/target}/x86_64-pc-windows-gnu/debug/berth.exe"
# The Windows zip and its winget manifests, from stand-in files.
packaging/windows/make-zip-test.sh
echo "== clippy (warnings are errors; every unsafe block documented)" >&2
timeout 900 cargo clippy --quiet --workspace --all-targets -- -D warnings
echo "== tests" >&2
# Each VM test boots its own VM; two at a time fit 2 cores.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
timeout 2400 cargo test --workspace --no-fail-fast -- --test-threads=2 2>&1 | tee "$log" || status=$?
# One closing line for the whole suite (cargo prints one per test binary).
awk '/^test result:/ {p += $4; f += $6; i += $8} END {printf "%d passed, %d failed, %d skipped\n", p, f, i}' \
  FS='[ ;.]+' "$log"
exit "$status"
