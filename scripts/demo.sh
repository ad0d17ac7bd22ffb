#!/usr/bin/env bash
# `make demo`: until the daemon exists this shows what the build produced and what the
# foundation checks against. From the daemon-core issue on it starts a 3-node local cluster.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "ctdb-rs foundation build: $(cargo pkgid 2>/dev/null)"
echo
echo "Built binaries (target/release):"
found=0
for f in target/release/*; do
	if [ -f "$f" ] && [ -x "$f" ] && [[ "$(basename "$f")" != *.* ]]; then
		echo "  $(basename "$f")"; found=1
	fi
done
[ "$found" = 1 ] || echo "  (none yet: the daemon arrives with the daemon-core issue)"
echo
echo "Stock reference on this machine: $(ctdb version 2>/dev/null || echo 'ctdb not installed')"
echo "What 'make test' checks today:"
echo "  - every CTDB 4.17 packet and control payload round-trips (seeded; CTDB_TEST_SEED=N replays)"
echo "  - golden byte vectors captured from stock ctdbd 4.17 decode and re-encode identically"
echo "  - ctdb.conf, nodes, public_addresses and ctdb.tunables parse like stock"
