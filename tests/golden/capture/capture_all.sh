#!/bin/bash
# capture_all.sh — capture golden CTDB packets from the stock daemon.
#
# usage: tests/golden/capture/capture_all.sh [--keep] [--no-extract] [WORKDIR]
#
# Runs two short local clusters of stock ctdbd on their own 127.0.X.0/24
# ranges (see scripts/local_cluster.sh):
#   run "main":     3 nodes, cluster lock, public addresses (failover on in
#                   test mode: IPs are assigned without touching the kernel).
#                   The stock CLI, a raw python probe and the recovery/takeover
#                   helpers talk to the daemons through a recording proxy
#                   (ctdb_proxy.py); node-to-node TCP is captured with tcpdump.
#   run "election": 3 nodes, no cluster lock, so leader elections send
#                   ELECTION messages; only TCP plus a few CLI commands.
# Raw logs land in WORKDIR/raw (default /tmp/ctdbgold.<pid>, removed at the
# end unless --keep); extract_vectors.py then rewrites tests/golden/{unix,tcp,
# helper}/ and tests/golden/MANIFEST.md + expect.txt.
#
# Every process started here is stopped by pid on exit.

set -u

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
lc="$repo/scripts/local_cluster.sh"

keep=no
extract=yes
while [ $# -gt 0 ]; do
	case "$1" in
	--keep) keep=yes; shift ;;
	--no-extract) extract=no; shift ;;
	-*) echo "unknown option $1" >&2; exit 1 ;;
	*) break ;;
	esac
done
work="${1:-/tmp/ctdbgold.$$}"
raw="$work/raw"
mkdir -p "$raw" || exit 1

started_pids=""
clusters=""

