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
//! the node's other addresses — by walking the whole list each time it needs one, so placing
//! 900 addresses costs seconds. Here all those sums live in a table (one column per node) that
//! each placement or move updates in one pass over the addresses, and each column remembers its
//! cheapest unhosted address, so finding the next placement costs a look at every column
//! instead of every (address, node) pair. The arithmetic is stock's: `u32` wrapping everywhere
//! (the imbalance of a node with about a thousand addresses does wrap), and a wrapping sum does
//! not depend on the order its terms were added in, so the table holds exactly the values stock
//! computes. Ties go where stock's loops send them: first address in list order, then lowest
//! node.

use std::ops::Range;

use super::addr::{ip_distance, CtdbIp};
use super::common::State;
use super::{ilog, LOG_DEBUG, LOG_ERR, LOG_INFO, LOG_NOTICE, LOG_WARNING, UNKNOWN_PNN};

const LOCATION_UNKNOWN_NODE: &str = "../../ctdb/server/ipalloc_lcp2.c:183";
const DASHES: &str = " ----------------------------------------";
const PLUSES: &str = "+++++++++++++++++++++++++++++++++++++++++";

struct Lcp2<'s, 'l> {
    st: &'s mut State<'l>,
    nodes: usize,
    ips: usize,
    /// `dsum[node * ips + ip]` = `ip_distance_2_sum(ip, node)`: Σ over the other addresses on
    /// `node` of distance², wrapping.
    dsum: Vec<u32>,
    imbalance: Vec<u32>,
    rebalance_candidate: Vec<bool>,
    /// All keys share their first three words (all IPv4, or one IPv6 /96), so a distance is 96
    /// plus the common prefix of the last words.
    uniform_high: bool,
    low: Vec<u32>,
}

/// The cheapest unhosted addresses a node may take, as `(sum, ip)` in stock's preference order
/// (smaller sum, then earlier address). Placing an address removes it from every column, and it
/// is usually among the cheapest of most of them; a column is rebuilt when an address is placed
/// on its node, about every `nodes` placements, so keeping more than `nodes` entries means a
/// column seldom runs dry and has to be rescanned in between.
#[derive(Debug, Clone)]
struct Cheapest {
    items: Vec<(u32, u32)>,
    head: usize,
    keep: usize,
    /// The column had more candidates than were kept.
    truncated: bool,
}

impl Cheapest {
    fn new(nodes: usize) -> Self {
        let keep = nodes.clamp(8, 64);
        Cheapest {
            items: Vec::with_capacity(keep),
            head: 0,
            keep,
            truncated: false,
        }
    }

    /// Refills from a column's candidates given in ascending address order.
    fn rebuild(&mut self, mut candidates: impl Iterator<Item = (u32, usize)>) {
        self.items.clear();
        self.head = 0;
        self.truncated = false;
        while self.items.len() < self.keep {
            let Some((sum, ip)) = candidates.next() else {
                return;
            };
            self.insert(sum, ip);
        }
        let mut threshold = self.items.last().map_or(0, |last| last.0);
        for (sum, ip) in candidates {
            self.truncated = true;
            if sum < threshold {
                self.items.pop();
                self.insert(sum, ip);
                threshold = self.items.last().map_or(0, |last| last.0);
            }
        }
    }

    /// Equal sums keep address order: a later address goes after them.
    fn insert(&mut self, sum: u32, ip: usize) {
        let at = self.items.partition_point(|item| item.0 <= sum);
        self.items.insert(at, (sum, ip as u32));
    }

    fn first(&self) -> Option<(u32, usize)> {
        self.items
            .get(self.head)
            .map(|&(sum, ip)| (sum, ip as usize))
    }

