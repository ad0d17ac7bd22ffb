//! LCP2, `IPAllocAlgorithm = 2` and the default (mirrors `ipalloc_lcp2.c`).
//!
//! The cost of a node is its imbalance: the sum over pairs of its addresses of the squared
//! common-prefix length ([`ip_distance`]), so a node prefers addresses far from the ones it has.
//! Unhosted addresses are placed one at a time, cheapest (address, node) pair first; then,
//! unless NoIPFailback, addresses move from the most imbalanced nodes onto "rebalance
//! candidates" (nodes that held nothing when the run started, or that were named by
//! `REBALANCE_NODE`) while that lowers the total.
//!
//! Stock recomputes `ip_distance_2_sum(ip, node)` — the sum of squared distances from `ip` to
//! the node's other addresses — by walking the whole list each time it needs one, and looks at
//! every (unhosted address, node) pair for every placement, so placing 900 addresses costs
//! seconds. Here:
//! * all those sums live in a table (one column per node) that each placement or move updates
//!   in one pass; when all keys share their first three words (all IPv4, or one IPv6 /96) the
//!   pass is a handful of constant additions over runs of the list, found in the keys' binary
//!   trie (see `cheapest.rs`);
//! * each node keeps its cheapest unhosted address up to date (`cheapest.rs`), so a placement
//!   looks at one candidate per node.
//!
//! The arithmetic is stock's: `u32` wrapping everywhere (the imbalance of a node with about a
//! thousand addresses does wrap), and a wrapping sum does not depend on the order its terms
//! were added in, so the table holds exactly the values stock computes. Ties go where stock's
//! loops send them: first address in list order, then lowest node.

use super::addr::{ip_distance, CtdbIp};
use super::cheapest::{Kept, Trie, TrieMins, INF};
use super::common::State;
use super::{ilog, LOG_DEBUG, LOG_ERR, LOG_INFO, LOG_NOTICE, LOG_WARNING, UNKNOWN_PNN};

const LOCATION_UNKNOWN_NODE: &str = "../../ctdb/server/ipalloc_lcp2.c:183";
const DASHES: &str = " ----------------------------------------";
const PLUSES: &str = "+++++++++++++++++++++++++++++++++++++++++";

/// Each node's cheapest unhosted addresses during placement (see `cheapest.rs`).
enum Candidates {
    Trie {
        mins: Vec<TrieMins>,
        /// Scratch for the placed address's path to the root.
        path: Vec<u32>,
    },
    Kept {
        columns: Vec<Kept>,
        /// `eligible[node * ips + ip]`: `ip` is unhosted and `node` may take it.
        eligible: Vec<bool>,
        /// The unhosted addresses in list order.
        unassigned: Vec<u32>,
    },
}

impl Candidates {
    fn first(&self, node: usize) -> Option<(u32, usize)> {
        match self {
            Candidates::Trie { mins, .. } => mins[node].first(),
            Candidates::Kept { columns, .. } => columns[node].first(),
        }
    }
}

struct Lcp2<'s, 'l> {
    st: &'s mut State<'l>,
    nodes: usize,
    ips: usize,
    /// `dsum[node * ips + ip]` = `ip_distance_2_sum(ip, node)`: Σ over the other addresses on
    /// `node` of distance², wrapping.
    dsum: Vec<u32>,
    imbalance: Vec<u32>,
    rebalance_candidate: Vec<bool>,
    /// When all keys share their first three words (all IPv4, or one IPv6 /96), a distance is
    /// 96 plus the common prefix of the last words, and the trie of those words groups the
    /// addresses by distance from any one of them.
    trie: Option<Trie>,
    shortcuts: Shortcuts,
    /// Per address: every node may take it, so no bitmap lookup is needed.
    any_node: Vec<bool>,
}

/// A failback move: `ip` goes to `dst`, leaving `srcimbl` behind and making `dstimbl`.
#[derive(Debug, Clone, Copy)]
struct Move {
    ip: usize,
    srcimbl: u32,
    dst: usize,
    dstimbl: u32,
}

