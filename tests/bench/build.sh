#!/usr/bin/env bash
# docker build benchmark: Berth (local backend, no VM) against the classic
# builder of a private dockerd 20.10 (Debian docker.io) on the same machine,
# the same Dockerfiles, the same docker CLI with DOCKER_BUILDKIT=0.
#
#   cold        FROM busybox, COPY of a small app, a RUN of ~1 s of CPU, CMD
#               (--no-cache: every step runs)
#   warm        the same build again (every step from the cache)
#   one-file    one source file changed: the COPY and what follows rerun
#   metadata    30 ENV/LABEL lines and a CMD (--no-cache; the classic builder
#               makes a container and a commit for each)
#   parallel    two independent stages of equal cost (~1 s of CPU each) and a
#               final stage copying from both (--no-cache)
#
# Each case runs RUNS times (default 3) per engine, interleaved; the median
# and p90 are printed in ms, with Berth/dockerd. The targets compare the
# local backend with dockerd (the same kernel, a fair comparison); the same
# cases also run through a Berth VM (TCG here), the path users get, in the
# last column (BENCH_VM=0 leaves it out). Release binaries are built first
# if missing or stale (lib.sh). Needs root.
# Usage: tests/bench/build.sh [RUNS]
set -euo pipefail
runs=${1:-3}
. "$(dirname "$0")/lib.sh"

bench_binaries
bench_start_berth
bench_start_dockerd
engines="berth dockerd"
if [ "${BENCH_VM:-1}" = 1 ]; then
  bench_start_berth_vm
  engines="$engines vm"
fi
sock_of() { case $1 in berth) echo "$berth_sock" ;; dockerd) echo "$dockerd_sock" ;; vm) echo "$vm_sock" ;; esac; }
python3 "$bench_root/tests/images/busybox-archive.py" "$work/busybox.tar"
for e in $engines; do D "$(sock_of "$e")" load -i "$work/busybox.tar" >/dev/null; done

ctx=$work/ctx
mkdir -p "$ctx/app" "$ctx/meta" "$ctx/par"
for i in $(seq 20); do echo "source file $i" > "$ctx/app/file$i.txt"; done
cpu='i=0; while [ $i -lt 150000 ]; do i=$((i+1)); done'
cat > "$ctx/app/Dockerfile" <<DF
FROM busybox
WORKDIR /app
COPY . /app/
RUN $cpu; cat /app/*.txt | sha256sum > /app/sum
CMD ["cat", "/app/sum"]
DF
{
  echo "FROM busybox"
  for i in $(seq 15); do echo "ENV VAR$i=value$i"; echo "LABEL label$i=value$i"; done
  echo 'CMD ["sh"]'
} > "$ctx/meta/Dockerfile"
cat > "$ctx/par/Dockerfile" <<DF
FROM busybox AS one
RUN $cpu; echo one > /one
FROM busybox AS two
RUN $cpu; echo two > /two
FROM busybox
COPY --from=one /one /one
COPY --from=two /two /two
DF

# build ENGINE-SOCK DIR ARGS... -> REPLY (µs)
build() {
  local s=$1 dir=$2 t0; shift 2
  t0=$EPOCHREALTIME
  DOCKER_BUILDKIT=0 D "$s" build -q "$@" "$dir" >/dev/null 2>"$work/build.err" \
    || { fail "docker build $* $dir failed on $s:"; cat "$work/build.err" >&2; exit 1; }
  elapsed_us "$t0"
}

declare -A times
run_case() {
  local name=$1 dir=$2 prepare=$3; shift 3
  local r e
  for r in $(seq 0 "$runs"); do
    for e in $engines; do
      local s; s=$(sock_of "$e")
      $prepare "$s" "$dir"
      build "$s" "$dir" "$@"
      [ "$r" = 0 ] || times[$name/$e]+="$REPLY "   # round 0 warms up
    done
  done
}
nothing() { :; }
prime() { build "$1" "$2" -t bench-app; }
touch_one() { build "$1" "$2" -t bench-app; echo "changed $RANDOM" > "$2/file7.txt"; }

run_case cold "$ctx/app" nothing --no-cache -t bench-app
run_case warm "$ctx/app" prime -t bench-app
run_case one-file "$ctx/app" touch_one -t bench-app
run_case metadata "$ctx/meta" nothing --no-cache -t bench-meta
run_case parallel "$ctx/par" nothing --no-cache -t bench-par

printf '\n%-10s %18s %18s %8s %18s %8s\n' case "berth med/p90 ms" "dockerd med/p90 ms" ratio "VM med/p90 ms" "VM/dockerd"
for name in cold warm one-file metadata parallel; do
  # shellcheck disable=SC2086
  read -r bm bp <<<"$(stats ${times[$name/berth]})"
  # shellcheck disable=SC2086
  read -r dm dp <<<"$(stats ${times[$name/dockerd]})"
  vm="-" vr="-"
  if [ -n "${times[$name/vm]:-}" ]; then
    # shellcheck disable=SC2086
    read -r vmm vmp <<<"$(stats ${times[$name/vm]})"
    vm="$vmm / $vmp" vr=$(ratio "$vmm" "$dm")
  fi
  printf '%-10s %18s %18s %8s %18s %8s\n' "$name" "$bm / $bp" "$dm / $dp" "$(ratio "$bm" "$dm")" "$vm" "$vr"
done
say "($runs runs per case and engine, after one warm-up; load $load_start -> $(cut -d' ' -f1 /proc/loadavg), $((SECONDS - started)) s)"
