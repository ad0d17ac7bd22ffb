#!/bin/bash
# run.sh — side-by-side benchmarks: stock ctdbd 4.17 against ctdb-rs, in one run.
#
# usage: bench/run.sh [options]
#
#   --list                 list the registered benchmarks and exit
#   --bench A,B            run only these benchmarks (default: all whose script exists)
#   --skip A,B             leave these out
#   --only stock|ctdb-rs   run one side only
#   --repeat N             repetitions per side (default 5, --quick 2; some benchmarks
#                          register their own count, e.g. idle runs once)
#   --quick                small workloads and short windows: a few minutes in total
#   --idle-seconds S       idle footprint window (default 60, --quick 10)
#   --ok-timeout S         how long a cluster may take to become OK (default 60)
#   --stock-ctdbd PATH     default /usr/sbin/ctdbd
#   --rs-ctdbd PATH        default target/release/ctdbd (absent: "ctdb-rs: not available")
#   --rs-helper-dir DIR    helper programs for the ctdb-rs side (default: same as stock)
#   --rs-recovery-helper P recovery helper of the ctdb-rs side (default
#                          target/release/ctdb_recovery_helper when built; "stock": the
#                          helper directory's, like the other helpers)
#   --tunables FILE        installed as ctdb.tunables on every node of both sides
#   --log-level LEVEL      daemon log level on both sides (default NOTICE)
#   --net 127.A            address block; clusters get 127.A.1.x, 127.A.2.x, ...
#                          (default 127.77; tests use 127.0.x)
#   --results DIR          where results go (default bench/results)
#   --keep-work            keep the scratch directory (cluster dirs and logs)
#   --no-give-up           keep bringing up a side's clusters after one failed to become
#                          OK (default: later benchmarks report that side not available)
#
# Each repetition runs both sides back to back, alternating which goes first. The table
# shows medians, ctdb-rs/stock ratios and spreads; <results>/<run-id>.{txt,csv,json} keep
# it, and <results>/<run-id>/ holds raw values, `ctdb listvars` of each side and logs.
# Benchmarks and how to add one: bench/README.md.

set -u

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)

# ---------------------------------------------------------------------------------------
# The benchmark table. One line per benchmark:
#   bench_register NAME KIND SCRIPT REPEAT HEADLINE DESCRIPTION [ARGS...]
# KIND    cluster     run.sh brings up a healthy 3-node cluster per side for this
#                     benchmark; the script finds it in $BENCH_CLUSTER
#         standalone  the script sets up whatever it needs ($BENCH_PREFIX, $BENCH_WORKDIR)
# SCRIPT  file in bench/, run with ARGS
# REPEAT  repetitions per side, or - for the --repeat value
# HEADLINE  metrics shown in the table (comma-separated), or - for all; CSV/JSON keep all

BENCH_NAMES=()
declare -A BENCH_KIND BENCH_SCRIPT BENCH_REPEAT BENCH_HEADLINE BENCH_DESC BENCH_ARGS

bench_register() {
	local name="$1"
	BENCH_NAMES+=("$name")
	BENCH_KIND[$name]="$2"
	BENCH_SCRIPT[$name]="$3"
	BENCH_REPEAT[$name]="$4"
	BENCH_HEADLINE[$name]="$5"
	BENCH_DESC[$name]="$6"
	shift 6
	BENCH_ARGS[$name]="$*"
}

