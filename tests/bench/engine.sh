#!/usr/bin/env bash
# Container engine benchmark: Berth's engine (local backend, no VM) against
# runc and crun on the same machine, in one run.
#
#   berth API   = POST /containers/create {"Image":"busybox","Cmd":["true"]},
#                 POST /start, POST /wait, DELETE, through the Docker API socket:
#                 the engine's own path without the docker CLI. Measured twice:
#                 with four `curl --unix-socket` processes (as a script would),
#                 and from one python3 process (no process spawn per request;
#                 the closest to the engine's own cost). The "curl alone" row
#                 (4 x GET /_ping) is what the curl processes cost by themselves.
#   berth run   = `docker run --rm busybox true` against Berth (CLI included).
#   runc / crun = `runc run` / `crun run` of `true` from an OCI bundle with the
#                 same busybox rootfs, config from `runc spec` / `crun spec`
#                 (args ["true"], no terminal). linux.resources (the deny-all
#                 device rule) is dropped from both: crun cannot load its
#                 cgroup-v2 BPF device filter here (it raises RLIMIT_MEMLOCK
#                 first, which this sandbox refuses with EPERM). Berth does
#                 attach its device filter (about 1 ms per start), so the
#                 comparison is slightly in crun's favour. crun runs in a
#                 private mount namespace with cgroup2 at /sys/fs/cgroup (it
#                 refuses the hybrid layout). Berth applies Docker's seccomp
#                 profile, the spec configs apply none.
#   load        = `docker load` of a ~100 MB docker-archive (busybox layer plus
#                 one layer of random bytes) into Berth and into a private
#                 dockerd 20.10 (Debian docker.io, overlay2, no bridge), 3 loads
#                 each, the image removed (`docker rmi`) between loads.
#
# Each series has one unmeasured warm-up run; the series run interleaved,
# round after round, so drift on this shared machine hits them alike. docker
# CLI calls run under timeout(1) (about 1 ms) and curl with --max-time, so a
# hung engine shows as an error instead of hanging the benchmark. Release
# binaries are built first if missing or older than the sources; runc, crun
# and docker.io are installed with apt if missing. Needs root.
# Usage: tests/bench/engine.sh [RUNS]   (default 20)
set -euo pipefail
runs=${1:-20}
. "$(dirname "$0")/lib.sh"

bench_binaries
bench_apt runc:runc crun:crun docker.io:dockerd || true
python3 "$bench_root/tests/images/busybox-archive.py" "$work/busybox.tar"

declare -A result err   # result[row]="median p90" (ms), err[row]=why it failed

