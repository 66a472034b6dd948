#!/usr/bin/env bash
# Runs the whole test suite (scripts/test.sh) N times in a row while busy loops keep every
# core of the machine busy, and prints how many runs passed. A test that passes here does
# not depend on the machine being fast or idle.
#
#   scripts/stress-test.sh [N] [-- ARGS for scripts/test.sh]
#
# N defaults to 5. Each run's output is kept in target/stress/run-K.log. The busy loops
# are the script's own children: they are stopped when the script ends, however it ends,
# and each gives up by itself after QQMX_STRESS_LIMIT seconds (default 4 hours).
set -uo pipefail
cd "$(dirname "$0")/.."

runs=${1:-5}
shift || true
[ "${1:-}" = "--" ] && shift
limit=${QQMX_STRESS_LIMIT:-14400}
cores=$(nproc)
logs=target/stress
mkdir -p "$logs"

# Build first, without load, so that every run measures the tests rather than the build.
scripts/test.sh --no-run "$@" >"$logs/build.log" 2>&1 || {
  echo "stress-test: the build failed; see $logs/build.log" >&2
  exit 2
}

busy=()
stop_busy() {
  [ ${#busy[@]} -gt 0 ] && kill "${busy[@]}" 2>/dev/null
  wait 2>/dev/null
}
trap stop_busy EXIT
trap 'exit 130' INT TERM
for _ in $(seq "$cores"); do
  timeout "$limit" sh -c 'while :; do :; done' &
  busy+=($!)
done
echo "stress-test: $runs runs of scripts/test.sh with $cores busy loops on $cores cores"

passed=0
for k in $(seq "$runs"); do
  started=$(date +%s)
  if scripts/test.sh "$@" >"$logs/run-$k.log" 2>&1; then
    passed=$((passed + 1))
    verdict=passed
  else
    verdict="FAILED (see $logs/run-$k.log)"
  fi
  echo "stress-test: run $k: $verdict in $(($(date +%s) - started)) s"
  grep -E '^test .* FAILED$|^error: test failed|^    [a-z_:]+$' "$logs/run-$k.log" | sed 's/^/  /' || true
done
echo "stress-test: $passed of $runs runs passed"
[ "$passed" -eq "$runs" ]
