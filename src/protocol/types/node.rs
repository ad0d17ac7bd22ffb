//! Cluster membership payloads: vnn map, node map, flag changes, bans, uptime.

use crate::protocol::basic::{Marshal, PullError, Reader, Timeval, Writer};
use crate::protocol::sock_addr::{SockAddr, SOCK_ADDR_LEN};

use super::{pull_item, pull_items};

/// `ctdb_vnn_map`: the generation and the hash-bucket → lmaster table (GETVNNMAP, SETVNNMAP).
/// The wire `size` is the length of `map`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VnnMap {
    pub generation: u32,
    pub map: Vec<u32>,
}

impl Marshal for VnnMap {
    fn wire_len(&self) -> usize {
        8 + 4 * self.map.len()
    }
    fn push(&self, out: &mut Vec<u8>) {
        out.put_u32(self.generation);
        out.put_len(self.map.len());
        for &pnn in &self.map {
            out.put_u32(pnn);
        }
    }
    fn pull(buf: &[u8]) -> Result<(Self, usize), PullError> {
        let mut r = Reader::new(buf);
        let generation = r.u32()?;
        let size = r.count_u32("vnn_map size", 4)?;
        let map = (0..size).map(|_| r.u32()).collect::<Result<_, _>>()?;
        Ok((VnnMap { generation, map }, r.pos()))
    }
}

/// `ctdb_node_and_flags` (36 bytes): one node of a node map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NodeAndFlags {
    pub pnn: u32,
    /// `NODE_FLAGS_*`, see [`super::node_flags`].
    pub flags: u32,
    pub addr: SockAddr,
}

impl NodeAndFlags {
    pub const WIRE_LEN: usize = 8 + SOCK_ADDR_LEN;
}

impl Marshal for NodeAndFlags {
    fn wire_len(&self) -> usize {
        Self::WIRE_LEN
    }
    fn push(&self, out: &mut Vec<u8>) {
        out.put_u32(self.pnn);
        out.put_u32(self.flags);
        self.addr.push(out);
    }
    fn pull(buf: &[u8]) -> Result<(Self, usize), PullError> {
        let mut r = Reader::new(buf);
        let pnn = r.u32()?;
        let flags = r.u32()?;
        let addr = pull_item(&mut r)?;
        Ok((NodeAndFlags { pnn, flags, addr }, r.pos()))
    }
}

/// `ctdb_node_map`: `num` then `num` nodes (GET_NODEMAP, GET_NODES_FILE).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeMap {
    pub nodes: Vec<NodeAndFlags>,
}

impl Marshal for NodeMap {
    fn wire_len(&self) -> usize {
        4 + NodeAndFlags::WIRE_LEN * self.nodes.len()
    }
    fn push(&self, out: &mut Vec<u8>) {
        out.put_len(self.nodes.len());
        for node in &self.nodes {
            node.push(out);
        }
    }
    fn pull(buf: &[u8]) -> Result<(Self, usize), PullError> {
        let mut r = Reader::new(buf);
        let num = r.count_u32("node_map num", NodeAndFlags::WIRE_LEN)?;
        let nodes = pull_items(&mut r, num)?;
        Ok((NodeMap { nodes }, r.pos()))
    }
}

/// `ctdb_node_flag_change` (12 bytes): MODIFY_FLAGS and the PUSH_NODE_FLAGS message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NodeFlagChange {
    pub pnn: u32,
    pub new_flags: u32,
    pub old_flags: u32,
}

impl Marshal for NodeFlagChange {
    fn wire_len(&self) -> usize {
        12
    }
    fn push(&self, out: &mut Vec<u8>) {
        out.put_u32(self.pnn);
        out.put_u32(self.new_flags);
        out.put_u32(self.old_flags);
    }
    fn pull(buf: &[u8]) -> Result<(Self, usize), PullError> {
        let mut r = Reader::new(buf);
        let value = NodeFlagChange {
            pnn: r.u32()?,
            new_flags: r.u32()?,
            old_flags: r.u32()?,
        };
        Ok((value, r.pos()))
    }
}