# --- one timed call per series: sets REPLY to microseconds, or to the error and fails ---
berth_curl_once() {
  local s=$berth_sock out id t0=$EPOCHREALTIME
  out=$(curl -s --max-time "$bench_timeout" --unix-socket "$s" -H 'Content-Type: application/json' -d '{"Image":"busybox","Cmd":["true"]}' \
    -w ' %{http_code}' http://berth/containers/create) || { REPLY="create: curl exit $?"; return 1; }
  [[ $out == *' 201' && $out =~ \"Id\":\"([0-9a-f]+)\" ]] || { REPLY="POST /containers/create: $out"; return 1; }
  id=${BASH_REMATCH[1]}
  out=$(curl -s --max-time "$bench_timeout" --unix-socket "$s" -X POST -w ' %{http_code}' "http://berth/containers/$id/start") || true
  [[ $out == *' 204' ]] || { REPLY="POST /containers/$id/start: $out"; return 1; }
  out=$(curl -s --max-time "$bench_timeout" --unix-socket "$s" -X POST -w ' %{http_code}' "http://berth/containers/$id/wait") || true
  [[ $out == *'"StatusCode":0'*' 200' ]] || { REPLY="POST /containers/$id/wait: $out"; return 1; }
  out=$(curl -s --max-time "$bench_timeout" --unix-socket "$s" -X DELETE -w ' %{http_code}' "http://berth/containers/$id") || true
  [[ $out == *' 204' ]] || { REPLY="DELETE /containers/$id: $out"; return 1; }
  elapsed_us "$t0"
}
curl_floor_once() {
  local i t0=$EPOCHREALTIME
  for i in 1 2 3 4; do curl -s --max-time "$bench_timeout" --unix-socket "$berth_sock" -o /dev/null http://berth/_ping || { REPLY="GET /_ping failed"; return 1; }; done
  elapsed_us "$t0"
}
berth_run_once() {
  local t0=$EPOCHREALTIME
  D "$berth_sock" run --rm busybox true >"$work/run.out" 2>&1 || { REPLY="docker run --rm busybox true: $(cat "$work/run.out")"; return 1; }
  elapsed_us "$t0"
}
runc_i=0
runc_once() {
  local t0=$EPOCHREALTIME
  runc_i=$((runc_i + 1))
  runc run --bundle "$work/bundle-runc" "$bench_runc_prefix-$runc_i" </dev/null >/dev/null 2>"$work/runc.err" \
    || { REPLY="runc run: $(cat "$work/runc.err")"; return 1; }
  elapsed_us "$t0"
}
# Helpers that time themselves in their own process, one run per line asked
# (so they interleave with the other series): the python3 API client, and
# crun inside a private mount namespace with cgroup2 at /sys/fs/cgroup
# (unshare and mount are not in its figures).
start_helper() { # NAME CMD...  -> fds ${NAME}_w / ${NAME}_r
  local name=$1; shift
  mkfifo "$work/$name.in" "$work/$name.out"
  "$@" <"$work/$name.in" >"$work/$name.out" 2>"$work/$name.err" &
  bench_pids+=($!)
  printf -v "${name}_pid" %s "$!"
  exec {w}>"$work/$name.in" {r}<"$work/$name.out"
  printf -v "${name}_w" %s "$w"; printf -v "${name}_r" %s "$r"
}
ask_helper() { # NAME LINE
  local w=${1}_w r=${1}_r pid=${1}_pid
  # (SIGPIPE ignored while writing: a dead helper's pipe must not kill this script)
  trap '' PIPE
  if kill -0 "${!pid}" 2>/dev/null && echo "$2" 2>/dev/null >&"${!w}" && read -r REPLY <&"${!r}"; then :
  else REPLY="ERR helper exited: $(tr '\n' ' ' <"$work/$1.err")"; fi
  trap - PIPE
  [[ $REPLY =~ ^[0-9]+$ ]] || { REPLY=${REPLY#ERR }; return 1; }
}
berth_py_once() { ask_helper py go; }
crun_i=0
crun_once() {
  crun_i=$((crun_i + 1))
  ask_helper crun "$bench_crun_prefix-$crun_i" || { REPLY="crun run: $REPLY"; return 1; }
}
stop_helpers() {
  local p
  [ -z "${py_w:-}" ] || exec {py_w}>&- {py_r}<&-
  [ -z "${crun_w:-}" ] || exec {crun_w}>&- {crun_r}<&-
  for p in "${bench_pids[@]}"; do wait "$p" 2>/dev/null || true; done
  bench_pids=()
}

# --- set-up -------------------------------------------------------------------------
rows=()   # the series that can run
say "berth (local backend) ..."
if bench_start_berth; then
  if D "$berth_sock" load -i "$work/busybox.tar" >"$work/load.out" 2>&1; then
    start_helper py python3 "$bench_root/tests/bench/api-lifecycle.py" "$berth_sock"
    rows+=(berth-curl berth-py berth-run)
  else
    fail "docker load of busybox into Berth failed: $(cat "$work/load.out")"
    for r in berth-curl berth-py berth-run; do err[$r]="busybox load failed"; done
  fi
  rows+=(curl-floor)
else
  for r in berth-curl berth-py berth-run curl-floor; do err[$r]="berth start failed"; done
fi
make_bundle() {
  local rt=$1 b=$work/bundle-$1
  mkdir -p "$b/rootfs"
  tar -xOf "$work/busybox.tar" layer/layer.tar | tar -x -C "$b/rootfs"
  (cd "$b" && "$rt" spec)
  python3 - "$b/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["process"]["args"], c["process"]["terminal"] = ["true"], False
c["linux"].pop("resources", None)
json.dump(c, open(sys.argv[1], "w"), indent=1)
PY
}
if command -v runc >/dev/null && make_bundle runc; then rows+=(runc); else err[runc]="runc missing"; fi
if command -v crun >/dev/null && make_bundle crun; then
  start_helper crun unshare -m --propagation private bash -c '
    mount -t cgroup2 none /sys/fs/cgroup || exit 1
    while read -r id; do
      t0=$EPOCHREALTIME
      if crun run --bundle "$1" "$id" </dev/null >/dev/null 2>"$2"; then
        t1=$EPOCHREALTIME; echo $(( ${t1/./} - ${t0/./} ))
      else
        echo "ERR $(tr "\n" " " <"$2")"
      fi
    done' _ "$work/bundle-crun" "$work/crun-run.err"
  rows+=(crun)
else
  err[crun]="crun missing"
fi

# --- container lifecycle: a warm-up per series, then $runs rounds over all series ---
declare -A fn=([berth-curl]=berth_curl_once [berth-py]=berth_py_once [berth-run]=berth_run_once
  [runc]=runc_once [crun]=crun_once [curl-floor]=curl_floor_once)
declare -A times=()
say "container lifecycle: ${rows[*]} ..."
for i in $(seq 0 "$runs"); do   # round 0 is the warm-up
  for r in "${rows[@]}"; do
    [ -z "${err[$r]:-}" ] || continue
    if "${fn[$r]}"; then
      [ "$i" = 0 ] || times[$r]+=" $REPLY"
    else
      err[$r]="run $i: $REPLY"; fail "$r: run $i: $REPLY"
    fi
  done
done
for r in "${rows[@]}"; do
  # shellcheck disable=SC2086
  [ -n "${err[$r]:-}" ] || result[$r]=$(stats ${times[$r]})
done
stop_helpers

# --- image load: Berth vs dockerd 20.10 --------------------------------------------------
say "image load (generating a ~100 MB archive) ..."
python3 "$bench_root/tests/bench/big-image-archive.py" "$work/big.tar" 100 bigimage:latest
big_mb=$(awk -v b="$(stat -c %s "$work/big.tar")" 'BEGIN {printf "%.1f", b / 1e6}')
declare -A load_s
load_once() { # ENGINE SOCK
  local t0
  t0=$EPOCHREALTIME
  D "$2" load -i "$work/big.tar" >"$work/bigload.out" 2>&1 || { REPLY="docker load: $(cat "$work/bigload.out")"; return 1; }
  elapsed_us "$t0"; local us=$REPLY
  D "$2" rmi bigimage:latest >"$work/rmi.out" 2>&1 || { REPLY="docker rmi bigimage: $(cat "$work/rmi.out")"; return 1; }
  REPLY=$us
}
if ! bench_start_dockerd; then err[dockerd-load]="dockerd did not start"; dockerd_sock=""; fi
berth_loads=() dockerd_loads=()
for i in 1 2 3; do
  if [ "$berth_ok" = 1 ] && [ -z "${err[berth-load]:-}" ]; then
    if load_once berth "$berth_sock"; then berth_loads+=("$REPLY"); else err[berth-load]=$REPLY; fail "berth load: $REPLY"; fi
  fi
  if [ -n "$dockerd_sock" ] && [ -z "${err[dockerd-load]:-}" ]; then
    if load_once dockerd "$dockerd_sock"; then dockerd_loads+=("$REPLY"); else err[dockerd-load]=$REPLY; fail "dockerd load: $REPLY"; fi
  fi
done
[ "$berth_ok" = 1 ] || err[berth-load]="berth start failed"
[ ${#berth_loads[@]} -eq 3 ] && load_s[berth]=$(stats "${berth_loads[@]}" | awk '{printf "%.2f", $1 / 1000}')
[ ${#dockerd_loads[@]} -eq 3 ] && load_s[dockerd]=$(stats "${dockerd_loads[@]}" | awk '{printf "%.2f", $1 / 1000}')
bench_stop_dockerd

# --- table ------------------------------------------------------------------------------
crun_med=$(echo "${result[crun]:-- -}" | cut -d' ' -f1)
row() { # ROW LABEL
  if [ -n "${result[$1]:-}" ]; then
    read -r med p90 <<<"${result[$1]}"
    printf '  %-46s %8s %8s %8s\n' "$2" "$med" "$p90" "$(ratio "$med" "$crun_med")"
  else
    printf '  %-46s   FAILED: %.90s\n' "$2" "${err[$1]:-no figure}"
  fi
}
printf '\nContainer lifecycle of `true` (%s runs each after a warm-up), milliseconds\n' "$runs"
printf '  %-46s %8s %8s %8s\n' "" median p90 "x crun"
row berth-curl "berth API, curl (create+start+wait+delete)"
row berth-py   "berth API, one python3 client (same 4 calls)"
row berth-run  "berth: docker run --rm busybox true"
row runc       "runc run (bundle)"
row crun       "crun run (bundle)"
row curl-floor "curl alone: 4 x GET /_ping (client cost)"
printf '  target: berth API / crun <= 2.00\n'

printf '\nImage load: %s MB docker-archive (2 layers, random data), 3 loads each\n' "$big_mb"
printf '  %-30s %10s %8s\n' "" "median s" "MB/s"
for e in berth dockerd; do
  label=$([ $e = berth ] && echo "berth (local backend)" || echo "dockerd 20.10 (overlay2)")
  if [ -n "${load_s[$e]:-}" ]; then
    printf '  %-30s %10s %8s\n' "$label" "${load_s[$e]}" "$(awk -v m="$big_mb" -v s="${load_s[$e]}" 'BEGIN {printf "%.0f", m / s}')"
  else
    printf '  %-30s   FAILED: %.90s\n' "$label" "${err[$e-load]:-no figure}"
  fi
done
printf '  ratio berth/dockerd (time): %s\n' "$(ratio "${load_s[berth]:--}" "${load_s[dockerd]:--}")"
printf '\n(%s s in all; 1-min load average %s at the start, %s at the end, on %s CPUs: above ~1 the figures are noisy)\n' \
  "$((SECONDS - started))" "$load_start" "$(cut -d' ' -f1 /proc/loadavg)" "$(nproc)"