#              name         kind       script           reps headline                  description
bench_register rtt-local    cluster    rtt.sh           -    p50_us,p99_us             "B1 control round trip, local node" --node local
bench_register rtt-remote   cluster    rtt.sh           -    p50_us,p99_us             "B2 control round trip, remote node" --node 1
bench_register concurrent   cluster    concurrent.sh    -    ops_per_s,p50_us,p99_us   "32 clients on one node, one PING in flight each" --clients 32
bench_register message-ring cluster    message_ring.sh  -    ring_msgs_per_s           "B3 message ring across 3 nodes"
bench_register cold-start   standalone cold_start.sh    -    connected_s,ok_s          "B15 launch 3 daemons -> all connected -> all OK"
bench_register fetch-lock-ring cluster fetch_lock.sh -  migrations_per_s,p99_us,daemon_cpu_per_migration_us,lock_helpers "fetch-lock: one hot key round 3 nodes" ring
bench_register fetch-lock   cluster    fetch_lock.sh    -    locks_per_s,migrations_per_s,remote_p99_us,daemon_cpu_per_migration_us,lock_helpers "fetch-lock: 4 processes per node on one key" contend --per-node 4
bench_register idle         cluster    idle.sh          1    cpu_pct,rss_mean_kb,uss_mean_kb "B19 idle CPU and memory of daemons and children"
bench_register recovery     cluster    recovery.sh      -    recover_s,daemon_recovery_s "issue 4: recover a volatile DB, 100k records" --records 100000
bench_register recovery-1m  cluster    recovery.sh      -    recover_s,daemon_recovery_s "issue 4: recover a volatile DB, 1M records (quick: 300k)" --records 1000000 --quick-records 300000
bench_register failover     standalone failover.sh      -    failover_s,detect_s       "issue 5: SIGKILL a node hosting public IPs -> all moved"
bench_register failover-hang standalone failover.sh     2    failover_s,detect_s       "issue 5: SIGSTOP (hang) a node hosting public IPs -> all moved" --signal STOP
bench_register ipalloc      standalone ipalloc.sh       -    -                         "B13 LCP2 IP allocation (bench/ipalloc.sh)"

# ---------------------------------------------------------------------------------------

die() {
	echo "run.sh: $*" >&2
	exit 1
}

usage() {
	sed -n '2,34p' "$0" | sed 's/^# \{0,1\}//'
	exit "${1:-0}"
}

only_side=""
select_list=""
skip_list=""
repeat=""
quick=0
idle_seconds=""
ok_timeout=60
stock_ctdbd=/usr/sbin/ctdbd
rs_ctdbd="$REPO/target/release/ctdbd"
helper_dir=/usr/libexec/ctdb
rs_helper_dir=""
rs_recovery_helper="$REPO/target/release/ctdb_recovery_helper"
tunables=""
log_level=NOTICE
net=127.77
results_root="$BENCH_DIR/results"
keep_work=0
list_only=0
give_up=1

while [ $# -gt 0 ]; do
	case "$1" in
	--list) list_only=1; shift ;;
	--bench) select_list="$2"; shift 2 ;;
	--skip) skip_list="$2"; shift 2 ;;
	--only) only_side="$2"; shift 2 ;;
	--repeat) repeat="$2"; shift 2 ;;
	--quick) quick=1; shift ;;
	--idle-seconds) idle_seconds="$2"; shift 2 ;;
	--ok-timeout) ok_timeout="$2"; shift 2 ;;
	--stock-ctdbd) stock_ctdbd="$2"; shift 2 ;;
	--rs-ctdbd) rs_ctdbd="$2"; shift 2 ;;
	--rs-helper-dir) rs_helper_dir="$2"; shift 2 ;;
	--rs-recovery-helper) rs_recovery_helper="$2"; shift 2 ;;
	--tunables) tunables="$2"; shift 2 ;;
	--log-level) log_level="$2"; shift 2 ;;
	--net) net="$2"; shift 2 ;;
	--results) results_root="$2"; shift 2 ;;
	--keep-work) keep_work=1; shift ;;
	--no-give-up) give_up=0; shift ;;
	-h | --help) usage 0 ;;
	*) echo "run.sh: unknown option $1" >&2; usage 1 >&2 ;;
	esac
done

if [ $list_only = 1 ]; then
	printf '%-13s %-10s %-16s %s\n' NAME KIND SCRIPT DESCRIPTION
	for b in "${BENCH_NAMES[@]}"; do
		s="${BENCH_SCRIPT[$b]}"
		[ -e "$BENCH_DIR/$s" ] || s="$s (missing)"
		printf '%-13s %-10s %-16s %s\n' "$b" "${BENCH_KIND[$b]}" "$s" "${BENCH_DESC[$b]}"
	done
	exit 0
