#!/bin/bash
# rtt.sh [--node local|PNN] — B1/B2: control round trips from node 0's socket, one connection.
# To the local node ctdbd answers itself; to a remote node it forwards over TCP.
set -u
. "$(dirname "$0")/lib.sh"

node=local
while [ $# -gt 0 ]; do
	case "$1" in
	--node) node="$2"; shift 2 ;;
	*) bench_fail "rtt.sh: unknown option $1" ;;
	esac
done

count=$(bench_pick 5000 20000)
exec "$BENCH_TOOL" rtt --cluster "$BENCH_CLUSTER" --from 0 --node "$node" --count "$count" \
	--warmup 200