cleanup() {
	for c in $clusters; do
		"$lc" "$c" stop all >/dev/null 2>&1
	done
	for p in $started_pids; do
		if kill -0 "$p" 2>/dev/null; then
			kill -INT "$p" 2>/dev/null
			sleep 0.5
			kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null
		fi
	done
	if [ "$keep" = no ]; then
		rm -rf "$work"
	else
		echo "kept $work"
	fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM

log() {
	echo "[$(date +%T)] $*"
}

# A /24 on 127.0.X that nothing listens on yet.
pick_prefix() {
	_x=$(( ($$ + $1) % 150 + 60 ))
	for _ in $(seq 1 150); do
		if ! ss -Htan 2>/dev/null | grep -q " 127\.0\.$_x\."; then
			echo "127.0.$_x"
			return 0
		fi
		_x=$(( (_x - 60 + 1) % 150 + 60 ))
	done
	return 1
}

start_tcpdump() {
	# $1 prefix, $2 pcap file; sets tcpdump_pid
	_err="$2.stderr"
	tcpdump -i lo -U -s 0 -w "$2" "tcp port 4379 and net $1.0/24" >/dev/null 2>"$_err" &
	tcpdump_pid=$!
	started_pids="$started_pids $tcpdump_pid"
	for _ in $(seq 1 50); do
		grep -q "listening on" "$_err" 2>/dev/null && break
		sleep 0.1
	done
	sleep 0.3
}

stop_pid() {
	kill -INT "$1" 2>/dev/null
	for _ in $(seq 1 30); do
		kill -0 "$1" 2>/dev/null || return 0
		sleep 0.1
	done
	kill -KILL "$1" 2>/dev/null
}

start_proxy() {
	# $1 cluster dir, $2 node count, $3 log file, $4 label prefix; sets proxy_pid
	_args=""
	for n in $(seq 0 $(($2 - 1))); do
		_r="$1/node.$n/run"
		_args="$_args $_r/proxy-cli.socket=$_r/ctdbd.socket=$4cli.n$n"
		_args="$_args $_r/proxy-helper.socket=$_r/ctdbd.socket=$4helper.n$n"
	done
	rm -f "$3.pid"
	# shellcheck disable=SC2086
	python3 "$here/ctdb_proxy.py" serve --log "$3" --pidfile "$3.pid" $_args \
		>"$3.stderr" 2>&1 &
	proxy_pid=$!
	started_pids="$started_pids $proxy_pid"
	for _ in $(seq 1 50); do
		[ -s "$3.pid" ] && break
		sleep 0.1
	done
}

# ---------------------------------------------------------------- main run
A=$(pick_prefix 0) || { echo "no free 127.0.X range" >&2; exit 1; }
C1="$work/main"
clusters="$clusters $C1"
"$lc" "$C1" setup -n 3 -a "$A" --public-addresses || exit 1

mkdir -p "$work/wrap"
ln -sf "$here/helper_wrapper.sh" "$work/wrap/ctdb_recovery_helper"
ln -sf "$here/helper_wrapper.sh" "$work/wrap/ctdb_takeover_helper"

unixlog="$raw/unix.jsonl"
start_proxy "$C1" 3 "$unixlog" ""
start_tcpdump "$A" "$raw/main.pcap"
log "main run on $A.0/24 (proxy $proxy_pid, tcpdump $tcpdump_pid)"

CTDB_RECOVERY_HELPER="$work/wrap/ctdb_recovery_helper" \
	CTDB_TAKEOVER_HELPER="$work/wrap/ctdb_takeover_helper" \
	"$lc" "$C1" start all || exit 1
"$lc" "$C1" wait-ok 90 || exit 1

mark() {
	python3 "$here/ctdb_proxy.py" mark --log "$unixlog" "$1"
}

# cli <pnn> <ctdb args...> — run the stock CLI against node pnn through the proxy
cli() {
	_n="$1"
	shift
	mark "cli n$_n: ctdb $*"
	echo "### n$_n: ctdb $*" >>"$raw/cli.log"
	CTDB_TEST_MODE=yes CTDB_BASE="$C1/node.$_n" \
		CTDB_SOCKET="$C1/node.$_n/run/proxy-cli.socket" \
		timeout 60 ctdb "$@" >>"$raw/cli.log" 2>&1
	echo "### rc=$?" >>"$raw/cli.log"
	sleep 0.2
}

log "CLI commands"
cli 0 status
cli 0 -X nodestatus all
cli 0 -n all ping
cli 0 getpid
cli 0 pnn
cli 0 listnodes
cli 0 uptime
cli 0 listvars
cli 0 getvar RecoverTimeout
cli 0 getvar bogus
cli 0 setvar RecoverTimeout 31
cli 0 setvar RecoverTimeout 30
cli 0 setvar bogus 1
cli 0 getdebug
cli 0 setdebug NOTICE
cli 0 setdebug INFO
cli 0 statistics
cli 0 statisticsreset
cli 0 stats 2
cli 0 runstate
cli 0 getcapabilities
cli 0 getreclock
cli 0 ip
cli 0 ip all
cli 0 ipinfo "$(echo "$A" | sed 's/^127/10/').101"
cli 0 ifaces
cli 0 getdbmap
cli 0 attach test.tdb
cli 0 attach p.tdb persistent
cli 0 getdbmap
cli 0 pstore p.tdb pkey1 pvalue1
cli 1 pstore p.tdb pkey2 pvalue2
cli 0 pfetch p.tdb pkey1
cli 0 getdbseqnum p.tdb
cli 0 getdbstatus test.tdb
cli 0 dbstatistics test.tdb
cli 0 writekey test.tdb key0 value0
cli 1 writekey test.tdb key1 value1
cli 2 writekey test.tdb key2 value2
cli 1 readkey test.tdb key0
cli 0 catdb test.tdb
cli 0 catdb p.tdb
cli 0 process-exists "$proxy_pid"
cli 0 process-exists 1
cli 0 leader
cli 0 -n 2 getpid
cli 0 gettickles "$(echo "$A" | sed 's/^127/10/').101"
cli 0 version

log "recovery with data"
cli 0 recover
sleep 2
"$lc" "$C1" wait-ok 60 || exit 1

log "ban/unban, disable/enable, stop/continue"
cli 0 -n 2 ban 30
sleep 1
cli 0 -n 2 unban
"$lc" "$C1" wait-ok 60
cli 0 -n 1 disable
cli 0 -n 1 enable
"$lc" "$C1" wait-ok 60
cli 0 -n 2 stop
cli 0 -n 2 continue
"$lc" "$C1" wait-ok 60
cli 0 ipreallocate

log "backup/restore, detach, read-only, sticky"
cli 0 backupdb test.tdb "$work/test.backup"
cli 0 restoredb "$work/test.backup" test.tdb
cli 0 attach d.tdb
for n in 0 1 2; do cli $n setvar AllowClientDBAttach 0; done
cli 0 detach d.tdb
for n in 0 1 2; do cli $n setvar AllowClientDBAttach 1; done
cli 0 setdbreadonly test.tdb
cli 0 setdbsticky test.tdb
cli 0 dumpmemory

log "raw probe"
mark "probe n0"
python3 "$here/probe.py" "$C1/node.0/run/proxy-cli.socket" >>"$raw/probe.log" 2>&1
cat "$raw/probe.log"

"$lc" "$C1" wait-ok 60
sleep 6 # one more keepalive interval on the wire
cli 2 shutdown
sleep 1
"$lc" "$C1" stop all
stop_pid "$tcpdump_pid"
stop_pid "$proxy_pid"

# ------------------------------------------------------------ election run
B=$(pick_prefix 7) || { echo "no free 127.0.X range" >&2; exit 1; }
C2="$work/elect"
clusters="$clusters $C2"
"$lc" "$C2" setup -n 3 -a "$B" --no-cluster-lock || exit 1
unixlog="$raw/unix-elect.jsonl"
start_proxy "$C2" 3 "$unixlog" "elect."
start_tcpdump "$B" "$raw/elect.pcap"
log "election run on $B.0/24 (proxy $proxy_pid, tcpdump $tcpdump_pid)"
"$lc" "$C2" start all || exit 1
"$lc" "$C2" wait-ok 90
C1="$C2"
cli 0 getreclock
cli 0 status
sleep 3
"$lc" "$C2" stop all
stop_pid "$tcpdump_pid"
stop_pid "$proxy_pid"

log "reassembling TCP"
python3 "$here/tcp_frames.py" "$raw/main.pcap" >"$raw/tcp-main.jsonl"
python3 "$here/tcp_frames.py" "$raw/elect.pcap" >"$raw/tcp-elect.jsonl"
{
	echo "date=$(date -u +%Y-%m-%d)"
	echo "package=$(dpkg-query -W -f '${Package} ${Version}' ctdb 2>/dev/null)"
	echo "ctdb_version=$(ctdb version 2>/dev/null)"
	echo "main_prefix=$A"
	echo "elect_prefix=$B"
} >"$raw/info.txt"
wc -l "$raw"/*.jsonl

if [ "$extract" = yes ]; then
	python3 "$here/extract_vectors.py" "$raw" "$repo/tests/golden" || exit 1
fi
exit 0