fi

case "$only_side" in
"") SIDES=(stock ctdb-rs) ;;
stock | ctdb-rs) SIDES=("$only_side") ;;
rs) SIDES=(ctdb-rs) ;;
*) die "--only wants stock or ctdb-rs" ;;
esac
[ -z "$repeat" ] && repeat=$([ $quick = 1 ] && echo 2 || echo 5)
[ -z "$idle_seconds" ] && idle_seconds=$([ $quick = 1 ] && echo 10 || echo 60)
case "$repeat$ok_timeout$idle_seconds" in *[!0-9]*) die "--repeat, --ok-timeout and --idle-seconds want whole numbers" ;; esac
echo "$net" | grep -Eq '^127\.[0-9]{1,3}$' || die "--net wants 127.A"
[ -z "$tunables" ] || [ -r "$tunables" ] || die "cannot read $tunables"
[ -n "$tunables" ] && tunables=$(cd "$(dirname "$tunables")" && pwd)/$(basename "$tunables")
[ -x "$stock_ctdbd" ] || die "$stock_ctdbd is not executable (apt-get install ctdb)"
CTDB_CLI=/usr/bin/ctdb
[ -x "$CTDB_CLI" ] || die "$CTDB_CLI is not installed (apt-get install ctdb)"
LOCAL_CLUSTER="$REPO/scripts/local_cluster.sh"
[ -x "$LOCAL_CLUSTER" ] || die "$LOCAL_CLUSTER is missing"

in_list() { # in_list NAME A,B,C
	case ",$2," in *",$1,"*) return 0 ;; *) return 1 ;; esac
}

SELECTED=()
for b in "${BENCH_NAMES[@]}"; do
	if [ -n "$select_list" ]; then
		in_list "$b" "$select_list" || continue
	elif [ ! -e "$BENCH_DIR/${BENCH_SCRIPT[$b]}" ]; then
		continue
	fi
	[ -n "$skip_list" ] && in_list "$b" "$skip_list" && continue
	SELECTED+=("$b")
