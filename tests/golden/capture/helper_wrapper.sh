#!/bin/sh
# Stand-in for ctdb_recovery_helper / ctdb_takeover_helper (install it as a
# symlink with the helper's name and point CTDB_RECOVERY_HELPER or
# CTDB_TAKEOVER_HELPER at the symlink).
#
# ctdbd runs helpers as:  <helper> <result-fd> <daemon-socket> [args...]
# We exec the real helper with the socket argument swapped for the recording
# proxy that listens next to the daemon socket (run/proxy-helper.socket), so
# every control and message the helper exchanges is recorded.  Without a
# proxy socket the helper talks to the daemon directly.

name=$(basename "$0")
real="${GOLDEN_REAL_HELPER_DIR:-/usr/libexec/ctdb}/$name"

fd="$1"
sock="$2"
shift 2

proxy="$(dirname "$sock")/proxy-helper.socket"
if [ -S "$proxy" ]; then
	sock="$proxy"
fi

exec "$real" "$fd" "$sock" "$@"