impl Move {
    /// What stock minimises (`srcimbl + dstimbl`, wrapping).
    fn total(&self) -> u32 {
        self.srcimbl.wrapping_add(self.dstimbl)
    }
}

/// The shortcuts LCP2 may take when the keys allow; all of them except in tests, which compare
/// the paths with each other.
#[derive(Debug, Clone, Copy)]
struct Shortcuts {
    /// Sum updates by trie runs instead of one distance per address.
    trie_runs: bool,
    /// Placement candidates in [`TrieMins`] instead of [`Kept`] lists.
    trie_mins: bool,
}

pub(super) fn run(state: &mut State<'_>) {
    run_with(
        state,
        Shortcuts {
            trie_runs: true,
            trie_mins: true,
        },
    );
}

fn run_with(state: &mut State<'_>, shortcuts: Shortcuts) {
    state.unassign_unsuitable();
    let mut lcp2 = Lcp2::init(state, shortcuts);
    lcp2.allocate_unassigned();
    if lcp2.st.no_ip_failback || !lcp2.rebalance_candidate.iter().any(|&c| c) {
        return;
    }
    lcp2.failback();
}

impl<'s, 'l> Lcp2<'s, 'l> {
    /// `lcp2_init`: the sums and imbalances of the current placement, and the candidates.
    fn init(st: &'s mut State<'l>, shortcuts: Shortcuts) -> Self {
        let nodes = st.num_nodes;
        let ips = st.num_ips();
        let uniform_high =
            shortcuts.trie_runs && st.keys.windows(2).all(|w| w[0][..3] == w[1][..3]);
        let trie =
            uniform_high.then(|| Trie::new(&st.keys.iter().map(|k| k[3]).collect::<Vec<_>>()));
        let any_node = (0..ips)
            .map(|ip| (0..nodes).all(|node| st.can_takeover(node, ip)))
            .collect();
        let mut lcp2 = Lcp2 {
            any_node,
            st,
            nodes,
            ips,
            dsum: vec![0u32; nodes * ips],
            imbalance: vec![0u32; nodes],
            rebalance_candidate: vec![true; nodes],
            trie,
            shortcuts,
        };
        // Adding the hosted addresses one by one: each one's current sum on its node is its
        // share of that node's pairs.
        for ip in 0..ips {
            let holder = lcp2.st.pnn[ip];
            if holder == UNKNOWN_PNN {
                continue;
            }
            let node = holder as usize;
            lcp2.imbalance[node] = lcp2.imbalance[node].wrapping_add(lcp2.sum(ip, node));
            lcp2.add_to_node(ip, node);
            lcp2.rebalance_candidate[node] = false;
        }
        for i in 0..lcp2.st.force_rebalance_nodes.len() {
            let pnn = lcp2.st.force_rebalance_nodes[i];
            if pnn as usize >= nodes {
                ilog!(
                    lcp2.st.log,
                    LOG_ERR,
                    "{LOCATION_UNKNOWN_NODE}unknown node {pnn}"
                );
                continue;
            }
            ilog!(
                lcp2.st.log,
                LOG_NOTICE,
                "Forcing rebalancing of IPs to node {pnn}"
            );
            lcp2.rebalance_candidate[pnn as usize] = true;
        }
        lcp2
    }

    #[inline]
    fn sum(&self, ip: usize, node: usize) -> u32 {
        self.dsum[node * self.ips + ip]
    }

    /// Accounts for `moved` now being on `node`: every other address's sum there grows.
    fn add_to_node(&mut self, moved: usize, node: usize) {
        let ips = self.ips;
        let mut column = std::mem::take(&mut self.dsum);
        let column_of_node = &mut column[node * ips..(node + 1) * ips];
        if let Some(trie) = &self.trie {
            trie.for_each_run(moved, |run, common| {
                let dd = (96 + common) * (96 + common);
                for sum in &mut column_of_node[run] {
                    *sum = sum.wrapping_add(dd);
                }
            });
        } else {
            let key = self.st.keys[moved];
            let own = column_of_node[moved];
            for (sum, other) in column_of_node.iter_mut().zip(&self.st.keys) {
                let d = ip_distance(&key, other);
                *sum = sum.wrapping_add(d * d);
            }
            // The loop also added `moved` to itself; its own sum never includes itself.
            column_of_node[moved] = own;
        }
        self.dsum = column;
    }