/// `ctdb_ban_state` (8 bytes): SET_BAN_STATE / GET_BAN_STATE. `time` is in seconds, 0 unbans.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BanState {
    pub pnn: u32,
    pub time: u32,
}

impl Marshal for BanState {
    fn wire_len(&self) -> usize {
        8
    }
    fn push(&self, out: &mut Vec<u8>) {
        out.put_u32(self.pnn);
        out.put_u32(self.time);
    }
    fn pull(buf: &[u8]) -> Result<(Self, usize), PullError> {
        let mut r = Reader::new(buf);
        let value = BanState {
            pnn: r.u32()?,
            time: r.u32()?,
        };
        Ok((value, r.pos()))
    }
}

/// `ctdb_uptime` (64 bytes): the UPTIME reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Uptime {
    pub current_time: Timeval,
    pub ctdbd_start_time: Timeval,
    pub last_recovery_started: Timeval,
    pub last_recovery_finished: Timeval,
}

impl Marshal for Uptime {
    fn wire_len(&self) -> usize {
        64
    }
    fn push(&self, out: &mut Vec<u8>) {
        self.current_time.push(out);
        self.ctdbd_start_time.push(out);
        self.last_recovery_started.push(out);
        self.last_recovery_finished.push(out);
    }
    fn pull(buf: &[u8]) -> Result<(Self, usize), PullError> {
        let mut r = Reader::new(buf);
        let value = Uptime {
            current_time: pull_item(&mut r)?,
            ctdbd_start_time: pull_item(&mut r)?,
            last_recovery_started: pull_item(&mut r)?,
            last_recovery_finished: pull_item(&mut r)?,
        };
        Ok((value, r.pos()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::types::check::all_seeds;
    use crate::protocol::types::fill;

    #[test]
    fn seeded_round_trips_and_truncations() {
        all_seeds("VnnMap", fill::vnn_map);
        all_seeds("NodeAndFlags", fill::node_and_flags);
        all_seeds("NodeMap", fill::node_map);
        all_seeds("NodeFlagChange", fill::node_flag_change);
        all_seeds("BanState", fill::ban_state);
        all_seeds("Uptime", fill::uptime);
    }

    #[test]
    fn getvnnmap_reply_from_stock() {
        // Appendix A: GETVNNMAP on a two-node cluster, generation 0x5211f4c0.
        let bytes = [0xc0, 0xf4, 0x11, 0x52, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0];
        let map = VnnMap::from_bytes_exact(&bytes).unwrap();
        assert_eq!(
            map,
            VnnMap {
                generation: 0x5211_f4c0,
                map: vec![0, 1]
            }
        );
        assert_eq!(map.to_bytes(), bytes);
    }

    #[test]
    fn node_map_layout() {
        let node = NodeAndFlags {
            pnn: 1,
            flags: 0x21,
            addr: SockAddr::new("127.0.199.2".parse().unwrap(), 4379),
        };
        let map = NodeMap {
            nodes: vec![NodeAndFlags::default(), node],
        };
        let bytes = map.to_bytes();
        assert_eq!(bytes.len(), 76);
        assert_eq!(&bytes[0..4], &2u32.to_ne_bytes());
        assert_eq!(&bytes[40..44], &1u32.to_ne_bytes());
        assert_eq!(&bytes[44..48], &0x21u32.to_ne_bytes());
        assert_eq!(&bytes[48..56], &[2, 0, 0x11, 0x1b, 127, 0, 199, 2]);
    }

    #[test]
    fn huge_counts_are_rejected_without_allocating() {
        let mut bytes = vec![0u8; 4];
        bytes.extend_from_slice(&u32::MAX.to_ne_bytes());
        assert!(VnnMap::pull(&bytes).is_err());
        assert!(NodeMap::pull(&u32::MAX.to_ne_bytes()).is_err());
    }
}
