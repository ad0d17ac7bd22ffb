#!/bin/bash
# IP allocation speed: our ctdb-ipalloc against stock CTDB 4.17's allocation test driver.
#
#   bench/ipalloc.sh [REFERENCE]
#
# REFERENCE (or $CTDB_IPALLOC_REFERENCE) is a stock ctdb_takeover_tests binary, e.g. the one
# `bench/ipalloc_diff.sh --build-only` builds from Samba's source. Without one, stock's time
# is given as the commonly quoted figure and marked as not measured.
#
# Scenarios (LCP2, the default algorithm, log level ERR):
#   900x5     900 unhosted addresses, 5 healthy nodes (stock's unit test lcp2.035 size)
#   900x5+1   900 addresses spread over 4 nodes, a 5th node becomes healthy (rebalancing)
#   900x1->5  900 addresses all on node 0, 4 more nodes become healthy (rebalancing, ~720 moves)
#   5000x32   5000 unhosted addresses, 32 healthy nodes (ours only: stock would take hours)
#   5000x32+1 5000 addresses over 31 nodes, a 32nd becomes healthy (ours only)
#
# "wall" is a whole process run, startup and I/O included (median of several runs for ours);
# "compute" is our driver's own measurement of parsing plus allocation (fastest of several
# runs in one process, CTDB_IPALLOC_TIMING). Every stock run's output is checked against ours.

set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
reference=${1:-${CTDB_IPALLOC_REFERENCE:-}}
ours="$repo/target/release/ctdb-ipalloc"
work=$(mktemp -d /tmp/ctdb-ipalloc-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT

(cd "$repo" && cargo build --release --bin ctdb-ipalloc >/dev/null 2>&1)

export CTDB_IP_ALGORITHM=lcp2 CTDB_TEST_LOGLEVEL=ERR
unset CTDB_TEST_RUNSTATE CTDB_SET_NoIPTakeover CTDB_SET_NoIPFailback CTDB_TEST_REBALANCE_NODES

flags() { # flags COUNT [LAST_FLAG]: all healthy, or the last node with the given flags
    local n=$1 last=${2:-0} i out=""
    for ((i = 1; i < n; i++)); do out="${out}0,"; done
    echo "${out}${last}"
}


# Median wall time in ms of RUNS runs of "$@" < INPUT ($EPOCHREALTIME: no fork to read the
# clock).
wall_ms() {
    local runs=$1 input=$2 i start end
    shift 2
    local times=()
    for ((i = 0; i < runs; i++)); do
        start=${EPOCHREALTIME/[.,]/}
        "$@" <"$input" >/dev/null 2>&1
        end=${EPOCHREALTIME/[.,]/}
        times+=($((end - start)))
    done
    printf '%s\n' "${times[@]}" | sort -n | awk '{ t[NR] = $1 } END { printf "%.2f", t[int((NR + 1) / 2)] / 1000 }'
}

compute_ms() { # compute_ms INPUT FLAGS
    CTDB_IPALLOC_TIMING=${REPEAT:-20} "$ours" ipalloc "$2" <"$1" 2>&1 >/dev/null |
        awk '/ipalloc time:/ { printf "%.2f", $3 / 1000 }'
}

# Inputs.
for n in $(seq 1 10); do for m in $(seq 1 90); do echo "192.168.$n.$m -1"; done; done >"$work/900.in"
for ((i = 0; i < 5000; i++)); do
    echo "10.$((i / 2500)).$(((i / 250) % 10 + 1)).$((i % 250 + 1)) -1"
done >"$work/5000.in"
# The "+1" inputs: the allocation with the last node down (flag 0x20, stopped), fed back in.
"$ours" ipalloc "$(flags 5 0x20)" <"$work/900.in" >"$work/900+1.in" 2>/dev/null
"$ours" ipalloc "$(flags 32 0x20)" <"$work/5000.in" >"$work/5000+1.in" 2>/dev/null
sed 's/ -1$/ 0/' "$work/900.in" >"$work/900on0.in"

printf '%-10s %-28s %12s %12s %12s %10s\n' scenario "" "stock wall" "ours wall" "ours compute" speedup
report() { # report NAME INPUT FLAGS RUN_STOCK(yes|no|published)
    local name=$1 input=$2 nodes=$3 run_stock=$4
    local wall compute stock="" speedup="" note
    wall=$(wall_ms 9 "$input" "$ours" ipalloc "$nodes")
    compute=$(compute_ms "$input" "$nodes")
    note="$(wc -l <"$input") IPs, $(echo "$nodes" | tr ',' '\n' | wc -l) nodes"
    if [ "$run_stock" != no ] && [ -n "$reference" ]; then
        local start end
        start=${EPOCHREALTIME/[.,]/}
        "$reference" ipalloc "$nodes" <"$input" >"$work/stock.out" 2>&1
        end=${EPOCHREALTIME/[.,]/}
        stock=$(awk -v us=$((end - start)) 'BEGIN { printf "%.0f", us / 1e3 }')
        "$ours" ipalloc "$nodes" <"$input" >"$work/ours.out" 2>&1
        if ! cmp -s "$work/stock.out" "$work/ours.out"; then
            echo "OUTPUT DIFFERS FROM STOCK for $name" >&2
            exit 1
        fi
        speedup=$(awk -v s="$stock" -v o="$wall" 'BEGIN { printf "%.0fx", s / o }')
        stock="${stock} ms"
    elif [ "$run_stock" = published ]; then
        stock="~15000 ms*"
        speedup=$(awk -v o="$wall" 'BEGIN { printf "~%.0fx*", 15000 / o }')
    else
        stock="(not run)"
    fi
    printf '%-10s %-28s %12s %12s %12s %10s\n' "$name" "($note)" "$stock" "$wall ms" "$compute ms" "$speedup"
}

report 900x5 "$work/900.in" "$(flags 5)" published
report 900x5+1 "$work/900+1.in" "$(flags 5)" yes
report '900x1->5' "$work/900on0.in" "$(flags 5)" yes
REPEAT=3 report 5000x32 "$work/5000.in" "$(flags 32)" no
REPEAT=3 report 5000x32+1 "$work/5000+1.in" "$(flags 32)" no

if [ -z "$reference" ]; then
    echo "* stock not measured: no reference binary given; ~15 s is the commonly quoted time of"
    echo "  stock LCP2 for 900 addresses over 5 nodes. Build one with bench/ipalloc_diff.sh --build-only."
else
    echo "stock: $reference (outputs identical to ours)"
fi