done
if [ -n "$select_list" ]; then
	for b in ${select_list//,/ }; do
		[ -n "${BENCH_KIND[$b]+x}" ] || die "no benchmark '$b' (see --list)"
	done
fi
[ ${#SELECTED[@]} -gt 0 ] || die "no benchmark selected"

# The load tool is part of this repo; build it if needed (make bench builds everything).
TOOL="$REPO/target/release/ctdb-bench"
if [ ! -x "$TOOL" ]; then
	echo "building ctdb-bench ..."
	(cd "$REPO" && cargo build --release --quiet --bin ctdb-bench) || die "cannot build ctdb-bench"
fi

# rs_status: empty when the ctdb-rs daemon exists, otherwise why the side is unavailable.
rs_status=""
# BROKEN[side]: set once a side's cluster failed to come up; later benchmarks skip it.
declare -A BROKEN=([stock]="" [ctdb-rs]="")
if [ ! -x "$rs_ctdbd" ]; then
	rs_status="not available: ${rs_ctdbd#"$REPO"/} not built"
fi
# ctdbd runs the recovery helper CTDB_RECOVERY_HELPER names (local_cluster.sh passes it on).
[ "$rs_recovery_helper" = stock ] && rs_recovery_helper=""
if [ -n "$rs_recovery_helper" ] && [ ! -x "$rs_recovery_helper" ]; then
	echo "run.sh: ${rs_recovery_helper#"$REPO"/} not built; ctdb-rs uses the stock recovery helper" >&2
	rs_recovery_helper=""
fi

run_id=$(date +%Y%m%d-%H%M%S)
mkdir -p "$results_root" || die "cannot create $results_root"
results_root=$(cd "$results_root" && pwd)
OUT="$results_root/$run_id"
mkdir -p "$OUT/logs" || die "cannot create $OUT"
RAW="$OUT/raw.tsv"
: >"$RAW"

# Short scratch path: unix socket paths must stay under 108 bytes.
WORK=$(mktemp -d /tmp/ctdb-bench.XXXXXX) || die "mktemp failed"

# ---------------------------------------------------------------------------------------
# Process bookkeeping: everything we start is stopped by pid on exit.

BG_PIDS=()        # background jobs of this script
DAEMON_TREE=()    # daemons and their children seen while clusters ran

descendants_of() { # pid -> pids of its whole tree (one per line, itself included)
	local todo=("$1") p c
	while [ ${#todo[@]} -gt 0 ]; do
		p=${todo[0]}
		todo=("${todo[@]:1}")
		echo "$p"
		for c in $(cat /proc/"$p"/task/*/children 2>/dev/null); do
			todo+=("$c")
		done
	done
}

remember_tree() { # cluster dir
	local p
	for p in $("$LOCAL_CLUSTER" "$1" pids 2>/dev/null | awk '{ print $2 }'); do
		mapfile -t -O "${#DAEMON_TREE[@]}" DAEMON_TREE < <(descendants_of "$p")
	done
}

teardown_cluster() { # cluster dir
	[ -f "$1/cluster.env" ] || return 0
	remember_tree "$1"
	"$LOCAL_CLUSTER" "$1" teardown >/dev/null 2>&1
}

sweep_leftovers() {
	local p
	for p in "${DAEMON_TREE[@]}"; do
		kill -0 "$p" 2>/dev/null || continue
		# Only our daemons' trees: skip a pid that was reused by something unrelated.
		grep -qE 'ctdb|event|mutex|lock|recover' /proc/"$p"/cmdline 2>/dev/null || continue
		kill -KILL "$p" 2>/dev/null
	done
	DAEMON_TREE=()
}

cleanup() {
	local p d
	trap - EXIT INT TERM
	for p in "${BG_PIDS[@]}"; do
		kill "$p" 2>/dev/null
	done
	while IFS= read -r d; do
		teardown_cluster "$(dirname "$d")"
	done < <(find "$WORK" -name cluster.env 2>/dev/null)
	sweep_leftovers
	if [ $keep_work = 1 ]; then
		echo "scratch kept in $WORK"
	else
		rm -rf "$WORK"
	fi
}
trap cleanup EXIT
trap 'echo; echo "interrupted" >&2; exit 130' INT TERM

# ---------------------------------------------------------------------------------------

record() { # benchmark side rep key value
	printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" >>"$RAW"
}

next_subnet=1
new_prefix() { # sets PREFIX to a fresh 127.A.B
	PREFIX="$net.$next_subnet"
	next_subnet=$((next_subnet % 250 + 1))
}

daemon_of() { # side -> daemon path
	if [ "$1" = stock ]; then echo "$stock_ctdbd"; else echo "$rs_ctdbd"; fi
}

helpers_of() {
	if [ "$1" = ctdb-rs ] && [ -n "$rs_helper_dir" ]; then echo "$rs_helper_dir"; else echo "$helper_dir"; fi
}

# Sets the helper overrides of side $1 in this shell's environment.
export_side_helpers() {
	if [ "$1" = ctdb-rs ] && [ -n "$rs_recovery_helper" ]; then
		export CTDB_RECOVERY_HELPER="$rs_recovery_helper"
	else
		unset CTDB_RECOVERY_HELPER
	fi
}

SETUP_ARGS="-n 3 --log-level $log_level"
NODES=3

# Brings up a 3-node cluster for one side in dir $1; on failure sets WHY.
# (Not run in $(...): new_prefix must advance in this shell.)
cluster_setup_start() { # dir side
	local dir="$1" side="$2" n
	new_prefix
	# shellcheck disable=SC2086 # SETUP_ARGS is a word list
	"$LOCAL_CLUSTER" "$dir" setup $SETUP_ARGS -a "$PREFIX" --ctdbd "$(daemon_of "$side")" \
		--helper-dir "$(helpers_of "$side")" >"$dir.setup.log" 2>&1 ||
		{ WHY="setup failed: $(tail -n 1 "$dir.setup.log")"; return 1; }
	if [ -n "$tunables" ]; then
		for n in $(seq 0 $((NODES - 1))); do cp "$tunables" "$dir/node.$n/ctdb.tunables"; done
	fi
	(export_side_helpers "$side" && exec "$LOCAL_CLUSTER" "$dir" start all) >"$dir.start.log" 2>&1 ||
		{ WHY="start failed: $(grep -v started "$dir.start.log" | tail -n 1)"; return 1; }
}

cluster_wait_ok() { # dir
	"$LOCAL_CLUSTER" "$1" wait-ok "$ok_timeout" >"$1.wait.log" 2>&1 ||
		{ WHY="not all nodes OK within $ok_timeout s"; return 1; }
}

keep_cluster_logs() { # dir label
	local n
	mkdir -p "$OUT/logs/$2"
	for n in $(seq 0 $((NODES - 1))); do
		cp "$1/node.$n/log.ctdb" "$OUT/logs/$2/node$n.log" 2>/dev/null
		[ -s "$1/node.$n/ctdbd.out" ] && cp "$1/node.$n/ctdbd.out" "$OUT/logs/$2/node$n.out"
	done
	cp "$1".*.log "$OUT/logs/$2/" 2>/dev/null
}

cluster_alive() { # dir
	[ "$("$LOCAL_CLUSTER" "$1" pids 2>/dev/null | grep -c .)" -eq $NODES ]
}

# Runs one repetition of benchmark $1 on side $2; records its values and status.
run_one() { # bench side rep cluster-dir-or-empty
	local b="$1" side="$2" rep="$3" cdir="$4"
	local wdir="$WORK/w.$b.$side.$rep" out err rc reason
	mkdir -p "$wdir"
	out="$wdir/stdout"
	err="$OUT/logs/$b.$side.$rep.stderr"
	new_prefix
	local -a args
	read -r -a args <<<"${BENCH_ARGS[$b]}"
	(
		cd "$REPO" || exit 1
		export BENCH_SIDE="$side" BENCH_REP="$rep" BENCH_QUICK="$quick"
		export BENCH_CTDBD BENCH_HELPER_DIR
		BENCH_CTDBD=$(daemon_of "$side")
		BENCH_HELPER_DIR=$(helpers_of "$side")
		export BENCH_CTDB="$CTDB_CLI" BENCH_TOOL="$TOOL" BENCH_LOCAL_CLUSTER="$LOCAL_CLUSTER"
		export BENCH_CLUSTER="$cdir" BENCH_NODES="$NODES" BENCH_PREFIX="$PREFIX"
		export BENCH_WORKDIR="$wdir" BENCH_SETUP_ARGS="$SETUP_ARGS" BENCH_LOG_LEVEL="$log_level"
		export BENCH_OK_TIMEOUT="$ok_timeout" BENCH_IDLE_SECONDS="$idle_seconds"
		export BENCH_IDLE_SETTLE="$([ $quick = 1 ] && echo 2 || echo 5)"
		export BENCH_TUNABLES="$tunables" BENCH_REPO="$REPO" BENCH_DIR
		export BENCH_SIDE_BROKEN="${BROKEN[$side]}"
		export_side_helpers "$side"
		exec timeout --kill-after=10 "${BENCH_TIMEOUT:-900}" \
			bash "$BENCH_DIR/${BENCH_SCRIPT[$b]}" "${args[@]}"
	) >"$out" 2>"$err" </dev/null &
	BG_PIDS+=($!)
	wait $!
	rc=$?
	unset 'BG_PIDS[-1]'
	# A standalone script's clusters must not outlive it, even when it was killed.
	while IFS= read -r d; do
		teardown_cluster "$(dirname "$d")"
	done < <(find "$wdir" -name cluster.env 2>/dev/null)
	sweep_leftovers
	cp "$out" "$OUT/logs/$b.$side.$rep.stdout" 2>/dev/null
	# A standalone script may leave its daemons' logs in $BENCH_WORKDIR/logs.
	[ -d "$wdir/logs" ] && cp -r "$wdir/logs" "$OUT/logs/$b.$side.$rep"
	grep -E '^[A-Za-z0-9_.-]+=' "$out" | while IFS='=' read -r key value; do
		record "$b" "$side" "$rep" "$key" "$value"
	done
	reason=$(grep -v '^\s*$' "$err" | tail -n 1)
	case $rc in
	0) record "$b" "$side" "$rep" status ok; printf ' %s#%s ok' "$side" "$rep" ;;
	2) record "$b" "$side" "$rep" status "not available: ${reason:-no reason given}"
	   printf ' %s#%s n/a' "$side" "$rep" ;;
	124 | 137) record "$b" "$side" "$rep" status "failed: timed out"; printf ' %s#%s TIMEOUT' "$side" "$rep" ;;
	*) record "$b" "$side" "$rep" status "failed: ${reason:-exit status $rc}"
	   printf ' %s#%s FAILED' "$side" "$rep" ;;
	esac
	return 0
}

# ---------------------------------------------------------------------------------------

stock_version=$(dpkg-query -W -f='${Version}' ctdb 2>/dev/null || echo unknown)
commit=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$REPO" diff --quiet HEAD 2>/dev/null || commit="$commit+dirty"
load_at_start=$(cut -d' ' -f1-3 /proc/loadavg)

echo "ctdb-bench run $run_id: ${SELECTED[*]}"
echo "  sides: ${SIDES[*]}; repeat $repeat; quick $quick; stock $stock_version; ctdb-rs ${rs_status:-$rs_ctdbd}"
echo "  load average at start: $load_at_start ($(nproc) cpus)"

for b in "${SELECTED[@]}"; do
	reps="${BENCH_REPEAT[$b]}"
	[ "$reps" = - ] && reps=$repeat
	[ "$reps" -gt "$repeat" ] && reps=$repeat
	script="$BENCH_DIR/${BENCH_SCRIPT[$b]}"
	printf '%-13s' "$b"
	if [ ! -e "$script" ]; then
		for side in "${SIDES[@]}"; do record "$b" "$side" - status "not available: ${BENCH_SCRIPT[$b]} missing"; done
		echo " skipped (${BENCH_SCRIPT[$b]} missing)"
		continue
	fi

	declare -A CDIR=()
	declare -A READY=()
	for side in stock ctdb-rs; do
		in_list "$side" "$(IFS=,; echo "${SIDES[*]}")" ||
			record "$b" "$side" - status "not selected (--only $only_side)"
	done
	for side in "${SIDES[@]}"; do
		READY[$side]=""
		if [ "$side" = ctdb-rs ] && [ -n "$rs_status" ] && [ "${BENCH_KIND[$b]}" = cluster ]; then
			record "$b" "$side" - status "$rs_status"
			continue
		fi
		if [ -n "${BROKEN[$side]}" ] && [ "${BENCH_KIND[$b]}" = cluster ]; then
			record "$b" "$side" - status "not available: no healthy cluster (${BROKEN[$side]})"
			continue
		fi
		READY[$side]=yes
	done

	if [ "${BENCH_KIND[$b]}" = cluster ]; then
		printf ' [cluster up'
		# Start every side first, then wait: the clusters come up concurrently.
		for side in "${SIDES[@]}"; do
			[ -n "${READY[$side]}" ] || continue
			CDIR[$side]="$WORK/$b.$side"
			if ! cluster_setup_start "${CDIR[$side]}" "$side"; then
				record "$b" "$side" - status "not available: $WHY"
				[ $give_up = 1 ] && BROKEN[$side]="$b: $WHY"
				READY[$side]=""
				keep_cluster_logs "${CDIR[$side]}" "$b.$side"
				teardown_cluster "${CDIR[$side]}"
			fi
		done
		for side in "${SIDES[@]}"; do
			[ -n "${READY[$side]}" ] || continue
			if ! cluster_wait_ok "${CDIR[$side]}"; then
				record "$b" "$side" - status "not available: $WHY"
				[ $give_up = 1 ] && BROKEN[$side]="$b: $WHY"
				READY[$side]=""
				keep_cluster_logs "${CDIR[$side]}" "$b.$side"
				teardown_cluster "${CDIR[$side]}"
				sweep_leftovers
				continue
			fi
			"$LOCAL_CLUSTER" "${CDIR[$side]}" onnode 0 timeout 10 "$CTDB_CLI" listvars \
				>"$OUT/listvars.$b.$side.txt" 2>&1
		done
		printf ']'
		if [ -n "${READY[stock]:-}" ] && [ -n "${READY[ctdb-rs]:-}" ] &&
			! cmp -s "$OUT/listvars.$b.stock.txt" "$OUT/listvars.$b.ctdb-rs.txt"; then
			printf ' (WARNING: tunables differ, see listvars.%s.*)' "$b"
		fi
	fi

	for rep in $(seq 1 "$reps"); do
		order=("${SIDES[@]}")
		if [ $((rep % 2)) = 0 ] && [ ${#SIDES[@]} = 2 ]; then
			order=("${SIDES[1]}" "${SIDES[0]}")
		fi
		for side in "${order[@]}"; do
			[ -n "${READY[$side]}" ] || continue
			if [ "${BENCH_KIND[$b]}" = cluster ]; then
				if ! cluster_alive "${CDIR[$side]}"; then
					record "$b" "$side" "$rep" status "failed: a daemon of the cluster died"
					printf ' %s#%s DEAD' "$side" "$rep"
					continue
				fi
				run_one "$b" "$side" "$rep" "${CDIR[$side]}"
			else
				run_one "$b" "$side" "$rep" ""
			fi
		done
	done

	if [ "${BENCH_KIND[$b]}" = cluster ]; then
		for side in "${SIDES[@]}"; do
			[ -n "${CDIR[$side]:-}" ] || continue
			keep_cluster_logs "${CDIR[$side]}" "$b.$side"
			teardown_cluster "${CDIR[$side]}"
		done
		sweep_leftovers
	fi
	echo
	unset CDIR READY
done

echo
headline_args=()
for b in "${SELECTED[@]}"; do
	[ "${BENCH_HEADLINE[$b]}" = - ] || headline_args+=(--headline "$b=${BENCH_HEADLINE[$b]}")
done
"$TOOL" report --raw "$RAW" \
	--csv "$results_root/$run_id.csv" --json "$results_root/$run_id.json" \
	--table "$results_root/$run_id.txt" \
	--meta "run=$run_id" --meta "date=$(date -Is)" --meta "host=$(uname -n)" \
	--meta "kernel=$(uname -r)" --meta "cpus=$(nproc)" --meta "load_at_start=$load_at_start" \
	--meta "load_at_end=$(cut -d" " -f1-3 /proc/loadavg)" \
	--meta "quick=$quick" --meta "repeat=$repeat" --meta "nodes=$NODES" \
	--meta "log_level=$log_level" --meta "idle_seconds=$idle_seconds" \
	--meta "stock=$stock_ctdbd ($stock_version)" \
	--meta "ctdb-rs=${rs_status:-$rs_ctdbd} (commit $commit)" \
	--meta "ctdb-rs_recovery_helper=${rs_recovery_helper:-$(helpers_of ctdb-rs)/ctdb_recovery_helper}" \
	"${headline_args[@]}" || die "report failed"
echo
echo "results: $results_root/$run_id.{txt,csv,json}; raw values, listvars and logs in $OUT/"
