# Shared pieces of the engine/API benchmarks (sourced by engine.sh and api.sh):
# release binaries, a local-backend Berth, a private dockerd 20.10, timing
# and statistics, and one cleanup that undoes all of it.
#
# Sourcing it sets up the run: a fresh temp dir `work` (removed, with all the
# run started, by bench_cleanup on exit), the docker CLI's config inside it,
# and the start time and load average for the closing line.

bench_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
docker_cli=${DOCKER_CLI:-/usr/local/bin/docker}
bench_pids=()   # helper processes the scripts started in the background
berth_ok=0 dockerd_pid="" berth_sock="" dockerd_sock=""
bench_crun_prefix="bench-crun-$$"
bench_runc_prefix="bench-runc-$$"

say() { printf '%s\n' "$*" >&2; }
fail() { printf '\n*** %s\n' "$*" >&2; }

# --- timing ---------------------------------------------------------------------
# EPOCHREALTIME is a builtin variable: no fork inside the measured interval.
# Usage: t0=$EPOCHREALTIME; CMD; elapsed_us "$t0"  -> $REPLY (microseconds)
elapsed_us() { local t1=$EPOCHREALTIME; REPLY=$(( ${t1/./} - ${1/./} )); }

# stats US... -> "median p90" in milliseconds (p90 = nearest rank)
stats() {
  printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {
    if (NR == 0) { print "- -"; exit }
    m = NR % 2 ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2
    r = int(0.9 * NR); if (r < 0.9 * NR) r++
    printf "%.1f %.1f\n", m / 1000, a[r] / 1000 }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2f", a / b }'; }

# --- binaries -------------------------------------------------------------------
# Builds the release berth and the agent users run (the static musl build that
# packaging/setup.sh installs, which the local backend runs too; the glibc
# build where the musl target is missing) if missing or older than a source
# file, then snapshots them into $work (a concurrent rebuild cannot swap them
# mid-run).
bench_binaries() {
  local rel=$bench_root/target/release stale=0 b agent_args=(-p berth-agent)
  local agent=$rel/berth-agent
  if rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl; then
    agent=$bench_root/target/x86_64-unknown-linux-musl/release/berth-agent
    agent_args=(-p berth-agent --target x86_64-unknown-linux-musl)
  fi
  for b in "$rel/berth" "$agent"; do
    if [ ! -x "$b" ] || [ -n "$(cd "$bench_root" && find host guest-agent Cargo.toml Cargo.lock -type f -newer "$b" -print -quit)" ]; then
      stale=1
    fi
  done
  if [ "$stale" = 1 ]; then
    say "building release binaries (cargo build --release: berth, and ${agent_args[*]}) ..."
    if ! (cd "$bench_root" && cargo build --release -p berth && cargo build --release "${agent_args[@]}") >"$work/build.log" 2>&1; then
      if [ -x "$rel/berth" ] && [ -x "$agent" ]; then
        fail "release build failed (tail of the log below); using the existing, older binaries"
        tail -15 "$work/build.log" >&2
      else
        fail "release build failed and there are no binaries:"; tail -30 "$work/build.log" >&2; exit 1
      fi
    fi
  fi
  mkdir -p "$work/bin" "$work/assets/bin"
  cp "$rel/berth" "$work/bin/berth"
  cp "$agent" "$work/assets/bin/berth-agent"
  : > "$work/assets/initramfs.cpio"   # the local backend does not boot anything
  berth=$work/bin/berth
}

# --- runtimes from Debian ---------------------------------------------------------
# bench_apt PKG:COMMAND...  installs the packages whose command is missing.
bench_apt() {
  local want=() p
  for p in "$@"; do command -v "${p#*:}" >/dev/null || want+=("${p%%:*}"); done
  [ ${#want[@]} -eq 0 ] && return 0
  say "installing ${want[*]} (apt) ..."
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${want[@]}" >"$work/apt.log" 2>&1 \
    || { fail "apt-get install ${want[*]} failed:"; tail -10 "$work/apt.log" >&2; return 1; }
}

# --- Berth, local backend -----------------------------------------------------------
bench_start_berth() {
  export BERTH_HOME=$work/berth-home BERTH_ASSETS=$work/assets BERTH_BACKEND=local
  mkdir -p "$BERTH_HOME"
  printf 'backend = "local"\n[vm]\nshares = []\n' > "$BERTH_HOME/config.toml"
  if ! "$berth" start >"$work/berth-start.log" 2>&1; then
    fail "berth start (local backend) failed:"; cat "$work/berth-start.log" >&2; return 1
  fi
  berth_sock=$("$berth" status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["docker_host"].removeprefix("unix://"))')
  berth_ok=1
}

# --- Berth in a real VM (the user's path; TCG where KVM is not usable) -------------
# The installed guest (packaging/setup.sh), or $BERTH_VM_ASSETS; no shares.
vm_ok=0 vm_home="" vm_sock=""
bench_start_berth_vm() {
  vm_home=$work/vm-home
  mkdir -p "$vm_home"
  printf '[vm]\ncpus = 2\nmemory-mib = 2048\ndisk-gib = 4\nshares = []\n' > "$vm_home/config.toml"
  if ! BERTH_HOME=$vm_home BERTH_BACKEND=vm BERTH_ASSETS=${BERTH_VM_ASSETS:-$HOME/.local/share/berth} \
       timeout 300 "$berth" start >"$work/vm-start.log" 2>&1; then
    fail "berth start (VM) failed:"; cat "$work/vm-start.log" >&2; return 1
  fi
  vm_ok=1
  vm_sock=$vm_home/run/docker.sock
}

# --- a private dockerd 20.10 (Debian docker.io), no bridge ---------------------------
# --bridge=none: Berth's containers get a private network namespace with only
# loopback, which is what dockerd's containers get without a bridge.
bench_start_dockerd() {
  local dd=$work/dockerd i
  mkdir -p "$dd/data" "$dd/exec"
  for i in /sys/fs/cgroup/*/docker /sys/fs/cgroup/docker /run/docker; do [ -e "$i" ] && echo "$i"; done > "$work/dockerd-preexisting" || true
  dockerd_sock=$dd/docker.sock
  dockerd --data-root "$dd/data" --exec-root "$dd/exec" -H "unix://$dockerd_sock" --pidfile "$dd/docker.pid" \
    --iptables=false --bridge=none >"$dd/log" 2>&1 &
  dockerd_pid=$!
  for i in $(seq 150); do
    curl -sf --max-time 2 --unix-socket "$dockerd_sock" http://d/_ping >/dev/null 2>&1 && return 0
    kill -0 "$dockerd_pid" 2>/dev/null || break
    sleep 0.2
  done
  fail "dockerd did not come up:"; tail -15 "$dd/log" >&2; return 1
}

bench_stop_dockerd() {
  [ -n "$dockerd_pid" ] || return 0
  local i
  kill -TERM "$dockerd_pid" 2>/dev/null || true
  for i in $(seq 100); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.2; done
  kill -KILL "$dockerd_pid" 2>/dev/null || true
  wait "$dockerd_pid" 2>/dev/null || true
  dockerd_pid=""
  # What dockerd leaves on the host outside its own directories.
  for i in /sys/fs/cgroup/*/docker /sys/fs/cgroup/docker /run/docker; do
    [ -e "$i" ] && ! grep -qxF "$i" "$work/dockerd-preexisting" 2>/dev/null || continue
    case $i in /run/docker) rm -rf "$i" ;; *) rmdir "$i" 2>/dev/null || true ;; esac
  done
}

bench_cleanup() {
  set +e
  local p
  for p in "${bench_pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  [ "$berth_ok" = 1 ] && timeout 60 "$berth" stop >/dev/null 2>&1
  [ "$vm_ok" = 1 ] && BERTH_HOME=$vm_home timeout 120 "$berth" stop >/dev/null 2>&1
  bench_stop_dockerd
  local id
  for id in $(runc list -q 2>/dev/null | grep "^$bench_runc_prefix"); do runc delete --force "$id" >/dev/null 2>&1; done
  for id in $(crun list -q 2>/dev/null | grep "^$bench_crun_prefix"); do
    unshare -m --propagation private sh -c 'mount -t cgroup2 none /sys/fs/cgroup && crun delete --force "$1"' _ "$id" >/dev/null 2>&1
  done
  for id in /sys/fs/cgroup/unified/"$bench_crun_prefix"-*; do [ -d "$id" ] && rmdir "$id" 2>/dev/null; done
  # Anything still mounted below $work (overlays of a daemon that died hard).
  awk -v w="$work/" 'index($2, w) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do umount -l "$m"; done
  rm -rf --one-file-system "$work"
}

# docker CLI against an engine: D SOCK ARGS...
# Under `timeout` (its own process group): a hung engine costs at most
# $bench_timeout seconds, and Ctrl-C reaches the script, not the CLI (the
# CLI would forward it to the container as a kill).
bench_timeout=${BENCH_TIMEOUT:-120}
D() {
  local s=$1 rc=0; shift
  timeout -k 5 "$bench_timeout" "$docker_cli" -H "unix://$s" "$@" || rc=$?
  [ "$rc" != 124 ] || echo "docker $*: timed out after $bench_timeout s" >&2
  return "$rc"
}

work=$(mktemp -d)
trap bench_cleanup EXIT
trap 'exit 130' INT TERM
export DOCKER_CONFIG=$work/docker-config
started=$SECONDS load_start=$(cut -d' ' -f1 /proc/loadavg)