    /// Accounts for `moved` having left `src` for `dst`.
    fn move_between(&mut self, moved: usize, src: usize, dst: usize) {
        let ips = self.ips;
        let (src_start, dst_start) = (src * ips, dst * ips);
        let mut dsum = std::mem::take(&mut self.dsum);
        if let Some(trie) = &self.trie {
            trie.for_each_run(moved, |run, common| {
                let dd = (96 + common) * (96 + common);
                for ip in run {
                    dsum[src_start + ip] = dsum[src_start + ip].wrapping_sub(dd);
                    dsum[dst_start + ip] = dsum[dst_start + ip].wrapping_add(dd);
                }
            });
        } else {
            for ip in (0..ips).filter(|&ip| ip != moved) {
                let d = ip_distance(&self.st.keys[moved], &self.st.keys[ip]);
                dsum[src_start + ip] = dsum[src_start + ip].wrapping_sub(d * d);
                dsum[dst_start + ip] = dsum[dst_start + ip].wrapping_add(d * d);
            }
        }
        self.dsum = dsum;
    }

    /// `lcp2_allocate_unassigned`: repeatedly place the cheapest (address, node) pair over all
    /// unhosted addresses and the nodes that may take them.
    fn allocate_unassigned(&mut self) {
        let unassigned: Vec<u32> = (0..self.ips)
            .filter(|&ip| self.st.pnn[ip] == UNKNOWN_PNN)
            .map(|ip| ip as u32)
            .collect();
        let mut remaining = unassigned.len();
        let mut candidates = self.candidates(unassigned);
        let debug = self.st.log.enabled(LOG_DEBUG);

        // Stock's loop body runs at least once, logging even when nothing is unhosted.
        loop {
            if debug {
                self.log_unassigned_candidates();
            }
            ilog!(self.st.log, LOG_DEBUG, "{DASHES}");
            // Stock scans addresses in list order, nodes in order, keeping strictly smaller
            // sums: the smallest (sum, address, node).
            let mut next: Option<(u32, usize, usize)> = None;
            for node in 0..self.nodes {
                if let Some((sum, ip)) = candidates.first(node) {
                    if next.is_none_or(|(s, i, _)| sum < s || (sum == s && ip < i)) {
                        next = Some((sum, ip, node));
                    }
                }
            }
            let Some((mindsum, ip, node)) = next else {
                break;
            };
            self.st.pnn[ip] = node as u32;
            remaining -= 1;
            self.imbalance[node] = self.imbalance[node].wrapping_add(mindsum);
            ilog!(
                self.st.log,
                LOG_INFO,
                " {} -> {} [+{}]",
                CtdbIp(&self.st.addrs[ip]),
                node,
                mindsum.cast_signed()
            );
            self.add_to_node(ip, node);
            self.update_candidates(&mut candidates, ip, node);
            if remaining == 0 {
                break;
            }
        }

        for ip in 0..self.ips {
            if self.st.pnn[ip] == UNKNOWN_PNN {
                ilog!(
                    self.st.log,
                    LOG_WARNING,
                    "Failed to find node to cover ip {}",
                    CtdbIp(&self.st.addrs[ip])
                );
            }
        }
    }

