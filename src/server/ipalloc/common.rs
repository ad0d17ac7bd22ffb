//! The merged address list and the helpers every algorithm shares (mirrors
//! `create_merged_ip_list` and `populate_bitmap` in `ipalloc.c`, and `ipalloc_common.c`).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;

use super::addr::{ip_key, CtdbIp, IpKey};
use super::{
    ilog, AllocatedIp, IpallocLog, NodeSet, Options, PublicIp, LOG_DEBUG, LOG_WARNING, UNKNOWN_PNN,
};

/// `__location__` of the two warnings that carry one, as stock's build spells it.
const LOCATION_FIND_TAKEOVER_NODE: &str = "../../ctdb/server/ipalloc_common.c:110";

/// A quick hash for keys (stock's tree needs no hashing; std's default SipHash costs more than
/// the rest of the merge).
#[derive(Debug, Default, Clone, Copy)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(4);
        for word in &mut words {
            self.write_u32(u32::from_le_bytes([word[0], word[1], word[2], word[3]]));
        }
        for &b in words.remainder() {
            self.write_u32(u32::from(b));
        }
    }
    fn write_u32(&mut self, word: u32) {
        self.0 = (self.0.rotate_left(5) ^ u64::from(word)).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    fn write_usize(&mut self, word: usize) {
        self.write_u32(word as u32);
    }
}

type KeyHash = BuildHasherDefault<KeyHasher>;

/// The allocation in progress: the merged list in stock's order plus, per address, the node
/// that hosts it and the nodes that may.
pub(super) struct State<'l> {
    pub num_nodes: usize,
    pub addrs: Vec<IpAddr>,
    pub keys: Vec<IpKey>,
    pub pnn: Vec<u32>,
    /// `available_on` and `known_on` bitmaps, `words` u64 per address.
    available: Vec<u64>,
    known: Vec<u64>,
    words: usize,
    pub no_ip_takeover: bool,
    pub no_ip_failback: bool,
    pub force_rebalance_nodes: Vec<u32>,
    pub log: &'l mut dyn IpallocLog,
}

impl<'l> State<'l> {
    pub fn new(
        known: &[Vec<PublicIp>],
        available: &[Vec<PublicIp>],
        options: &Options,
        log: &'l mut dyn IpallocLog,
    ) -> Self {
        let num_nodes = known.len();

        // Stock inserts every node's list into a tree keyed by ip_key (a later entry replaces
        // an earlier one with the same key, keeping the earlier holder if it has none of its
        // own), then walks the tree in ascending order prepending each entry: one entry per
        // key, in descending key order.
        let mut merged: HashMap<IpKey, (IpAddr, u32), KeyHash> = HashMap::default();
        for (node, ips) in known.iter().enumerate() {
            for ip in ips {
                // A node's word on who hosts an address is only trusted about itself.
                let own = if ip.pnn as usize == node {
                    ip.pnn
                } else {
                    UNKNOWN_PNN
                };
                let slot = merged.entry(ip_key(&ip.addr)).or_insert((ip.addr, own));
                let holder = if own == UNKNOWN_PNN { slot.1 } else { own };
                *slot = (ip.addr, holder);
            }
        }
        let mut list: Vec<(IpKey, IpAddr, u32)> = merged
            .into_iter()
            .map(|(key, (addr, holder))| (key, addr, holder))
            .collect();
        list.sort_unstable_by_key(|e| std::cmp::Reverse(e.0));
        let keys: Vec<IpKey> = list.iter().map(|e| e.0).collect();
        let addrs: Vec<IpAddr> = list.iter().map(|e| e.1).collect();
        let pnn: Vec<u32> = list.iter().map(|e| e.2).collect();
        let position: HashMap<IpKey, usize, KeyHash> =
            keys.iter().enumerate().map(|(i, k)| (*k, i)).collect();
        let words = num_nodes.div_ceil(64).max(1);
        // Bitmaps match by address and family (ctdb_sock_addr_same_ip), so an IPv4 address
        // does not match the IPv6 entry that displaced it from the tree.
        let index = |addr: &IpAddr| {
            position
                .get(&ip_key(addr))
                .copied()
                .filter(|&i| addrs[i] == *addr)
        };
        let mut known_bits = vec![0u64; addrs.len() * words];
        for (node, ips) in known.iter().enumerate() {
            for ip in ips {
                if let Some(i) = index(&ip.addr) {
                    known_bits[i * words + node / 64] |= 1u64 << (node % 64);
                }
            }
        }
        let count = addrs.len();
        let mut available_bits = vec![0u64; count * words];
        for (node, ips) in available.iter().take(num_nodes).enumerate() {
            let (word, bit) = (node / 64, 1u64 << (node % 64));
            for ip in ips {
                if let Some(i) = index(&ip.addr) {
                    available_bits[i * words + word] |= bit;
                    known_bits[i * words + word] |= bit;
                }
            }
        }

        State {
            num_nodes,
            addrs,
            keys,
            pnn,
            available: available_bits,
            known: known_bits,
            words,
            no_ip_takeover: options.no_ip_takeover,
            no_ip_failback: options.no_ip_failback,
            force_rebalance_nodes: options.force_rebalance_nodes.clone(),
            log,
        }
    }

