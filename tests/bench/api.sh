#!/usr/bin/env bash
# Docker API benchmark: Berth (local backend, no VM) against dockerd 20.10
# (Debian docker.io, private instance: overlay2, no bridge, no iptables), both
# driven by the same docker CLI (/usr/local/bin/docker) on the same machine.
#
#   run  = `docker run --rm busybox true`                      target: berth <= 0.5 x dockerd
#   ps   = `docker ps -a` with 50 stopped containers present   target: berth <= 1 x dockerd
#   logs = `docker logs C > /dev/null`, C ran `seq 100000`     target: berth <= 1 x dockerd
#
# busybox is the image of tests/images/busybox-archive.py, `docker load`ed
# into both engines. Runs alternate between the engines (one warm-up each
# first), so drift on this shared machine hits both columns alike. No
# bridge for dockerd: Berth's containers get a private network namespace
# with only loopback, which is what dockerd's get with --bridge=none.
# docker CLI calls run under timeout(1) (about 1 ms, both columns alike) so
# a hung engine shows as an error instead of hanging the benchmark.
# Release binaries are built first if missing or older than the sources;
# docker.io is installed with apt if missing. Needs root.
# Usage: tests/bench/api.sh [RUNS]   (default 10)
set -euo pipefail
runs=${1:-10}
. "$(dirname "$0")/lib.sh"

bench_binaries
bench_apt docker.io:dockerd || true
python3 "$bench_root/tests/images/busybox-archive.py" "$work/busybox.tar"

declare -A sock result err logs_id   # keyed by ENGINE or ROW-ENGINE
engines=()
say "berth (local backend) ..."
if bench_start_berth; then sock[berth]=$berth_sock; engines+=(berth); else err[berth]="berth start failed"; fi
say "dockerd 20.10 ..."
if bench_start_dockerd; then sock[dockerd]=$dockerd_sock; engines+=(dockerd); else err[dockerd]="dockerd did not start"; fi

# Engines with busybox loaded; the others get an error for every row.
ready=()
for e in "${engines[@]}"; do
  if D "${sock[$e]}" load -i "$work/busybox.tar" >"$work/load.out" 2>&1; then ready+=("$e")
  else err[$e]="docker load of busybox failed: $(cat "$work/load.out")"; fail "$e: ${err[$e]}"; fi
done

# One timed command per call: ENGINE -> REPLY = microseconds, or error text and status 1.
run_once() {
  local t0; t0=$EPOCHREALTIME
  D "${sock[$1]}" run --rm busybox true >"$work/out" 2>&1 || { REPLY="docker run --rm busybox true: $(cat "$work/out")"; return 1; }
  elapsed_us "$t0"
}
ps_once() {
  local t0; t0=$EPOCHREALTIME
  D "${sock[$1]}" ps -a >"$work/out" 2>&1 || { REPLY="docker ps -a: $(cat "$work/out")"; return 1; }
  elapsed_us "$t0"
}
logs_once() {
  local t0; t0=$EPOCHREALTIME
  D "${sock[$1]}" logs "${logs_id[$1]}" >/dev/null 2>"$work/out" || { REPLY="docker logs: $(cat "$work/out")"; return 1; }
  elapsed_us "$t0"
}

# measure ROW FUNC ENGINES...: a warm-up per engine, then $runs rounds alternating
# the engines; an engine's series stops at its first failure.
measure() {
  local row=$1 fn=$2 e i; shift 2
  declare -A times=()
  for e in "$@"; do "$fn" "$e" || { err[$row-$e]=$REPLY; fail "$row, $e: $REPLY"; }; done
  for i in $(seq "$runs"); do
    for e in "$@"; do
      [ -z "${err[$row-$e]:-}" ] || continue
      if "$fn" "$e"; then times[$e]+=" $REPLY"; else err[$row-$e]="run $i: $REPLY"; fail "$row, $e: run $i: $REPLY"; fi
    done
  done
  for e in "$@"; do
    # shellcheck disable=SC2086
    [ -n "${err[$row-$e]:-}" ] || result[$row-$e]=$(stats ${times[$e]})
  done
}

