#!/bin/bash
# idle.sh — B19: CPU and memory of every daemon and its children while nothing happens.
# Waits $BENCH_IDLE_SETTLE seconds first, so the start-up recovery is not counted.
set -u
. "$(dirname "$0")/lib.sh"

pids=$(bench_daemon_pids "$BENCH_CLUSTER")
[ "$(echo "$pids" | grep -c .)" -eq "$BENCH_NODES" ] ||
	bench_fail "expected $BENCH_NODES running daemons, found: $pids"
sleep "${BENCH_IDLE_SETTLE:-5}"
args=()
for p in $pids; do
	args+=(--pid "$p")
done
exec "$BENCH_TOOL" footprint "${args[@]}" --seconds "${BENCH_IDLE_SECONDS:-60}"
