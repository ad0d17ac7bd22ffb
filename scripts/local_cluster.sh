#!/bin/bash
# local_cluster.sh — run a small CTDB cluster on loopback addresses, one
# CTDB_BASE per node, everything under one directory.
#
# Works with stock ctdbd and with any other ctdbd-compatible daemon that
# honours CTDB_TEST_MODE/CTDB_BASE (pass --ctdbd PATH at setup time).
#
# usage: local_cluster.sh <dir> <command> [args]
#
#   setup -n N [-a 127.A.B] [--ctdbd PATH] [--ctdb PATH] [--helper-dir DIR]
#         [--no-cluster-lock] [--public-addresses] [--log-level LEVEL]
#                     write <dir>/node.0 .. node.N-1 (nothing is started)
#   start [pnn|all]   start daemon(s); waits for each pid file
#   stop  [pnn|all]   "ctdb shutdown", then SIGTERM/SIGKILL by recorded pid
#   status            one line per node: pnn address running/stopped pid
#   pids              "pnn pid" for each running node
#   env <pnn>         print the exports needed to run `ctdb` against a node
#   onnode <pnn> CMD  run CMD in the environment of node pnn
#   wait-ok [secs]    wait until every node reports OK (default 60 s)
#   teardown          stop everything, then remove <dir>
#
# Node i gets address <prefix>.(i+1).  A file node.N/node.env, sourced just
# before node N starts, may set NODE_CTDBD (another daemon binary, for mixed
# clusters) and helper overrides such as CTDB_EVENTD.  Each run should use its own <dir> and
# its own prefix, so several clusters can run side by side on one host.
#
# Environment overrides passed through to the daemons at start time (used by
# the golden-vector capture to interpose recording wrappers):
#   CTDB_RECOVERY_HELPER, CTDB_TAKEOVER_HELPER, CTDB_EVENTD,
#   CTDB_EVENT_HELPER, CTDB_LOCK_HELPER, CTDB_CLUSTER_MUTEX_HELPER

set -u

die() {
	echo "local_cluster.sh: $*" >&2
	exit 1
}

usage() {
	sed -n '2,31p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit 1
}

