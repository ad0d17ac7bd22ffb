#!/bin/bash
# message_ring.sh — B3: one client per node, two tokens forwarded round the ring.
set -u
. "$(dirname "$0")/lib.sh"

seconds=$(bench_pick 3 10)
exec "$BENCH_TOOL" message-ring --cluster "$BENCH_CLUSTER" --nodes "$BENCH_NODES" \
	--seconds "$seconds"