    pub fn num_ips(&self) -> usize {
        self.addrs.len()
    }

    /// `can_node_host_ip`: the node has the address available.
    #[inline]
    pub fn can_host(&self, node: usize, ip: usize) -> bool {
        self.available[ip * self.words + node / 64] & (1u64 << (node % 64)) != 0
    }

    /// `can_node_takeover_ip`: as `can_host`, but nobody may take anything under NoIPTakeover.
    #[inline]
    pub fn can_takeover(&self, node: usize, ip: usize) -> bool {
        !self.no_ip_takeover && self.can_host(node, ip)
    }

    /// The `available_on` bitmap words of one address (equal words, equal candidate nodes).
    pub fn available_words(&self, ip: usize) -> &[u64] {
        &self.available[ip * self.words..(ip + 1) * self.words]
    }

    /// `unassign_unsuitable_ips`: an address whose holder cannot host it becomes unhosted.
    pub fn unassign_unsuitable(&mut self) {
        for ip in 0..self.num_ips() {
            let holder = self.pnn[ip];
            if holder == UNKNOWN_PNN || self.can_host(holder as usize, ip) {
                continue;
            }
            ilog!(
                self.log,
                LOG_DEBUG,
                "Unassign IP: {} from {}",
                CtdbIp(&self.addrs[ip]),
                holder.cast_signed()
            );
            self.pnn[ip] = UNKNOWN_PNN;
        }
    }

    pub fn into_result(self) -> Vec<AllocatedIp> {
        let words = self.words;
        let set = |bits: &[u64], ip: usize| NodeSet {
            words: bits[ip * words..(ip + 1) * words].to_vec(),
        };
        (0..self.addrs.len())
            .map(|ip| AllocatedIp {
                addr: self.addrs[ip],
                pnn: self.pnn[ip],
                known_on: set(&self.known, ip),
                available_on: set(&self.available, ip),
            })
            .collect()
    }
}

/// How many addresses each node holds (`node_ip_coverage`, kept up to date instead of counted).
pub(super) struct Coverage {
    pub counts: Vec<i64>,
}

impl Coverage {
    pub fn new(state: &State<'_>) -> Self {
        let mut counts = vec![0i64; state.num_nodes];
        for &holder in &state.pnn {
            if let Some(c) = counts.get_mut(holder as usize) {
                *c += 1;
            }
        }
        Coverage { counts }
    }

    /// Moves an address to `node` in both the state and the counts.
    pub fn assign(&mut self, state: &mut State<'_>, ip: usize, node: usize) {
        if let Some(c) = self.counts.get_mut(state.pnn[ip] as usize) {
            *c -= 1;
        }
        self.counts[node] += 1;
        state.pnn[ip] = node as u32;
    }

    /// `find_takeover_node`: the node that may take the address and holds the fewest (lowest
    /// PNN on ties). Returns false, leaving the address alone, if there is none.
    pub fn find_takeover_node(&mut self, state: &mut State<'_>, ip: usize) -> bool {
        let mut best: Option<(usize, i64)> = None;
        for node in 0..state.num_nodes {
            if !state.can_takeover(node, ip) {
                continue;
            }
            let num = self.counts[node];
            if best.is_none_or(|(_, min)| num < min) {
                best = Some((node, num));
            }
        }
        match best {
            Some((node, _)) => {
                self.assign(state, ip, node);
                true
            }
            None => {
                ilog!(
                    state.log,
                    LOG_WARNING,
                    "{LOCATION_FIND_TAKEOVER_NODE} Could not find node to take over public address '{}'",
                    CtdbIp(&state.addrs[ip])
                );
                false
            }
        }
    }

    /// `basic_allocate_unassigned`: each unhosted address, in list order, goes to the least
    /// loaded node that may take it.
    pub fn allocate_unassigned(&mut self, state: &mut State<'_>) {
        for ip in 0..state.num_ips() {
            if state.pnn[ip] == UNKNOWN_PNN && !self.find_takeover_node(state, ip) {
                ilog!(
                    state.log,
                    LOG_WARNING,
                    "Failed to find node to cover ip {}",
                    CtdbIp(&state.addrs[ip])
                );
            }
        }
    }
}