[ $# -ge 2 ] || usage

dir="$1"
cmd="$2"
shift 2

# Absolute directory, so that paths in the generated files stay valid
# whatever the caller's working directory is later.
case "$dir" in
/*) ;;
*) dir="$PWD/$dir" ;;
esac

cfg="$dir/cluster.env"

load_config() {
	[ -f "$cfg" ] || die "$dir is not set up (no cluster.env)"
	# shellcheck disable=SC1090
	. "$cfg"
}

node_dir() {
	echo "$dir/node.$1"
}

node_addr() {
	echo "$ADDR_PREFIX.$(($1 + 1))"
}

node_list() {
	# "all" or a single pnn
	case "${1:-all}" in
	all) seq 0 $((NUM_NODES - 1)) ;;
	*[!0-9]*) die "bad node '$1' (want a pnn or 'all')" ;;
	*)
		[ "$1" -lt "$NUM_NODES" ] || die "no node $1 (cluster has $NUM_NODES)"
		echo "$1"
		;;
	esac
}

node_pid() {
	# Prints the recorded daemon pid of a node if that process is alive.
	_pidfile="$(node_dir "$1")/daemon.pid"
	[ -f "$_pidfile" ] || return 1
	_pid=$(cat "$_pidfile")
	[ -n "$_pid" ] || return 1
	kill -0 "$_pid" 2>/dev/null || return 1
	echo "$_pid"
}

node_env_exports() {
	_b=$(node_dir "$1")
	echo "export CTDB_TEST_MODE=yes"
	echo "export CTDB_BASE=$_b"
	echo "export CTDB_SOCKET=$_b/run/ctdbd.socket"
}

run_on_node() {
	_pnn="$1"
	shift
	_b=$(node_dir "$_pnn")
	CTDB_TEST_MODE=yes CTDB_BASE="$_b" CTDB_SOCKET="$_b/run/ctdbd.socket" "$@"
}

cmd_setup() {
	num=3
	prefix="127.0.201"
	ctdbd_path=/usr/sbin/ctdbd
	ctdb_path=/usr/bin/ctdb
	helper_dir=/usr/libexec/ctdb
	cluster_lock=yes
	public_addresses=no
	log_level=INFO

	while [ $# -gt 0 ]; do
		case "$1" in
		-n) num="$2"; shift 2 ;;
		-a) prefix="$2"; shift 2 ;;
		--ctdbd) ctdbd_path="$2"; shift 2 ;;
		--ctdb) ctdb_path="$2"; shift 2 ;;
		--helper-dir) helper_dir="$2"; shift 2 ;;
		--no-cluster-lock) cluster_lock=no; shift ;;
		--public-addresses) public_addresses=yes; shift ;;
		--log-level) log_level="$2"; shift 2 ;;
		*) die "setup: unknown option $1" ;;
		esac
	done

	case "$num" in
	'' | *[!0-9]*) die "setup: -n wants a number" ;;
	esac
	[ "$num" -ge 1 ] && [ "$num" -le 250 ] || die "setup: -n must be 1..250"
	echo "$prefix" | grep -Eq '^127\.[0-9]{1,3}\.[0-9]{1,3}$' ||
		die "setup: -a wants a prefix like 127.0.42"
	[ -x "$ctdbd_path" ] || die "setup: $ctdbd_path is not executable"

	ADDR_PREFIX="$prefix"
	if [ -f "$cfg" ]; then
		die "setup: $dir is already set up (teardown first)"
	fi

	# Unix socket paths are limited to 108 bytes.
	_longest="$dir/node.$((num - 1))/run/proxy-helper.socket"
	[ ${#_longest} -lt 100 ] || die "setup: $dir is too long for unix socket paths"

	mkdir -p "$dir/shared" || die "setup: cannot create $dir"

	cat >"$cfg" <<EOF
NUM_NODES=$num
ADDR_PREFIX=$prefix
CTDBD=$ctdbd_path
CTDB=$ctdb_path
HELPER_DIR=$helper_dir
CLUSTER_LOCK=$cluster_lock
PUBLIC_ADDRESSES=$public_addresses
EOF

	_a=$(echo "$prefix" | cut -d. -f2)
	_b=$(echo "$prefix" | cut -d. -f3)

	: >"$dir/nodes"
	for i in $(seq 0 $((num - 1))); do
		echo "$prefix.$((i + 1))" >>"$dir/nodes"
	done

	# Public addresses never reach the kernel: the event scripts that would
	# add them are absent, so any private range works.
	: >"$dir/public_addresses"
	if [ "$public_addresses" = yes ]; then
		for i in $(seq 0 $((num - 1))); do
			echo "10.$_a.$_b.$((101 + i))/24 lo" >>"$dir/public_addresses"
		done
	fi

	for i in $(seq 0 $((num - 1))); do
		b=$(node_dir "$i")
		mkdir -p "$b/run" "$b/var" "$b/events/legacy" \
			"$b/db/volatile" "$b/db/persistent" "$b/db/state"
		cp "$dir/nodes" "$b/nodes"
		cp "$dir/public_addresses" "$b/public_addresses"
		if [ -f /etc/ctdb/functions ]; then
			cp /etc/ctdb/functions "$b/functions"
		fi

		{
			echo "[logging]"
			echo "	location = file:$b/log.ctdb"
			echo "	log level = $log_level"
			echo
			echo "[cluster]"
			echo "	node address = $(node_addr "$i")"
			if [ "$cluster_lock" = yes ]; then
				echo "	cluster lock = $dir/shared/cluster.lock"
			fi
			echo
			echo "[database]"
			echo "	volatile database directory = $b/db/volatile"
			echo "	persistent database directory = $b/db/persistent"
			echo "	state database directory = $b/db/state"
			echo
			echo "[failover]"
			if [ "$public_addresses" = yes ]; then
				echo "	disabled = false"
			else
				echo "	disabled = true"
			fi
		} >"$b/ctdb.conf"
	done
	echo "set up $num node(s) in $dir on $prefix.1..$prefix.$num"
}

start_node() {
	_pnn="$1"
	_b=$(node_dir "$_pnn")

	if _pid=$(node_pid "$_pnn"); then
		echo "node $_pnn already running (pid $_pid)"
		return 0
	fi

	rm -f "$_b/run/ctdbd.pid" "$_b/daemon.pid"

	_hd="$HELPER_DIR"
	(
		cd "$_b" || exit 1
		unset CTDB_SOCKET
		export CTDB_TEST_MODE=yes
		export CTDB_BASE="$_b"
		export CTDB_EVENTD="${CTDB_EVENTD:-$_hd/ctdb-eventd}"
		export CTDB_EVENT_HELPER="${CTDB_EVENT_HELPER:-$_hd/ctdb-event}"
		export CTDB_LOCK_HELPER="${CTDB_LOCK_HELPER:-$_hd/ctdb_lock_helper}"
		export CTDB_RECOVERY_HELPER="${CTDB_RECOVERY_HELPER:-$_hd/ctdb_recovery_helper}"
		export CTDB_TAKEOVER_HELPER="${CTDB_TAKEOVER_HELPER:-$_hd/ctdb_takeover_helper}"
		export CTDB_CLUSTER_MUTEX_HELPER="${CTDB_CLUSTER_MUTEX_HELPER:-$_hd/ctdb_mutex_fcntl_helper}"
		# A node of a mixed cluster names its own daemon (and may set
		# helper overrides) in node.env.
		NODE_CTDBD="$CTDBD"
		# shellcheck disable=SC1091
		[ -f "$_b/node.env" ] && . "$_b/node.env"
		# stdin is /dev/null, not a pipe: stock ctdbd in test mode exits
		# when a stdin pipe reaches EOF.
		exec "$NODE_CTDBD" </dev/null >>"$_b/ctdbd.out" 2>&1
	) &
	_launcher=$!

	# Stock ctdbd daemonises: the real pid shows up in run/ctdbd.pid.  A
	# daemon that stays in the foreground is recorded by its launch pid.
	# A loaded 2-core CI machine can take a while: wait up to START_WAIT_S
	# seconds (default 90).
	_wait_ticks=$(( ${START_WAIT_S:-90} * 10 ))
	for _i in $(seq 1 "$_wait_ticks"); do
		if [ -s "$_b/run/ctdbd.pid" ]; then
			_pid=$(cat "$_b/run/ctdbd.pid")
			if kill -0 "$_pid" 2>/dev/null; then
				echo "$_pid" >"$_b/daemon.pid"
				echo "node $_pnn started (pid $_pid)"
				return 0
			fi
		fi
		if ! kill -0 "$_launcher" 2>/dev/null; then
			wait "$_launcher"
			_rc=$?
			if [ $_rc -ne 0 ]; then
				echo "node $_pnn: daemon exited with status $_rc" >&2
				tail -n 20 "$_b/log.ctdb" "$_b/ctdbd.out" 2>/dev/null >&2
				return 1
			fi
		fi
		# A daemonising ctdbd's launcher exits within a moment; one still
		# running with its socket up after 2 s is a foreground daemon.
		if [ "$_i" -ge 20 ] && kill -0 "$_launcher" 2>/dev/null &&
			[ -S "$_b/run/ctdbd.socket" ]; then
			break
		fi
		sleep 0.1
	done

	if kill -0 "$_launcher" 2>/dev/null && [ -S "$_b/run/ctdbd.socket" ]; then
		echo "$_launcher" >"$_b/daemon.pid"
		echo "node $_pnn started in foreground (pid $_launcher)"
		return 0
	fi
	echo "node $_pnn: no pid file or socket after ${START_WAIT_S:-90} s" >&2
	tail -n 20 "$_b/log.ctdb" "$_b/ctdbd.out" 2>/dev/null >&2
	return 1
}

stop_node() {
	_pnn="$1"
	_b=$(node_dir "$_pnn")

	if ! _pid=$(node_pid "$_pnn"); then
		rm -f "$_b/daemon.pid"
		echo "node $_pnn not running"
		return 0
	fi

	run_on_node "$_pnn" timeout 10 "$CTDB" shutdown >/dev/null 2>&1

	for _ in $(seq 1 100); do
		kill -0 "$_pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$_pid" 2>/dev/null; then
		echo "node $_pnn: still alive after shutdown, sending SIGTERM to $_pid"
		kill -TERM "$_pid" 2>/dev/null
		for _ in $(seq 1 50); do
			kill -0 "$_pid" 2>/dev/null || break
			sleep 0.1
		done
	fi
	if kill -0 "$_pid" 2>/dev/null; then
		echo "node $_pnn: sending SIGKILL to $_pid"
		kill -KILL "$_pid" 2>/dev/null
	fi
	rm -f "$_b/daemon.pid"
	echo "node $_pnn stopped"
}

cmd_start() {
	load_config
	_rc=0
	for n in $(node_list "${1:-all}"); do
		start_node "$n" || _rc=1
	done
	return $_rc
}

cmd_stop() {
	load_config
	for n in $(node_list "${1:-all}"); do
		stop_node "$n"
	done
}

cmd_status() {
	load_config
	for n in $(node_list all); do
		if _pid=$(node_pid "$n"); then
			echo "$n $(node_addr "$n") running $_pid"
		else
			echo "$n $(node_addr "$n") stopped -"
		fi
	done
}

cmd_pids() {
	load_config
	for n in $(node_list all); do
		if _pid=$(node_pid "$n"); then
			echo "$n $_pid"
		fi
	done
}

cmd_env() {
	load_config
	[ $# -eq 1 ] || die "env wants exactly one pnn"
	_n=$(node_list "$1")
	[ "$_n" = "$1" ] || die "env wants a single pnn"
	node_env_exports "$1"
}

cmd_onnode() {
	load_config
	[ $# -ge 2 ] || die "onnode wants a pnn and a command"
	_n="$1"
	shift
	[ "$(node_list "$_n")" = "$_n" ] || die "onnode wants a single pnn"
	run_on_node "$_n" "$@"
}

cmd_wait_ok() {
	load_config
	_limit="${1:-60}"
	_deadline=$(($(date +%s) + _limit))
	while [ "$(date +%s)" -lt "$_deadline" ]; do
		_all_ok=yes
		for n in $(node_list all); do
			if ! run_on_node "$n" timeout 5 "$CTDB" nodestatus all >/dev/null 2>&1; then
				_all_ok=no
				break
			fi
		done
		if [ $_all_ok = yes ]; then
			echo "all $NUM_NODES node(s) OK"
			return 0
		fi
		sleep 0.5
	done
	echo "timed out after ${_limit} s waiting for all nodes OK" >&2
	run_on_node 0 timeout 5 "$CTDB" status >&2
	return 1
}

cmd_teardown() {
	if [ ! -f "$cfg" ]; then
		[ -d "$dir" ] && die "teardown: $dir has no cluster.env; not removing it"
		return 0
	fi
	cmd_stop all
	rm -rf "$dir"
}

case "$cmd" in
setup) cmd_setup "$@" ;;
start) cmd_start "$@" ;;
stop) cmd_stop "$@" ;;
status) cmd_status "$@" ;;
pids) cmd_pids "$@" ;;
env) cmd_env "$@" ;;
onnode) cmd_onnode "$@" ;;
wait-ok) cmd_wait_ok "$@" ;;
teardown) cmd_teardown "$@" ;;
*) usage ;;
esac
