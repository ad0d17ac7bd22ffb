# lib.sh — helpers for benchmark scripts run by bench/run.sh (source it; it defines
# functions only).
#
# A benchmark script prints its results as key=value lines on stdout and exits
#   0  measured (the key=value lines are the results)
#   2  this side cannot run the benchmark (the last stderr line says why)
#   *  failed (the last stderr line says why)
# See bench/README.md for the environment run.sh provides.

# Nanoseconds on the monotonic-enough wall clock date(1) offers.
bench_now_ns() {
	date +%s%N
}

# Seconds between two bench_now_ns readings, three decimals.
bench_seconds_between() {
	awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f\n", (b - a) / 1e9 }'
}

bench_kv() {
	printf '%s=%s\n' "$1" "$2"
}

bench_unavailable() {
	echo "$*" >&2
	exit 2
}

bench_fail() {
	echo "$*" >&2
	exit 1
}

# bench_pick QUICK_VALUE FULL_VALUE: the value for the current mode.
bench_pick() {
	if [ "${BENCH_QUICK:-0}" = 1 ]; then echo "$1"; else echo "$2"; fi
}

# Runs the stock CLI against node $1 of the cluster in $BENCH_CLUSTER (or $2 when given).
bench_ctdb_on() {
	_node="$1"
	shift
	"$BENCH_LOCAL_CLUSTER" "$BENCH_CLUSTER" onnode "$_node" timeout 10 "$BENCH_CTDB" "$@"
}

# Daemon pids of the cluster in $1, one per line.
bench_daemon_pids() {
	"$BENCH_LOCAL_CLUSTER" "$1" pids | awk '{ print $2 }'
}

# bench_phase: a fraction of a second that differs between repetitions (0.1, 0.3, ... 0.9,
# then again), the same on both sides. Added to a wait, it spreads an event over the phases
# of the daemons' once-a-second loops; waiting whole seconds after a recovery would hit
# the same phase every time and time either the best or the worst case only.
bench_phase() {
	awk -v rep="${BENCH_REP:-1}" 'BEGIN { x = (rep - 1) * 0.2 + 0.1; printf "%.1f\n", x - int(x) }'
}