    /// The trackers for the unhosted addresses: trie minimums when the keys have a trie and no
    /// sum can reach [`INF`], else kept lists.
    fn candidates(&self, unassigned: Vec<u32>) -> Candidates {
        let ips = self.ips;
        let mut eligible = vec![false; self.nodes * ips];
        for &ip in &unassigned {
            let ip = ip as usize;
            for node in 0..self.nodes {
                eligible[node * ips + ip] = self.st.can_takeover(node, ip);
            }
        }
        // A sum is at most (addresses - 1) * 128².
        if let Some(trie) = self
            .trie
            .as_ref()
            .filter(|_| self.shortcuts.trie_mins && (ips as u64) * 128 * 128 < u64::from(INF))
        {
            let mins = (0..self.nodes)
                .map(|node| {
                    let flags = &eligible[node * ips..(node + 1) * ips];
                    TrieMins::new(
                        trie,
                        flags
                            .iter()
                            .enumerate()
                            .map(|(ip, &ok)| if ok { self.sum(ip, node) } else { INF }),
                    )
                })
                .collect();
            return Candidates::Trie {
                mins,
                path: Vec::new(),
            };
        }
        let mut columns = vec![Kept::new(self.nodes); self.nodes];
        for (node, kept) in columns.iter_mut().enumerate() {
            self.refill(node, &unassigned, &eligible, kept);
        }
        Candidates::Kept {
            columns,
            eligible,
            unassigned,
        }
    }

    /// Refills `kept` for `node` from the unhosted addresses it may take.
    fn refill(&self, node: usize, unassigned: &[u32], eligible: &[bool], kept: &mut Kept) {
        let ips = self.ips;
        let column = &self.dsum[node * ips..(node + 1) * ips];
        let eligible = &eligible[node * ips..(node + 1) * ips];
        kept.rebuild(
            unassigned
                .iter()
                .map(|&ip| ip as usize)
                .filter(|&ip| eligible[ip])
                .map(|ip| (column[ip], ip)),
        );
    }

    /// After `placed` went to `node` (and its sums were added): every node loses `placed` as a
    /// candidate, and `node`'s candidates changed price.
    fn update_candidates(&self, candidates: &mut Candidates, placed: usize, node: usize) {
        match candidates {
            Candidates::Trie { mins, path } => {
                let Some(trie) = &self.trie else {
                    return;
                };
                trie.path(placed, path);
                let square = |common: u32| (96 + common) * (96 + common);
                for (other, tree) in mins.iter_mut().enumerate() {
                    let square: Option<&dyn Fn(u32) -> u32> = (other == node).then_some(&square);
                    tree.place(trie, path, placed, square);
                }
            }
            Candidates::Kept {
                columns,
                eligible,
                unassigned,
            } => {
                if let Ok(at) = unassigned.binary_search(&(placed as u32)) {
                    unassigned.remove(at);
                }
                let ips = self.ips;
                for other in 0..self.nodes {
                    eligible[other * ips + placed] = false;
                }
                for (other, kept) in columns.iter_mut().enumerate() {
                    if other == node || kept.remove(placed) {
                        self.refill(other, unassigned, eligible, kept);
                    }
                }
            }
        }
    }

    fn log_unassigned_candidates(&mut self) {
        ilog!(self.st.log, LOG_DEBUG, "{DASHES}");
        ilog!(self.st.log, LOG_DEBUG, " CONSIDERING MOVES (UNASSIGNED)");
        for ip in 0..self.ips {
            if self.st.pnn[ip] != UNKNOWN_PNN {
                continue;
            }
            for node in 0..self.nodes {
                if self.st.can_takeover(node, ip) {
                    let sum = self.sum(ip, node);
                    ilog!(
                        self.st.log,
                        LOG_DEBUG,
                        " {} -> {} [+{}]",
                        CtdbIp(&self.st.addrs[ip]),
                        node,
                        sum.cast_signed()
                    );
                }
            }
        }
    }

