//! The non-deterministic algorithm, `IPAllocAlgorithm = 1` (mirrors
//! `ipalloc_nondeterministic.c`).
//!
//! Unhosted addresses go to the least loaded node that may take them; then, unless
//! NoIPFailback, `basic_failback` evens out the address counts: walking the list from the start,
//! the first address whose candidate nodes differ in load by more than one makes the most
//! loaded of them give up its first address (list order) to the least loaded node that may take
//! that one, and the walk restarts. At most `addresses + 5` such moves are made.
//!
//! Stock counts each node's addresses for every candidate of every address on every walk; here
//! the counts are kept up to date, and within one walk (which sees no moves until it ends) the
//! busiest/idlest pair is computed once per distinct set of candidate nodes.

use std::collections::HashMap;

use super::common::{Coverage, State};
use super::{ilog, CtdbIp, LOG_WARNING, UNKNOWN_PNN};

const LOCATION_NO_MAXNODE: &str = "../../ctdb/server/ipalloc_nondeterministic.c:96";

pub(super) fn run(state: &mut State<'_>) {
    let num_ips = state.num_ips();
    state.unassign_unsuitable();
    let mut coverage = Coverage::new(state);
    coverage.allocate_unassigned(state);
    if state.no_ip_failback {
        return;
    }
    basic_failback(state, &mut coverage, num_ips);
}

/// The most and least loaded candidate nodes of an address: `(maxnode, maxnum, minnode,
/// minnum)`, first found on ties, or `None` when no node may take it.
type Spread = Option<(usize, i64, usize, i64)>;

fn spread(state: &State<'_>, coverage: &Coverage, ip: usize) -> Spread {
    let mut result: Spread = None;
    for node in 0..state.num_nodes {
        if !state.can_takeover(node, ip) {
            continue;
        }
        let num = coverage.counts[node];
        result = Some(match result {
            None => (node, num, node, num),
            Some((mut maxnode, mut maxnum, mut minnode, mut minnum)) => {
                if num > maxnum {
                    (maxnode, maxnum) = (node, num);
                }
                if num < minnum {
                    (minnode, minnum) = (node, num);
                }
                (maxnode, maxnum, minnode, minnum)
            }
        });
    }
    result
}

fn basic_failback(state: &mut State<'_>, coverage: &mut Coverage, num_ips: usize) {
    // Addresses with the same available_on bitmap have the same candidate nodes.
    let mut class_of_words: HashMap<Vec<u64>, usize> = HashMap::new();
    let class: Vec<usize> = (0..num_ips)
        .map(|ip| {
            let next = class_of_words.len();
            *class_of_words
                .entry(state.available_words(ip).to_vec())
                .or_insert(next)
        })
        .collect();
    let mut memo: Vec<Option<Spread>> = vec![None; class_of_words.len()];

    let retry_limit = i64::try_from(num_ips).unwrap_or(i64::MAX).saturating_add(5);
    let mut retries: i64 = 0;
    'walk: loop {
        memo.iter_mut().for_each(|m| *m = None);
        for ip in 0..num_ips {
            if state.pnn[ip] == UNKNOWN_PNN {
                continue;
            }
            let found = *memo[class[ip]].get_or_insert_with(|| spread(state, coverage, ip));
            let Some((maxnode, maxnum, _, minnum)) = found else {
                ilog!(
                    state.log,
                    LOG_WARNING,
                    "{LOCATION_NO_MAXNODE} Could not find maxnode. May not be able to serve ip '{}'",
                    CtdbIp(&state.addrs[ip])
                );
                continue;
            };
            if maxnum > minnum + 1 && retries < retry_limit {
                // maxnode holds at least two addresses, so this always finds one.
                if let Some(victim) = state.pnn.iter().position(|&p| p as usize == maxnode) {
                    coverage.find_takeover_node(state, victim);
                    retries += 1;
                    continue 'walk;
                }
            }
        }
        break;
    }
}
