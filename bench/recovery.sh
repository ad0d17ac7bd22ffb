#!/bin/bash
# recovery.sh — issue 4: recovery of a volatile database of --records distinct keys.
#
# Attaches a volatile database, writes each node's share straight into its local TDB file
# (`ctdb-bench fill-volatile`: valid ltdb headers, dmaster = the holder, and for one key in
# four older copies with lower RSNs on other nodes, as after migrations), then does what
# `ctdb recover` does and times it (`ctdb-bench recover`, 5 ms polling):
#   recover_s          SET_RECMODE ACTIVE → every node back in NORMAL mode with the same new
#                      generation (includes up to one RecoverInterval until the leader's
#                      recovery daemon notices, the same for both sides)
#   daemon_recovery_s  the longest of the nodes' own last-recovery durations (`ctdb uptime`:
#                      START_RECOVERY to the end of the "recovered" event)
# It first waits until the previous recovery ended RerecoveryTimeout ago: the leader holds
# new recoveries off that long, which would otherwise be timed instead of the recovery.
# Afterwards every node must hold exactly --records records, none of them a stale copy,
# or the repetition fails: a broken recovery is not timed.
set -u
. "$(dirname "$0")/lib.sh"

records=100000
while [ $# -gt 0 ]; do
	case "$1" in
	--records) records="$2"; shift 2 ;;
	--quick-records) quick_records="$2"; shift 2 ;;
	*) bench_fail "unknown option $1" ;;
	esac
done
[ "${BENCH_QUICK:-0}" = 1 ] && [ -n "${quick_records:-}" ] && records=$quick_records

db=bench_recovery.tdb
nodes=$BENCH_NODES

bench_ctdb_on 0 attach "$db" >/dev/null || bench_fail "ctdb attach $db failed"

# The database's path on node $1, once that node has attached it.
db_path() {
	bench_ctdb_on "$1" -X getdbmap 2>/dev/null |
		awk -F'|' -v name="$db" '$3 == name { print $4 }'
}

declare -a paths
for n in $(seq 0 $((nodes - 1))); do
	for _ in $(seq 1 100); do
		paths[n]=$(db_path "$n")
		[ -n "${paths[n]}" ] && break
		sleep 0.1
	done
	[ -n "${paths[n]}" ] || bench_fail "node $n did not attach $db"
done

t0=$(bench_now_ns)
fillers=()
for n in $(seq 0 $((nodes - 1))); do
	"$BENCH_TOOL" fill-volatile --db "${paths[n]}" --pnn "$n" --nodes "$nodes" \
		--records "$records" >"$BENCH_WORKDIR/fill.$n" 2>&1 &
	fillers+=($!)
done
for i in "${!fillers[@]}"; do
	wait "${fillers[$i]}" || bench_fail "filling node $i: $(tail -n 1 "$BENCH_WORKDIR/fill.$i")"
done
echo "populated $records records in $(bench_seconds_between "$t0" "$(bench_now_ns)") s" \
	"($(cat "$BENCH_WORKDIR"/fill.* | grep -h written= | tr '\n' ' '))" >&2

quiet=$(bench_ctdb_on 0 getvar RerecoveryTimeout | sed -n 's/.*= *//p')
out=$("$BENCH_TOOL" recover --cluster "$BENCH_CLUSTER" --from 0 --timeout 600 \
	--quiet "$((${quiet:-10} + 1))") ||
	bench_fail "recover: $out"

for n in $(seq 0 $((nodes - 1))); do
	census=$("$BENCH_TOOL" census --db "${paths[n]}") || bench_fail "census of node $n failed"
	got=$(echo "$census" | sed -n 's/^records=//p')
	stale=$(echo "$census" | sed -n 's/^stale=//p')
	[ "$got" = "$records" ] && [ "$stale" = 0 ] ||
		bench_fail "after recovery node $n holds $got records ($stale stale), want $records (0 stale)"
done

bench_kv records "$records"
echo "$out" | grep -E '^(recover_s|daemon_recovery_s)='
