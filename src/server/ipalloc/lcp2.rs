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
//! the node's other addresses — by walking the whole list each time it needs one, which makes a
//! run over 900 addresses take seconds. Here every such sum is kept in a table that each move
//! updates in one pass over the addresses, and the placement step keeps each unhosted address's
//! cheapest node, so a run costs about what its moves cost. The arithmetic is stock's: `u32`
//! wrapping everywhere (the sums of a node with tens of thousands of addresses do wrap), and a
//! wrapping sum does not depend on the order its terms were added in, so the table holds exactly
//! the values stock computes. Ties go where stock's loops send them: first address in list
//! order, then lowest node.

use super::addr::{ip_distance, CtdbIp};
use super::common::State;
use super::{ilog, LOG_DEBUG, LOG_ERR, LOG_INFO, LOG_NOTICE, LOG_WARNING, UNKNOWN_PNN};

const LOCATION_UNKNOWN_NODE: &str = "../../ctdb/server/ipalloc_lcp2.c:183";
const DASHES: &str = " ----------------------------------------";
const PLUSES: &str = "+++++++++++++++++++++++++++++++++++++++++";

/// No candidate node for an address.
const NONE: u32 = u32::MAX;

struct Lcp2<'s, 'l> {
    st: &'s mut State<'l>,
    nodes: usize,
    ips: usize,
    /// `dsum[node * ips + ip]` = `ip_distance_2_sum(ip, node)`: Σ over the other addresses on
    /// `node` of distance², wrapping.
    dsum: Vec<u32>,
    imbalance: Vec<u32>,
    rebalance_candidate: Vec<bool>,
}

pub(super) fn run(state: &mut State<'_>) {
    state.unassign_unsuitable();
    let mut lcp2 = Lcp2::init(state);
    lcp2.allocate_unassigned();
    if lcp2.st.no_ip_failback || !lcp2.rebalance_candidate.iter().any(|&c| c) {
        return;
    }
    lcp2.failback();
}

