#!/bin/bash
# concurrent.sh [--clients C] [--node local|PNN] — many clients on node 0, each with one
# PING in flight: throughput and latency under load.
set -u
. "$(dirname "$0")/lib.sh"

clients=32
node=local
while [ $# -gt 0 ]; do
	case "$1" in
	--clients) clients="$2"; shift 2 ;;
	--node) node="$2"; shift 2 ;;
	*) bench_fail "concurrent.sh: unknown option $1" ;;
	esac
done

count=$(bench_pick 1000 5000)
exec "$BENCH_TOOL" concurrent --cluster "$BENCH_CLUSTER" --from 0 --node "$node" \
	--clients "$clients" --count "$count" --timeout 300
