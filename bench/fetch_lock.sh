#!/bin/bash
# fetch_lock.sh ring|contend [--per-node W] — fetch-lock of volatile records as smbd does it
# (the client opens the node's TDB, takes the chain lock, asks for a migration when the
# record lives elsewhere).
#   ring     one hot key handed round the 3 nodes, one client per node in turn: migrations/s
#   contend  W worker processes per node hammer one key for a fixed time: locks/s, latency,
#            and the latency of the fetch-locks that had to migrate the record (remote_*)
# Both count the daemons' ctdb_lock_helper children seen during the run (lock_helpers).
set -u
. "$(dirname "$0")/lib.sh"

mode="${1:-ring}"
[ $# -gt 0 ] && shift
per_node=4
while [ $# -gt 0 ]; do
	case "$1" in
	--per-node) per_node="$2"; shift 2 ;;
	*) bench_fail "fetch_lock.sh: unknown option $1" ;;
	esac
done

seconds=$(bench_pick 3 10)
# A fresh key per repetition: every run starts from a record that has never moved.
case "$mode" in
ring)
	exec "$BENCH_TOOL" fetch-lock-ring --cluster "$BENCH_CLUSTER" --nodes "$BENCH_NODES" \
		--seconds "$seconds" --key "ring.${BENCH_SIDE:-x}.${BENCH_REP:-0}"
	;;
contend)
	exec "$BENCH_TOOL" fetch-lock --cluster "$BENCH_CLUSTER" --nodes "$BENCH_NODES" \
		--per-node "$per_node" --count 0 --seconds "$seconds" --timeout 120 \
		--key "hot.${BENCH_SIDE:-x}.${BENCH_REP:-0}"
	;;
*) bench_fail "fetch_lock.sh: mode is ring or contend, not $mode" ;;
esac
