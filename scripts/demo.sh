#!/usr/bin/env bash
# `make demo`: starts a 3-node ctdb-rs cluster on 127.0.55.1-3 (test mode, one CTDB_BASE per
# node under /tmp/ctdb-rs-demo), waits until every node is OK and shows it with the stock
# `ctdb` CLI. The cluster keeps running; the last lines say how to use and stop it.
set -euo pipefail
cd "$(dirname "$0")/.."

dir=${CTDB_RS_DEMO_DIR:-/tmp/ctdb-rs-demo}
prefix=${CTDB_RS_DEMO_PREFIX:-127.0.55}
bin=$PWD/target/release
lc="scripts/local_cluster.sh $dir"

if [ -f "$dir/cluster.env" ]; then
	$lc teardown >/dev/null 2>&1 || true
fi
export CTDB_EVENTD=$bin/ctdb-eventd
export CTDB_CLUSTER_MUTEX_HELPER=$bin/ctdb_mutex_fcntl_helper
export CTDB_RECOVERY_HELPER=$bin/ctdb_recovery_helper
export CTDB_TAKEOVER_HELPER=$bin/ctdb_takeover_helper
$lc setup -n 3 -a "$prefix" --ctdbd "$bin/ctdbd"
$lc start
echo "waiting for all nodes to become OK ..."
$lc wait-ok 60
echo
$lc onnode 0 ctdb status
echo
$lc onnode 0 ctdb uptime
cat <<MSG

The cluster is running. Try for example:
  $lc onnode 1 ctdb nodestatus all
  $lc onnode 2 ctdb listvars
  $lc status
Stop it with:
  $lc teardown
MSG
