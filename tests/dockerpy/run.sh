#!/usr/bin/env bash
# docker-py's own integration suite (the PyPI sdist of docker 6.1.3 ships
# tests/integration) against Berth (local backend, no VM) and/or a private
# dockerd 20.10 (Debian docker.io), offline.
#
#   tests/dockerpy/run.sh [berth|berth-vm|dockerd|both] [TEST_FILES...]
#
# berth-vm is Berth as users get it: a real Berth VM (TCG where KVM is not
# usable), with the installed guest assets (packaging/setup.sh) and /tmp
# shared into it, since the suite binds temporary host directories.
#
# TEST_FILES are paths inside the sdist (tests/integration/X.py, or just X.py,
# optionally with ::Class::test); default: api_container_test.py,
# api_exec_test.py and api_image_test.py.
#
# - A venv with docker==6.1.3 and what the suite imports (pytest 7.1.2 and
#   pytest-timeout 2.1.0 as its test-requirements.txt pins them, paramiko,
#   requests < 2.32: docker 6.1.3 breaks with 2.32) and the sdist's tests/
#   are cached in ~/.cache/berth-build/dockerpy/<version>-py<X.Y>/.
# - Images: images.py builds stand-ins from the host's static busybox
#   (alpine:3.10 = the suite's TEST_IMG, alpine:latest, busybox:latest,
#   hello-world:latest) and `docker load`s them into each engine through the
#   API. The same images are served by a tiny local registry (images.py
#   registry) that dockerd uses as its docker.io mirror, so the suite's pull
#   tests work offline there; Berth gets the same mirror through
#   `[engine] registry-mirrors` in $BERTH_HOME/config.toml.
# - Berth: release binaries (in $CARGO_TARGET_DIR or target/; built first if missing or older than a source
#   file, after waiting for any running `cargo build`), copied into a temp dir
#   so a concurrent rebuild cannot swap them mid-run; BERTH_HOME and the
#   assets dir are fresh temp dirs; DOCKER_CONFIG points into the temp dir
#   (`berth start` makes its docker context current there, not in ~/.docker).
# - dockerd: own data-root, exec-root, pidfile, socket and config file in a
#   temp dir, --iptables=false, its own bridge (dpy<pid>, a private /24,
#   removed afterwards), its own cgroup parent.
# - pytest runs once per file, with DOCKER_HOST at the engine's unix socket
#   (DOCKERPY_TRANSPORT=tcp puts a TCP forwarder in front of the socket, for
#   either engine alike: the websocket attach test needs tcp://),
#   DOCKER_TEST_API_VERSION=1.41 (the newest dockerd 20.10 speaks; Berth's
#   minimum), a per-test timeout of DOCKERPY_TIMEOUT seconds (60) and a
#   per-file limit of DOCKERPY_FILE_TIMEOUT seconds (2400).
# - Results: $BERTH_DOCKERPY_RESULTS/<engine>/ (default
#   /tmp/dockerpy-results/<engine>/): junit-<file>.xml, pytest-<file>.log,
#   failures.txt, summary.txt, engine logs; with `both`, also
#   berth-only-failures.txt (tests that fail on Berth but pass on dockerd).
# Everything started is stopped and every temp dir removed on exit, Ctrl-C
# or failure. Needs root (the local backend and dockerd do).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
mode=${1:-both}
[ $# -gt 0 ] && shift
case $mode in berth|berth-vm|dockerd|both) ;; *) echo "usage: $0 [berth|berth-vm|dockerd|both] [TEST_FILES...]" >&2; exit 2 ;; esac
files=("$@")
[ ${#files[@]} -gt 0 ] || files=(api_container_test.py api_exec_test.py api_image_test.py)

dpy_version=${DOCKERPY_VERSION:-6.1.3}
api_version=${DOCKER_TEST_API_VERSION:-1.41}
test_timeout=${DOCKERPY_TIMEOUT:-60}
file_timeout=${DOCKERPY_FILE_TIMEOUT:-2400}
transport=${DOCKERPY_TRANSPORT:-unix}
results_base=${BERTH_DOCKERPY_RESULTS:-/tmp/dockerpy-results}
pyver=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
cache=${XDG_CACHE_HOME:-$HOME/.cache}/berth-build/dockerpy/$dpy_version-py$pyver
py=$cache/venv/bin/python

say() { printf '%s\n' "$*" >&2; }
die() { printf '\n*** %s\n' "$*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (Berth's local backend and dockerd run containers on this host)"

work=$(mktemp -d /tmp/dockerpy.XXXXXX)
pids=()              # helpers started in the background (registry, forwarders)
berth_home="" berth_bin="" dockerd_pid="" pytest_pid="" bridge="" cgroup_parent="dockerpy-$$"

# --- cleanup: everything this script started -------------------------------------
stop_berth() {
  [ -n "$berth_home" ] || return 0
  BERTH_HOME=$berth_home DOCKER_CONFIG=$work/docker-config timeout 90 "$berth_bin" stop >/dev/null 2>&1 || true
  # Whatever still runs from this run's private copies of the binaries (the
  # daemon, the agent) if `berth stop` did not end it.
  local p exe
  for p in /proc/[0-9]*; do
    exe=$(readlink "$p/exe" 2>/dev/null) || continue
    case $exe in "$berth_bin"|"$work/assets/bin/berth-agent") kill -KILL "${p#/proc/}" 2>/dev/null || true ;; esac
  done
  cp "$berth_home"/logs/* "$results_base/berth/" 2>/dev/null || true
  unmount_below "$berth_home"
  rm -rf --one-file-system "$berth_home"
  berth_home=""
}
stop_dockerd() {
  [ -n "$dockerd_pid" ] || return 0
  local i
  kill -TERM "$dockerd_pid" 2>/dev/null || true
  for i in $(seq 150); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.2; done
  kill -KILL "$dockerd_pid" 2>/dev/null || true
  wait "$dockerd_pid" 2>/dev/null || true
  dockerd_pid=""
  cp "$work/dockerd/log" "$results_base/dockerd/dockerd.log" 2>/dev/null || true
  for i in /sys/fs/cgroup/*/"$cgroup_parent"; do [ -d "$i" ] && { find "$i" -depth -type d -exec rmdir {} \; 2>/dev/null || true; }; done
  if [ -n "$bridge" ]; then ip link delete "$bridge" 2>/dev/null || true; bridge=""; fi
  unmount_below "$work/dockerd"
}
stop_helpers() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  pids=()
}
unmount_below() {
  awk -v w="$1/" 'index($2, w) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
}
cleanup() {
  set +e
  trap '' INT TERM
  if [ -n "$pytest_pid" ]; then   # timeout(1) passes the TERM on to pytest
    kill -TERM "$pytest_pid" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$pytest_pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pytest_pid" 2>/dev/null; wait "$pytest_pid" 2>/dev/null
  fi
  stop_berth
  stop_dockerd
  stop_helpers
  unmount_below "$work"
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT TERM

# --- the venv and the suite (cached) ------------------------------------------------
prepare_suite() {
  [ -f "$cache/.ready" ] && return 0
  mkdir -p "$(dirname "$cache")"
  exec 9>"$cache.lock"
  flock 9
  if [ ! -f "$cache/.ready" ]; then
    say "preparing docker-py $dpy_version and its integration tests in $cache ..."
    rm -rf "$cache"; mkdir -p "$cache/dl"
    {
      python3 -m venv "$cache/venv" &&
      "$py" -m pip install -q "docker==$dpy_version" "requests<2.32" pytest==7.1.2 pytest-timeout==2.1.0 paramiko &&
      "$py" -m pip download -q --no-deps --no-binary :all: "docker==$dpy_version" -d "$cache/dl" &&
      tar -xzf "$cache/dl/docker-$dpy_version.tar.gz" -C "$cache/dl" &&
      mkdir -p "$cache/suite" &&
      cp -r "$cache/dl/docker-$dpy_version/tests" "$cache/dl/docker-$dpy_version/pytest.ini" "$cache/suite/" &&
      rm -rf "$cache/dl/docker-$dpy_version" &&
      "$py" -m pip freeze > "$cache/pip-freeze.txt"
    } >"$work/prepare.log" 2>&1 || { cat "$work/prepare.log" >&2; rm -rf "$cache"; die "preparing the venv or the sdist failed"; }
    touch "$cache/.ready"
  fi
  exec 9>&-
}

# --- Berth ------------------------------------------------------------------------
berth_binaries() {
  local rel=${CARGO_TARGET_DIR:-$root/target}/release waited=0
  # A binary is stale if missing or older than a file it is built from
  # (berth: host/ and guest-agent/proto/; berth-agent: guest-agent/). Only
  # checking what each one depends on avoids a cargo run per test run: cargo
  # does not relink berth-agent when only host/ changed.
  newer() { [ -n "$(cd "$root" && find "${@:2}" Cargo.toml Cargo.lock -type f -newer "$rel/$1" -print -quit)" ]; }
  stale() {
    [ -x "$rel/berth" ] && [ -x "$rel/berth-agent" ] || return 0
    newer berth host guest-agent/proto || newer berth-agent guest-agent
  }
  if stale; then
    while pgrep -f "cargo build" >/dev/null; do
      [ $waited = 0 ] && say "waiting for a running cargo build to finish ..."
      waited=$((waited + 5)); sleep 5
      [ $waited -lt 3600 ] || die "a cargo build is still running after an hour"
    done
    if stale; then
      say "building release binaries (cargo build --release -p berth -p berth-agent) ..."
      if ! (cd "$root" && cargo build --release -p berth -p berth-agent) >"$work/build.log" 2>&1; then
        if [ -x "$rel/berth" ] && [ -x "$rel/berth-agent" ]; then
          say "*** the release build failed (tail below); using the existing, older binaries"; tail -15 "$work/build.log" >&2
        else
          tail -30 "$work/build.log" >&2; die "the release build failed and there are no binaries"
        fi
      fi
    fi
  fi
  mkdir -p "$work/bin" "$work/assets/bin"
  cp "$rel/berth" "$work/bin/berth"
  cp "$rel/berth-agent" "$work/assets/bin/berth-agent"
  : > "$work/assets/initramfs.cpio"   # the local backend boots nothing
  berth_bin=$work/bin/berth
}

start_berth() {
  berth_home=$(mktemp -d /tmp/dockerpy-berth.XXXXXX)
  # The same docker.io mirror as dockerd's, if this Berth knows the setting
  # (an older binary rejects unknown keys).
  if grep -qa "engine.registry-mirrors" "$berth_bin"; then
    start_registry
    printf '[engine]\nregistry-mirrors = ["http://127.0.0.1:%s"]\n' "$registry_port" > "$berth_home/config.toml"
  else
    say "this berth binary has no [engine] registry-mirrors setting: no mirror, its pulls go to docker.io (offline)"
  fi
  if ! DOCKER_CONFIG=$work/docker-config BERTH_HOME=$berth_home BERTH_BACKEND=local BERTH_ASSETS=$work/assets \
       timeout 120 "$berth_bin" start >"$res/berth-start.log" 2>&1; then
    cat "$res/berth-start.log" >&2; die "berth start (local backend) failed"
  fi
  sock=$berth_home/run/docker.sock
  [ -S "$sock" ] || die "berth started but $sock is not a socket"
}

# A Berth VM: the guest reaches the host's loopback (the registry) as
# host.docker.internal.
start_berth_vm() {
  berth_home=$(mktemp -d /tmp/dockerpy-berth.XXXXXX)
  start_registry
  printf '[vm]\ncpus = 2\nmemory-mib = 2048\ndisk-gib = 8\nshares = ["/tmp"]\n[engine]\nregistry-mirrors = ["http://host.docker.internal:%s"]\ninsecure-registries = ["host.docker.internal:%s"]\n' \
    "$registry_port" "$registry_port" > "$berth_home/config.toml"
  if ! DOCKER_CONFIG=$work/docker-config BERTH_HOME=$berth_home BERTH_BACKEND=vm \
       BERTH_ASSETS=${BERTH_ASSETS:-$HOME/.local/share/berth} timeout 300 "$berth_bin" start >"$res/berth-start.log" 2>&1; then
    cat "$res/berth-start.log" >&2; die "berth start (VM) failed"
  fi
  sock=$berth_home/run/docker.sock
  [ -S "$sock" ] || die "berth started but $sock is not a socket"
}

# --- dockerd 20.10 ------------------------------------------------------------------
start_registry() {
  [ -n "${registry_port:-}" ] && return 0
  rm -f "$work/registry.port"
  python3 "$here/images.py" registry "$work/images/registry" "$work/registry.port" 2>"$res/registry.log" &
  pids+=($!)
  local i
  for i in $(seq 100); do [ -s "$work/registry.port" ] && break; sleep 0.1; done
  registry_port=$(cat "$work/registry.port") || die "the local registry did not start: $(cat "$res/registry.log")"
}

start_dockerd() {
  command -v dockerd >/dev/null || die "dockerd is missing (Debian docker.io)"
  start_registry
  local dd=$work/dockerd i
  mkdir -p "$dd/data" "$dd/exec"
  echo '{}' > "$dd/daemon.json"
  bridge=dpy$$
  ip link add name "$bridge" type bridge
  ip addr add "10.213.$((RANDOM % 250)).1/24" dev "$bridge"
  ip link set "$bridge" up
  dockerd --config-file "$dd/daemon.json" --data-root "$dd/data" --exec-root "$dd/exec" --pidfile "$dd/docker.pid" \
    -H "unix://$dd/docker.sock" --iptables=false --bridge "$bridge" --cgroup-parent "/$cgroup_parent" \
    --registry-mirror "http://127.0.0.1:$registry_port" >"$dd/log" 2>&1 &
  dockerd_pid=$!
  sock=$dd/docker.sock
  for i in $(seq 300); do
    curl -sf --max-time 2 --unix-socket "$sock" http://d/_ping >/dev/null 2>&1 && return 0
    kill -0 "$dockerd_pid" 2>/dev/null || break
    sleep 0.2
  done
  tail -20 "$dd/log" >&2; die "dockerd did not come up"
}

# --- images -------------------------------------------------------------------------
load_images() {
  "$py" - "$sock" "$api_version" "$work"/images/*.tar <<'EOF'
import sys, docker
sock, version, archives = sys.argv[1], sys.argv[2], sys.argv[3:]
c = docker.APIClient(base_url="unix://" + sock, version=version, timeout=300)
for path in archives:
    with open(path, "rb") as f:
        out = c.load_image(f.read())
    for line in (out or []):
        if isinstance(line, dict) and line.get("error"):
            sys.exit(f"loading {path}: {line['error']}")
for tag in ("alpine:3.10", "alpine:latest", "busybox:latest", "hello-world:latest"):
    print(f"  {tag:20} {c.inspect_image(tag)['Id']}", file=sys.stderr)
EOF
}

# --- one engine -------------------------------------------------------------------
run_engine() {
  local engine=$1 t0=$SECONDS f name spec rc host
  res=$results_base/$engine
  rm -rf "$res"; mkdir -p "$res"
  say ""; say "=== $engine ==="
  case $engine in berth) start_berth ;; berth-vm) start_berth_vm ;; dockerd) start_dockerd ;; esac
  say "engine up after $((SECONDS - t0)) s; loading images:"
  load_images || die "loading the images into $engine failed"
  host=unix://$sock
  if [ "$transport" = tcp ]; then
    rm -f "$work/proxy-$engine.port"
    python3 "$here/tcp-proxy.py" "$work/proxy-$engine.port" "$sock" &
    pids+=($!)
    for f in $(seq 100); do [ -s "$work/proxy-$engine.port" ] && break; sleep 0.1; done
    host=tcp://127.0.0.1:$(cat "$work/proxy-$engine.port")
  fi
  for spec in "${files[@]}"; do
    case $spec in tests/*) ;; *) spec=tests/integration/$spec ;; esac
    name=$(basename "${spec%%::*}" .py)
    say "$engine: $spec ($(date +%T)) ..."
    rc=0
    # In the background and waited for: timeout(1) puts pytest in its own
    # process group (a Ctrl-C reaches only this script), and bash runs a trap
    # during `wait` but not while a foreground child runs.
    (cd "$cache/suite" && exec env -u DOCKER_TLS_VERIFY -u DOCKER_CERT_PATH -u DOCKER_CONTEXT \
        DOCKER_HOST="$host" DOCKER_TEST_API_VERSION="$api_version" DOCKER_CONFIG="$work/docker-config" \
        PYTHONDONTWRITEBYTECODE=1 timeout -k 20 "$file_timeout" "$py" -m pytest -p no:cacheprovider \
        --timeout="$test_timeout" -o junit_suite_name="$name" --junitxml="$res/junit-$name.xml" "$spec") \
      >"$res/pytest-$name.log" 2>&1 </dev/null &
    pytest_pid=$!
    wait "$pytest_pid" || rc=$?
    pytest_pid=""
    [ "$rc" != 124 ] || say "  $name: stopped after $file_timeout s (DOCKERPY_FILE_TIMEOUT)"
    say "  $(grep -E '^=+ .* in [0-9.]+s' "$res/pytest-$name.log" | tail -1 || echo "pytest exit $rc")"
  done
  case $engine in berth | berth-vm) stop_berth ;; dockerd) stop_dockerd ;; esac
  stop_helpers
  registry_port=""
  "$py" "$here/summarize.py" "$engine" "$res" "$((SECONDS - t0))" >/dev/null
}

prepare_suite
mkdir -p "$work/docker-config"
python3 "$here/images.py" archives "$work/images" >/dev/null
engines=(); case $mode in both) engines=(berth dockerd) ;; *) engines=("$mode") ;; esac
[[ " ${engines[*]} " == *" berth"* ]] && berth_binaries
for e in "${engines[@]}"; do run_engine "$e"; done

say ""
for e in "${engines[@]}"; do cat "$results_base/$e/summary.txt"; done
if [ "$mode" = both ]; then
  # Tests failing on Berth that pass on dockerd (skips and dockerd failures left out).
  awk '{print $1}' "$results_base/dockerd/failures.txt" | sort > "$work/dockerd-fails"
  awk '{print $1}' "$results_base/berth/failures.txt" | sort | comm -23 - "$work/dockerd-fails" > "$work/berth-only"
  grep -F -f "$work/berth-only" "$results_base/berth/failures.txt" > "$results_base/berth-only-failures.txt" || true
  echo "$(wc -l < "$results_base/berth-only-failures.txt") tests fail on Berth but not on dockerd: $results_base/berth-only-failures.txt"
fi
echo "results: $results_base/{$(IFS=,; echo "${engines[*]}")}/ (junit XML, pytest logs, failures.txt)"