impl<'s, 'l> Lcp2<'s, 'l> {
    /// `lcp2_init`: the sums and imbalances of the current placement, and the candidates.
    fn init(st: &'s mut State<'l>) -> Self {
        let nodes = st.num_nodes;
        let ips = st.num_ips();
        let mut lcp2 = Lcp2 {
            st,
            nodes,
            ips,
            dsum: vec![0u32; nodes * ips],
            imbalance: vec![0u32; nodes],
            rebalance_candidate: vec![true; nodes],
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
                ilog!(lcp2.st.log, LOG_ERR, "{LOCATION_UNKNOWN_NODE}unknown node {pnn}");
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
        let key = self.st.keys[moved];
        let column = &mut self.dsum[node * self.ips..(node + 1) * self.ips];
        for (ip, (sum, other)) in column.iter_mut().zip(&self.st.keys).enumerate() {
            if ip != moved {
                let d = ip_distance(&key, other);
                *sum = sum.wrapping_add(d * d);
            }
        }
    }

    /// Accounts for `moved` having left `src` for `dst`.
    fn move_between(&mut self, moved: usize, src: usize, dst: usize) {
        let key = self.st.keys[moved];
        let ips = self.ips;
        for (ip, other) in self.st.keys.iter().enumerate() {
            if ip != moved {
                let d = ip_distance(&key, other);
                let dd = d * d;
                let s = &mut self.dsum[src * ips + ip];
                *s = s.wrapping_sub(dd);
                let t = &mut self.dsum[dst * ips + ip];
                *t = t.wrapping_add(dd);
            }
        }
    }

    /// The cheapest node that may take `ip` (lowest on ties) and its sum, or `NONE`.
    fn cheapest(&self, ip: usize) -> (u32, u32) {
        let mut best = (0u32, NONE);
        for node in 0..self.nodes {
            if !self.st.can_takeover(node, ip) {
                continue;
            }
            let sum = self.sum(ip, node);
            if best.1 == NONE || sum < best.0 {
                best = (sum, node as u32);
            }
        }
        best
    }

    /// `lcp2_allocate_unassigned`: repeatedly place the cheapest (address, node) pair over all
    /// unhosted addresses and the nodes that may take them.
    fn allocate_unassigned(&mut self) {
        let mut unassigned: Vec<usize> = (0..self.ips)
            .filter(|&ip| self.st.pnn[ip] == UNKNOWN_PNN)
            .collect();
        // Per address: (sum, node) of its cheapest node. Placing an address only changes the
        // sums on its new node, so only entries on that node (or beaten by it) need updating.
        let mut cheapest: Vec<(u32, u32)> = vec![(0, NONE); self.ips];
        for &ip in &unassigned {
            cheapest[ip] = self.cheapest(ip);
        }
        let debug = self.st.log.enabled(LOG_DEBUG);

        // Stock's loop body runs at least once, logging even when nothing is unhosted.
        loop {
            if debug {
                self.log_unassigned_candidates(&unassigned);
            }
            let mut chosen: Option<(usize, u32)> = None;
            for (position, &ip) in unassigned.iter().enumerate() {
                let (sum, node) = cheapest[ip];
                if node != NONE && chosen.is_none_or(|(_, min)| sum < min) {
                    chosen = Some((position, sum));
                }
            }
            ilog!(self.st.log, LOG_DEBUG, "{DASHES}");
            let Some((position, mindsum)) = chosen else {
                break;
            };
            let ip = unassigned.remove(position);
            let node = cheapest[ip].1 as usize;
            self.st.pnn[ip] = node as u32;
            self.imbalance[node] = self.imbalance[node].wrapping_add(mindsum);
            ilog!(
                self.st.log,
                LOG_INFO,
                " {} -> {} [+{}]",
                CtdbIp(&self.st.addrs[ip]),
                node,
                mindsum as i32
            );
            self.add_to_node(ip, node);
            for &other in &unassigned {
                let (best_sum, best_node) = cheapest[other];
                if best_node == NONE {
                    continue;
                }
                if best_node as usize == node {
                    cheapest[other] = self.cheapest(other);
                } else if self.st.can_takeover(node, other) {
                    // Sums only grow, unless they wrap; a wrapped one can become the cheapest.
                    let sum = self.sum(other, node);
                    if sum < best_sum || (sum == best_sum && (node as u32) < best_node) {
                        cheapest[other] = (sum, node as u32);
                    }
                }
            }
            if unassigned.is_empty() {
                break;
            }
        }

        for &ip in &unassigned {
            ilog!(
                self.st.log,
                LOG_WARNING,
                "Failed to find node to cover ip {}",
                CtdbIp(&self.st.addrs[ip])
            );
        }
    }

    fn log_unassigned_candidates(&mut self, unassigned: &[usize]) {
        ilog!(self.st.log, LOG_DEBUG, "{DASHES}");
        ilog!(self.st.log, LOG_DEBUG, " CONSIDERING MOVES (UNASSIGNED)");
        for &ip in unassigned {
            for node in 0..self.nodes {
                if self.st.can_takeover(node, ip) {
                    let sum = self.sum(ip, node);
                    ilog!(
                        self.st.log,
                        LOG_DEBUG,
                        " {} -> {} [+{}]",
                        CtdbIp(&self.st.addrs[ip]),
                        node,
                        sum as i32
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
                ilog!(self.st.log, LOG_DEBUG, "Selecting most imbalanced node from:");
                for node in 0..self.nodes {
                    let imbalance = self.imbalance[node] as i32;
                    ilog!(self.st.log, LOG_DEBUG, " {node} [{imbalance}]");
                }
            }
            // qsort in glibc is a stable merge sort here: equal imbalances keep PNN order.
            order.clear();
            order.extend(0..self.nodes);
            let imbalance = &self.imbalance;
            order.sort_by(|a, b| imbalance[*b].cmp(&imbalance[*a]));

            let mut moved = false;
            for i in 0..order.len() {
                let src = order[i];
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

    /// `lcp2_failback_candidate`: the move of one of `src`'s addresses to a rebalance
    /// candidate that leaves the smallest `src + dst` imbalance, among moves where the
    /// destination ends up below `src`'s current imbalance and gains less than `src` sheds.
    fn failback_candidate(&mut self, src: usize, candidates: &[usize]) -> bool {
        let debug = self.st.log.enabled(LOG_DEBUG);
        ilog!(self.st.log, LOG_DEBUG, "{DASHES}");
        ilog!(
            self.st.log,
            LOG_DEBUG,
            " CONSIDERING MOVES FROM {} [{}]",
            src,
            self.imbalance[src] as i32
        );
        let src_imbalance = self.imbalance[src];
        // (ip, srcimbl, dstnode, dstimbl)
        let mut best: Option<(usize, u32, usize, u32)> = None;
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
                if debug {
                    ilog!(
                        self.st.log,
                        LOG_DEBUG,
                        " {} [{}] -> {} -> {} [+{}]",
                        src,
                        srcdsum.wrapping_neg() as i32,
                        CtdbIp(&self.st.addrs[ip]),
                        dst,
                        dstdsum as i32
                    );
                }
                if dstimbl < src_imbalance
                    && dstdsum < srcdsum
                    && best.is_none_or(|(_, minsrc, _, mindst)| {
                        srcimbl.wrapping_add(dstimbl) < minsrc.wrapping_add(mindst)
                    })
                {
                    best = Some((ip, srcimbl, dst, dstimbl));
                }
            }
        }
        ilog!(self.st.log, LOG_DEBUG, "{DASHES}");

        let Some((ip, srcimbl, dst, dstimbl)) = best else {
            return false;
        };
        ilog!(
            self.st.log,
            LOG_INFO,
            "{} [{}] -> {} -> {} [+{}]",
            src,
            srcimbl.wrapping_sub(self.imbalance[src]) as i32,
            CtdbIp(&self.st.addrs[ip]),
            dst,
            dstimbl.wrapping_sub(self.imbalance[dst]) as i32
        );
        self.imbalance[src] = srcimbl;
        self.imbalance[dst] = dstimbl;
        self.st.pnn[ip] = dst as u32;
        self.move_between(ip, src, dst);
        true
    }
}