    /// `lcp2_failback`: from the most imbalanced node down, the first node that can give an
    /// address away does so; repeat until none can.
    fn failback(&mut self) {
        let debug = self.st.log.enabled(LOG_DEBUG);
        let mut order: Vec<usize> = Vec::with_capacity(self.nodes);
        let candidates: Vec<usize> = (0..self.nodes)
            .filter(|&n| self.rebalance_candidate[n])
            .collect();
        loop {
            if debug {
                ilog!(self.st.log, LOG_DEBUG, "{PLUSES}");
                ilog!(
                    self.st.log,
                    LOG_DEBUG,
                    "Selecting most imbalanced node from:"
                );
                for node in 0..self.nodes {
                    let imbalance = self.imbalance[node].cast_signed();
                    ilog!(self.st.log, LOG_DEBUG, " {node} [{imbalance}]");
                }
            }
            // glibc's qsort is a stable merge sort here: equal imbalances keep PNN order.
            order.clear();
            order.extend(0..self.nodes);
            let imbalance = &self.imbalance;
            order.sort_by(|a, b| imbalance[*b].cmp(&imbalance[*a]));

            let mut moved = false;
            for &src in &order {
                // All remaining nodes hold at most one address each.
                if self.imbalance[src] == 0 {
                    break;
                }
                if self.failback_candidate(src, &candidates) {
                    moved = true;
                    break;
                }
            }
            if !moved {
                break;
            }
        }
    }

    /// The search of `lcp2_failback_candidate`, logging every pair considered (in stock's
    /// order, which the result depends on only through ties).
    fn best_move_logged(&mut self, src: usize, candidates: &[usize]) -> Option<Move> {
        let src_imbalance = self.imbalance[src];
        let mut best: Option<Move> = None;
        for ip in 0..self.ips {
            if self.st.pnn[ip] as usize != src {
                continue;
            }
            let srcdsum = self.sum(ip, src);
            let srcimbl = src_imbalance.wrapping_sub(srcdsum);
            for &dst in candidates {
                if !self.st.can_takeover(dst, ip) {
                    continue;
                }
                let dstdsum = self.sum(ip, dst);
                let dstimbl = self.imbalance[dst].wrapping_add(dstdsum);
                ilog!(
                    self.st.log,
                    LOG_DEBUG,
                    " {} [{}] -> {} -> {} [+{}]",
                    src,
                    srcdsum.wrapping_neg().cast_signed(),
                    CtdbIp(&self.st.addrs[ip]),
                    dst,
                    dstdsum.cast_signed()
                );
                if dstimbl < src_imbalance
                    && dstdsum < srcdsum
                    && best.is_none_or(|b| srcimbl.wrapping_add(dstimbl) < b.total())
                {
                    best = Some(Move {
                        ip,
                        srcimbl,
                        dst,
                        dstimbl,
                    });
                }
            }
        }
        best
    }

    /// The same search without logging: the first pair in (address, node) order with the
    /// smallest total among the acceptable ones.
    fn best_move(&self, src: usize, candidates: &[usize]) -> Option<Move> {
        let ips = self.ips;
        let src_imbalance = self.imbalance[src];
        let src_column = &self.dsum[src * ips..(src + 1) * ips];
        let st = &*self.st;
        let targets: Vec<(usize, u32, &[u32])> = candidates
            .iter()
            .map(|&dst| {
                (
                    dst,
                    self.imbalance[dst],
                    &self.dsum[dst * ips..(dst + 1) * ips],
                )
            })
            .collect();
        let mut best: Option<Move> = None;
        let mut best_total = 0u32;
        for (ip, (&holder, &srcdsum)) in st.pnn.iter().zip(src_column).enumerate() {
            if holder as usize != src {
                continue;
            }
            let srcimbl = src_imbalance.wrapping_sub(srcdsum);
            for &(dst, imbalance, column) in &targets {
                let dstdsum = column[ip];
                let dstimbl = imbalance.wrapping_add(dstdsum);
                if dstimbl < src_imbalance
                    && dstdsum < srcdsum
                    && (self.any_node[ip] || st.can_takeover(dst, ip))
                {
                    let total = srcimbl.wrapping_add(dstimbl);
                    if best.is_none() || total < best_total {
                        best_total = total;
                        best = Some(Move {
                            ip,
                            srcimbl,
                            dst,
                            dstimbl,
                        });
                    }
                }
            }
        }
        best
    }

