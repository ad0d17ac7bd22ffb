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
#   daemons_cpu_s, helpers_cpu_s  CPU time used meanwhile by the daemons, and by their
#                      children (recovery daemon, eventd, the recovery helper), all nodes
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

# CPU time (clock ticks) of node $1's processes, split as "daemon children": ctdbd itself,
# and everything under it (recovery daemon, eventd, and the recovery helpers they reaped).
cpu_ticks() {
	local pid children=0 p
	pid=$(cat "$BENCH_CLUSTER/node.$1/daemon.pid")
	for p in $(cat /proc/"$pid"/task/*/children 2>/dev/null); do
		children=$((children + $(awk '{ print $14 + $15 + $16 + $17 }' /proc/"$p"/stat 2>/dev/null || echo 0)))
	done
	echo "$(awk '{ print $14 + $15 }' /proc/"$pid"/stat) $children"
}
declare -a cpu_before
for n in $(seq 0 $((nodes - 1))); do
	cpu_before[n]=$(cpu_ticks "$n")
done

quiet=$(bench_ctdb_on 0 getvar RerecoveryTimeout | sed -n 's/.*= *//p')
out=$("$BENCH_TOOL" recover --cluster "$BENCH_CLUSTER" --from 0 --timeout 600 \
	--quiet "$((${quiet:-10} + 1))$(bench_phase | sed 's/^0//')") ||
	bench_fail "recover: $out"

# Either every node holds every record (stock's helper), or each record is held once, by
# its lmaster (ctdb-rs's helper partitions volatile databases): the counts add up.
total=0
all_full=1
for n in $(seq 0 $((nodes - 1))); do
	census=$("$BENCH_TOOL" census --db "${paths[n]}") || bench_fail "census of node $n failed"
	got=$(echo "$census" | sed -n 's/^records=//p')
	stale=$(echo "$census" | sed -n 's/^stale=//p')
	[ "$stale" = 0 ] || bench_fail "after recovery node $n holds $stale stale records"
	[ "$got" = "$records" ] || all_full=0
	total=$((total + got))
done
[ "$all_full" = 1 ] || [ "$total" = "$records" ] ||
	bench_fail "after recovery the nodes hold $total records in all, want $records on each or in all"

hz=$(getconf CLK_TCK)
daemons=0
others=0
for n in $(seq 0 $((nodes - 1))); do
	read -r d0 c0 <<<"${cpu_before[n]}"
	read -r d1 c1 <<<"$(cpu_ticks "$n")"
	daemons=$((daemons + d1 - d0))
	others=$((others + c1 - c0))
done

bench_kv records "$records"
echo "$out" | grep -E '^(recover_s|daemon_recovery_s)='
# Where the CPU went, summed over the nodes (clock-tick resolution): the daemons, and their
# children including the recovery helper (on the leader).
bench_kv daemons_cpu_s "$(awk -v t="$daemons" -v hz="$hz" 'BEGIN { printf "%.2f", t / hz }')"
bench_kv helpers_cpu_s "$(awk -v t="$others" -v hz="$hz" 'BEGIN { printf "%.2f", t / hz }')"
