#!/bin/bash
# failover.sh — issue 5: IP failover after a node dies.
#
# Sets up a 3-node cluster with one public address per node (`local_cluster.sh
# --public-addresses`: test mode, the addresses never reach the kernel), waits until every
# node is OK and every address is hosted, then `ctdb-bench failover` SIGKILLs a node that is
# not the leader but hosts an address and polls the survivors every 5 ms:
#   detect_s    until every survivor has flagged the dead node DISCONNECTED (at least once)
#   failover_s  until every survivor reports each of its addresses hosted by a survivor
# The kill waits until the last recovery ended RerecoveryTimeout ago (a recovery within that
# window waits for the hold-off in both daemons, which is not what is measured).
# Both sides use the same tunables (KeepaliveInterval, KeepaliveLimit, RecoverInterval ...);
# with SIGKILL the kernel closes the dead node's TCP connections, so how fast a side reacts
# to the link dropping (rather than to missing keepalives) decides detect_s.
#
# --signal STOP (failover-hang) stops the node instead: its kernel keeps the TCP connections
# up, so only missing keepalives (KeepaliveInterval × KeepaliveLimit) reveal it.
set -u
. "$(dirname "$0")/lib.sh"

signal=KILL
while [ $# -gt 0 ]; do
	case "$1" in
	--signal) signal="$2"; shift 2 ;;
	*) bench_fail "unknown option $1" ;;
	esac
done

[ -z "${BENCH_SIDE_BROKEN:-}" ] ||
	bench_unavailable "no healthy cluster earlier in this run ($BENCH_SIDE_BROKEN)"
[ -x "$BENCH_CTDBD" ] || bench_unavailable "${BENCH_CTDBD#"$BENCH_REPO"/} not built"
# A hung node takes KeepaliveInterval × KeepaliveLimit (25 s by default) to be noticed.
[ "$signal" = STOP ] && [ "${BENCH_QUICK:-0}" = 1 ] &&
	bench_unavailable "skipped under --quick (about a minute per repetition)"

dir="$BENCH_WORKDIR/fo"
lc="$BENCH_LOCAL_CLUSTER"
cleanup() {
	mkdir -p "$BENCH_WORKDIR/logs"
	for n in $(seq 0 $((BENCH_NODES - 1))); do
		cp "$dir/node.$n/log.ctdb" "$BENCH_WORKDIR/logs/node$n.log" 2>/dev/null
	done
	"$lc" "$dir" teardown >/dev/null 2>&1
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# shellcheck disable=SC2086 # BENCH_SETUP_ARGS is a word list by design
"$lc" "$dir" setup $BENCH_SETUP_ARGS -a "$BENCH_PREFIX" --ctdbd "$BENCH_CTDBD" \
	--helper-dir "$BENCH_HELPER_DIR" --public-addresses >/dev/null || bench_fail "cluster setup failed"
if [ -n "${BENCH_TUNABLES:-}" ]; then
	for n in $(seq 0 $((BENCH_NODES - 1))); do
		cp "$BENCH_TUNABLES" "$dir/node.$n/ctdb.tunables"
	done
fi
"$lc" "$dir" start all >"$BENCH_WORKDIR/start.log" 2>&1 ||
	bench_fail "start failed: $(grep -v started "$BENCH_WORKDIR/start.log" | tail -n 1)"
"$lc" "$dir" wait-ok "${BENCH_OK_TIMEOUT:-60}" >/dev/null 2>&1 ||
	bench_fail "not all nodes OK within ${BENCH_OK_TIMEOUT:-60} s"

# Every node hosts one address, in every node's view.
all_hosted() {
	local n out
	for n in $(seq 0 $((BENCH_NODES - 1))); do
		out=$("$lc" "$dir" onnode "$n" timeout 5 "$BENCH_CTDB" -X ip 2>/dev/null) || return 1
		echo "$out" | awk -F'|' -v nodes="$BENCH_NODES" '
			NR > 1 { rows++; if ($3 < 0) bad = 1; hosts[$3] = 1 }
			END { n = 0; for (h in hosts) n++; exit (!bad && rows == nodes && n == nodes) ? 0 : 1 }' ||
			return 1
	done
}
deadline=$(($(date +%s) + ${BENCH_OK_TIMEOUT:-60}))
until all_hosted; do
	[ "$(date +%s)" -lt "$deadline" ] || bench_fail "public addresses not all hosted within ${BENCH_OK_TIMEOUT:-60} s"
	sleep 0.2
done

# Recoveries are held off for RerecoveryTimeout after the start-up recovery: kill only
# after that, as in a cluster that has been running for a while.
quiet=$("$lc" "$dir" onnode 0 timeout 5 "$BENCH_CTDB" getvar RerecoveryTimeout | sed -n 's/.*= *//p')
"$BENCH_TOOL" failover --cluster "$dir" --nodes "$BENCH_NODES" --timeout 120 --signal "$signal" \
	--quiet "$((${quiet:-10} + 1))$(bench_phase | sed 's/^0//')"