    /// `lcp2_failback_candidate`: the move of one of `src`'s addresses to a rebalance
    /// candidate that leaves the smallest `src + dst` imbalance, among moves where the
    /// destination ends up below `src`'s current imbalance and gains less than `src` sheds.
    fn failback_candidate(&mut self, src: usize, candidates: &[usize]) -> bool {
        ilog!(self.st.log, LOG_DEBUG, "{DASHES}");
        ilog!(
            self.st.log,
            LOG_DEBUG,
            " CONSIDERING MOVES FROM {} [{}]",
            src,
            self.imbalance[src].cast_signed()
        );
        let best = if self.st.log.enabled(LOG_DEBUG) {
            self.best_move_logged(src, candidates)
        } else {
            self.best_move(src, candidates)
        };
        ilog!(self.st.log, LOG_DEBUG, "{DASHES}");

        let Some(Move {
            ip,
            srcimbl,
            dst,
            dstimbl,
        }) = best
        else {
            return false;
        };
        ilog!(
            self.st.log,
            LOG_INFO,
            "{} [{}] -> {} -> {} [+{}]",
            src,
            srcimbl.wrapping_sub(self.imbalance[src]).cast_signed(),
            CtdbIp(&self.st.addrs[ip]),
            dst,
            dstimbl.wrapping_sub(self.imbalance[dst]).cast_signed()
        );
        self.imbalance[src] = srcimbl;
        self.imbalance[dst] = dstimbl;
        self.st.pnn[ip] = dst as u32;
        self.move_between(ip, src, dst);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::ipalloc::{LineLog, Options, PublicIp};
    use crate::testing::{seeds, Prng};
    use std::net::{IpAddr, Ipv4Addr};

    fn allocate(
        known: &[Vec<PublicIp>],
        available: &[Vec<PublicIp>],
        options: &Options,
        shortcuts: Shortcuts,
    ) -> (Vec<u32>, Vec<String>) {
        let mut log = LineLog::new(10);
        let mut state = State::new(known, available, options, &mut log);
        run_with(&mut state, shortcuts);
        let pnn = state.pnn.clone();
        drop(state);
        (pnn, log.lines)
    }

    /// The trie shortcuts (taken whenever keys are uniform) against the plain paths they
    /// replace, on uniform keys with uneven availability and partial placements.
    #[test]
    fn shortcuts_change_nothing() {
        for seed in seeds(300) {
            let mut rng = Prng::new(seed);
            let nodes = 1 + rng.below(6) as usize;
            let count = 1 + rng.below(120) as usize;
            let spread = 1 + rng.below(4) as u32;
            let addrs: Vec<IpAddr> = (0..count)
                .map(|_| {
                    IpAddr::V4(Ipv4Addr::from(
                        0x0a00_0000 + rng.u32() % (count as u32 * spread * 4),
                    ))
                })
                .collect();
            let mut known = vec![Vec::new(); nodes];
            let mut available = vec![Vec::new(); nodes];
            for &addr in &addrs {
                let holder = if rng.below(3) == 0 {
                    rng.below(nodes as u64) as u32
                } else {
                    UNKNOWN_PNN
                };
                for node in 0..nodes {
                    known[node].push(PublicIp { pnn: holder, addr });
                    if rng.below(5) != 0 {
                        available[node].push(PublicIp { pnn: holder, addr });
                    }
                }
            }
            let options = Options {
                no_ip_failback: rng.below(5) == 0,
                force_rebalance_nodes: vec![rng.below(nodes as u64) as u32],
                ..Options::default()
            };
            let plain = allocate(
                &known,
                &available,
                &options,
                Shortcuts {
                    trie_runs: false,
                    trie_mins: false,
                },
            );
            for (trie_runs, trie_mins) in [(true, false), (true, true)] {
                let fast = allocate(
                    &known,
                    &available,
                    &options,
                    Shortcuts {
                        trie_runs,
                        trie_mins,
                    },
                );
                assert_eq!(
                    fast, plain,
                    "seed {seed}, runs {trie_runs}, mins {trie_mins}"
                );
            }
        }
    }
}