    /// Forgets `ip`; true if the column must be rescanned.
    fn remove(&mut self, ip: usize) -> bool {
        let ip = ip as u32;
        if let Some(at) = (self.head..self.items.len()).find(|&i| self.items[i].1 == ip) {
            if at == self.head {
                self.head += 1;
            } else {
                self.items.remove(at);
            }
        }
        self.head == self.items.len() && self.truncated
    }
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
        let uniform_high = st.keys.windows(2).all(|w| w[0][..3] == w[1][..3]);
        let low = st.keys.iter().map(|k| k[3]).collect();
        let mut lcp2 = Lcp2 {
            st,
            nodes,
            ips,
            dsum: vec![0u32; nodes * ips],
            imbalance: vec![0u32; nodes],
            rebalance_candidate: vec![true; nodes],
            uniform_high,
            low,
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

    /// With uniform keys, the other addresses at each distance from `moved`: the list is sorted
    /// by descending key, so the addresses sharing exactly `k` leading bits with `moved` form one
    /// contiguous run (the other half of the subtree `moved` is in at depth `k`). Calls `f` with
    /// each non-empty run and its distance², nearest-first.
    fn distance_runs(&self, moved: usize, mut f: impl FnMut(Range<usize>, u32)) {
        let key = self.low[moved];
        let (mut start, mut end) = (0usize, self.ips);
        for common in 0..32u32 {
            let bit = 1u32 << (31 - common);
            // Within [start, end) all keys share `common` leading bits, so those with the next
            // bit set are the larger ones and come first.
            let split = start + self.low[start..end].partition_point(|&k| k & bit != 0);
            let other = if key & bit != 0 {
                let other = split..end;
                end = split;
                other
            } else {
                let other = start..split;
                start = split;
                other
            };
            if !other.is_empty() {
                let d = 96 + common;
                f(other, d * d);
            }
            if end - start <= 1 {
                break;
            }
        }
    }

    /// Accounts for `moved` now being on `node`: every other address's sum there grows.
    fn add_to_node(&mut self, moved: usize, node: usize) {
        let ips = self.ips;
        let mut column = std::mem::take(&mut self.dsum);
        let column_of_node = &mut column[node * ips..(node + 1) * ips];
        if self.uniform_high {
            self.distance_runs(moved, |run, dd| {
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
        if self.uniform_high {
            self.distance_runs(moved, |run, dd| {
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

    /// Refills `cheapest` for `node` from the unhosted addresses it may take.
    fn column_cheapest(
        &self,
        node: usize,
        unassigned: &[u32],
        eligible: &[bool],
        cheapest: &mut Cheapest,
    ) {
        let column = &self.dsum[node * self.ips..(node + 1) * self.ips];
        cheapest.rebuild(
            unassigned
                .iter()
                .map(|&ip| ip as usize)
                .filter(|&ip| eligible[ip])
                .map(|ip| (column[ip], ip)),
        );
    }

    /// `lcp2_allocate_unassigned`: repeatedly place the cheapest (address, node) pair over all
    /// unhosted addresses and the nodes that may take them.
    fn allocate_unassigned(&mut self) {
        let ips = self.ips;
        // eligible[node * ips + ip]: ip is unhosted and node may take it.
        let mut eligible = vec![false; self.nodes * ips];
        // The unhosted addresses in list order.
        let mut unassigned: Vec<u32> = Vec::new();
        for ip in 0..ips {
            if self.st.pnn[ip] != UNKNOWN_PNN {
                continue;
            }
            unassigned.push(ip as u32);
            for node in 0..self.nodes {
                eligible[node * ips + ip] = self.st.can_takeover(node, ip);
            }
        }
        let mut columns = vec![Cheapest::new(self.nodes); self.nodes];
        for (node, cheapest) in columns.iter_mut().enumerate() {
            let column = &eligible[node * ips..(node + 1) * ips];
            self.column_cheapest(node, &unassigned, column, cheapest);
        }
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
            for (node, column) in columns.iter().enumerate() {
                if let Some((sum, ip)) = column.first() {
                    if next.is_none_or(|(s, i, _)| sum < s || (sum == s && ip < i)) {
                        next = Some((sum, ip, node));
                    }
                }
            }
            let Some((mindsum, ip, node)) = next else {
                break;
            };
            self.st.pnn[ip] = node as u32;
            if let Ok(at) = unassigned.binary_search(&(ip as u32)) {
                unassigned.remove(at);
            }
            self.imbalance[node] = self.imbalance[node].wrapping_add(mindsum);
            ilog!(
                self.st.log,
                LOG_INFO,
                " {} -> {} [+{}]",
                CtdbIp(&self.st.addrs[ip]),
                node,
                mindsum.cast_signed()
            );
            for other in 0..self.nodes {
                eligible[other * ips + ip] = false;
            }
            // Only `node`'s column changes; the others just lose `ip`.
            self.add_to_node(ip, node);
            for (other, cheapest) in columns.iter_mut().enumerate() {
                if other == node || cheapest.remove(ip) {
                    let column = &eligible[other * ips..(other + 1) * ips];
                    self.column_cheapest(other, &unassigned, column, cheapest);
                }
            }
            if unassigned.is_empty() {
                break;
            }
        }

        for ip in 0..ips {
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
            self.imbalance[src].cast_signed()
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
                        srcdsum.wrapping_neg().cast_signed(),
                        CtdbIp(&self.st.addrs[ip]),
                        dst,
                        dstdsum.cast_signed()
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
