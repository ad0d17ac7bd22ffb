#!/bin/sh
# Re-captures the golden ctdb-eventd packets in this directory from the stock binaries.
#
# Usage: tests/golden/eventd/capture_eventd.sh [output-dir]   (default: this directory)
#
# Starts the stock /usr/libexec/ctdb/ctdb-eventd in test mode on a scratch CTDB_BASE, moves
# its socket aside and puts eventd_proxy.py in its place, then drives it with the stock
# ctdb-event tool (and eventd_script_request.py for SCRIPT, which no stock tool sends). Each
# exchange is saved as <name>.request.bin / <name>.reply.bin. Every process started here is
# killed by pid on exit.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here}
helpers=${CTDB_HELPER_BINDIR:-/usr/libexec/ctdb}
work=$(mktemp -d /tmp/eventd-capture.XXXXXX)
base=$work/base
rec=$work/rec
eventd_pid=""
proxy_pid=""

cleanup() {
	[ -n "$proxy_pid" ] && kill "$proxy_pid" 2>/dev/null || true
	[ -n "$eventd_pid" ] && kill "$eventd_pid" 2>/dev/null || true
	[ -n "$proxy_pid" ] && wait "$proxy_pid" 2>/dev/null || true
	[ -n "$eventd_pid" ] && wait "$eventd_pid" 2>/dev/null || true
	if [ -n "${KEEP_WORK:-}" ]; then
		echo "work dir kept: $work"
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT INT TERM

mkdir -p "$base/run" "$base/var" "$base/events/legacy" "$rec"
cat >"$base/ctdb.conf" <<CONF
[logging]
	location = file:$base/log.ctdb
	log level = INFO
CONF

# 01 always succeeds and echoes its arguments; 02 fails "monitor" and hangs in
# "startrecovery"; 03 is present but disabled (no execute bit).
cat >"$base/events/legacy/01.good.script" <<'SCRIPT'
#!/bin/sh
echo "good: $*"
exit 0
SCRIPT
cat >"$base/events/legacy/02.fail.script" <<'SCRIPT'
#!/bin/sh
case "$1" in
monitor)
	echo "fail: monitor is unhappy" >&2
	exit 1
	;;
startrecovery)
	exec sleep 30
	;;
esac
exit 0
SCRIPT
cat >"$base/events/legacy/03.off.script" <<'SCRIPT'
#!/bin/sh
echo "never runs"
SCRIPT
chmod 755 "$base/events/legacy/01.good.script" "$base/events/legacy/02.fail.script"
chmod 644 "$base/events/legacy/03.off.script"

export CTDB_TEST_MODE=yes
export CTDB_BASE="$base"
unset CTDB_INTERACTIVE CTDB_EVENT_RUN_ALL || true

wait_for_socket() {
	i=0
	while [ ! -S "$1" ]; do
		i=$((i + 1))
		[ $i -gt 100 ] && { echo "no socket $1" >&2; exit 1; }
		sleep 0.1
	done
}

# -P: eventd exits by itself if this shell dies without cleaning up.
"$helpers/ctdb-eventd" -P $$ &
eventd_pid=$!
wait_for_socket "$base/run/eventd.socket"
mv "$base/run/eventd.socket" "$base/run/eventd.real"
python3 "$here/eventd_proxy.py" "$base/run/eventd.socket" "$base/run/eventd.real" "$rec" \
	>"$work/proxy.log" &
proxy_pid=$!
wait_for_socket "$base/run/eventd.socket"

# step <name> <command...>: runs one client command and files the two packets it produced.
step() {
	name=$1
	shift
	before=$(ls "$rec" | wc -l)
	set +e
	"$@" >"$work/$name.out" 2>&1
	status=$?
	set -e
	i=0
	while [ "$(ls "$rec" | wc -l)" -lt $((before + 2)) ]; do
		i=$((i + 1))
		[ $i -gt 50 ] && { echo "$name: packets missing" >&2; exit 1; }
		sleep 0.1
	done
	req=$(ls "$rec" | sort | sed -n "$((before + 1))p")
	rep=$(ls "$rec" | sort | sed -n "$((before + 2))p")
	case "$req:$rep" in
	*-c2s.bin:*-s2c.bin) ;;
	*) echo "$name: unexpected packet order $req $rep" >&2; exit 1 ;;
	esac
	cp "$rec/$req" "$out/$name.request.bin"
	cp "$rec/$rep" "$out/$name.reply.bin"
	printf '%-24s exit %-3s %s\n' "$name" "$status" "$(tr '\n' '|' <"$work/$name.out")"
}

event="$helpers/ctdb-event"
step run_monitor "$event" run 30 legacy monitor
step status_monitor "$event" status legacy monitor
step run_takeip_all env CTDB_EVENT_RUN_ALL=1 "$event" run 30 legacy takeip eth0 10.0.0.1 24
step status_takeip "$event" status legacy takeip
step status_never_run "$event" status legacy startup
step run_no_component "$event" run 30 nosuch monitor
step run_timeout "$event" run 1 legacy startrecovery
step status_timeout "$event" status legacy startrecovery
sock="$base/run/eventd.socket"
step script_disable python3 "$here/eventd_script_request.py" "$sock" 101 legacy 01.good disable
step script_enable python3 "$here/eventd_script_request.py" "$sock" 102 legacy 01.good.script enable
step script_enable_missing python3 "$here/eventd_script_request.py" "$sock" 103 legacy 99.missing enable

echo "captured into $out"