say "docker run --rm ..."
[ ${#ready[@]} -gt 0 ] && measure run run_once "${ready[@]}"

say "docker ps -a with 50 containers ..."
ps_ready=()
for e in "${ready[@]}"; do
  n=0
  for i in $(seq 50); do
    D "${sock[$e]}" create busybox true >/dev/null 2>"$work/out" || { err[ps-$e]="docker create ($i of 50): $(cat "$work/out")"; fail "ps, $e: ${err[ps-$e]}"; break; }
    n=$((n + 1))
  done
  [ "$n" = 50 ] || continue
  lines=$(D "${sock[$e]}" ps -aq 2>&1 | wc -l) || true
  if [ "$lines" != 50 ]; then err[ps-$e]="docker ps -aq lists $lines containers, expected 50"; fail "ps, $e: ${err[ps-$e]}"; continue; fi
  ps_ready+=("$e")
done
[ ${#ps_ready[@]} -gt 0 ] && measure ps ps_once "${ps_ready[@]}"
for e in "${ready[@]}"; do   # not part of the later figures
  ids=$(D "${sock[$e]}" ps -aq 2>/dev/null) || true
  [ -z "$ids" ] || D "${sock[$e]}" rm $ids >/dev/null 2>&1 || true
done

say "docker logs of 100k lines ..."
logs_ready=()
for e in "${ready[@]}"; do
  if ! id=$(D "${sock[$e]}" run -d busybox seq 100000 2>"$work/out"); then
    err[logs-$e]="docker run -d busybox seq 100000: $(cat "$work/out")"; fail "logs, $e: ${err[logs-$e]}"; continue
  fi
  logs_id[$e]=$id
  if ! code=$(D "${sock[$e]}" wait "$id" 2>"$work/out") || [ "$code" != 0 ]; then
    err[logs-$e]="docker wait: ${code:-} $(cat "$work/out")"; fail "logs, $e: ${err[logs-$e]}"; continue
  fi
  lines=$(D "${sock[$e]}" logs "$id" 2>/dev/null | wc -l) || true
  if [ "$lines" != 100000 ]; then err[logs-$e]="docker logs gives $lines lines, expected 100000"; fail "logs, $e: ${err[logs-$e]}"; continue; fi
  logs_ready+=("$e")
done
[ ${#logs_ready[@]} -gt 0 ] && measure logs logs_once "${logs_ready[@]}"

# --- table ------------------------------------------------------------------------------
cell() { # ROW ENGINE -> "median p90" or "FAILED"
  if [ -n "${result[$1-$2]:-}" ]; then echo "${result[$1-$2]}"; else echo "FAILED -"; fi
}
printf '\nDocker CLI against each engine (%s runs each after a warm-up), milliseconds: median / p90\n' "$runs"
printf '  %-34s %17s %17s %7s %7s\n' "" "berth (local)" "dockerd 20.10" ratio target
for r in "run:docker run --rm busybox true:0.50" "ps:docker ps -a (50 containers):1.00" "logs:docker logs (100k lines):1.00"; do
  IFS=: read -r row label target <<<"$r"
  read -r bm bp <<<"$(cell "$row" berth)"
  read -r dm dp <<<"$(cell "$row" dockerd)"
  q=$(ratio "$bm" "$dm"); [ "$bm" = FAILED ] && q=-
  [ "$dm" = FAILED ] && q=-
  printf '  %-34s %17s %17s %7s %7s\n' "$label" "$bm / $bp" "$dm / $dp" "$q" "<= $target"
done
for key in berth dockerd run-berth run-dockerd ps-berth ps-dockerd logs-berth logs-dockerd; do
  [ -z "${err[$key]:-}" ] || printf '  FAILED %s: %.110s\n' "$key" "${err[$key]}"
done
printf '\n(%s s in all; 1-min load average %s at the start, %s at the end, on %s CPUs: above ~1 the figures are noisy)\n' \
  "$((SECONDS - started))" "$load_start" "$(cut -d' ' -f1 /proc/loadavg)" "$(nproc)"
