#!/bin/bash
# cold_start.sh — B15: launch all daemons at once and time until
#   connected_s  every node sees every other node without the DISCONNECTED flag
#   ok_s         `ctdb nodestatus all` succeeds on every node (what wait-ok waits for)
# measured from the moment the daemons are launched, by polling `ctdb -X nodestatus all`.
set -u
. "$(dirname "$0")/lib.sh"

[ -z "${BENCH_SIDE_BROKEN:-}" ] ||
	bench_unavailable "no healthy cluster earlier in this run ($BENCH_SIDE_BROKEN)"
[ -x "$BENCH_CTDBD" ] || bench_unavailable "${BENCH_CTDBD#"$BENCH_REPO"/} not built"

dir="$BENCH_WORKDIR/cold"
lc="$BENCH_LOCAL_CLUSTER"
starters=()

cleanup() {
	for p in "${starters[@]}"; do
		[ "$p" = done ] || kill "$p" 2>/dev/null
	done
	"$lc" "$dir" teardown >/dev/null 2>&1
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# shellcheck disable=SC2086 # BENCH_SETUP_ARGS is a word list by design
"$lc" "$dir" setup $BENCH_SETUP_ARGS -a "$BENCH_PREFIX" --ctdbd "$BENCH_CTDBD" >/dev/null ||
	bench_fail "cluster setup failed"
if [ -n "${BENCH_TUNABLES:-}" ]; then
	for n in $(seq 0 $((BENCH_NODES - 1))); do
		cp "$BENCH_TUNABLES" "$dir/node.$n/ctdb.tunables"
	done
fi

# Whether the nodestatus -X output in $1 shows every node connected.
all_connected() {
	echo "$1" | awk -F'|' '
		NR == 1 { for (i = 1; i <= NF; i++) if ($i == "Disconnected") col = i; next }
		col && $col != "0" { bad = 1 }
		END { exit (col && NR > 1 && !bad) ? 0 : 1 }'
}

t0=$(bench_now_ns)
# All daemons launched together: local_cluster.sh's start waits for each pid file, which
# must not serialise the launches.
for n in $(seq 0 $((BENCH_NODES - 1))); do
	"$lc" "$dir" start "$n" >"$BENCH_WORKDIR/start.$n.log" 2>&1 &
	starters+=($!)
done

deadline=$((t0 + ${BENCH_OK_TIMEOUT:-60} * 1000000000))
connected_at=""
ok_at=""
while [ "$(bench_now_ns)" -lt "$deadline" ]; do
	all_ok=yes
	all_conn=yes
	for n in $(seq 0 $((BENCH_NODES - 1))); do
		out=$("$lc" "$dir" onnode "$n" timeout 5 "$BENCH_CTDB" -X nodestatus all 2>/dev/null)
		rc=$?
		[ $rc -eq 0 ] || all_ok=no
		all_connected "$out" || all_conn=no
		[ $all_ok = no ] && [ $all_conn = no ] && break
	done
	now=$(bench_now_ns)
	# A node whose start failed will never be OK: stop waiting for it.
	for i in "${!starters[@]}"; do
		p=${starters[$i]}
		[ "$p" = done ] && continue
		kill -0 "$p" 2>/dev/null && continue
		wait "$p" || bench_fail "node $i did not start: $(tail -n 1 "$BENCH_WORKDIR/start.$i.log")"
		starters[i]=done
	done
	if [ -z "$connected_at" ] && [ $all_conn = yes ]; then
		connected_at=$now
	fi
	if [ $all_ok = yes ]; then
		ok_at=$now
		[ -n "$connected_at" ] || connected_at=$now
		break
	fi
	sleep 0.05
done

for p in "${starters[@]}"; do
	[ "$p" = done ] || wait "$p"
done
starters=()

[ -n "$connected_at" ] && bench_kv connected_s "$(bench_seconds_between "$t0" "$connected_at")"
[ -n "$ok_at" ] || bench_fail "not all nodes OK within ${BENCH_OK_TIMEOUT:-60} s"
bench_kv ok_s "$(bench_seconds_between "$t0" "$ok_at")"
