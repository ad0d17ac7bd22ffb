//! A simulated cluster behind the [`Transport`] trait, for unit tests of the takeover run.
//!
//! Each node answers as stock's daemon does (`ctdb_takeover.c`): GET_PUBLIC_IPS lists its
//! configured addresses with the node it believes hosts each (only the ones it could host
//! when asked for available ones), RELEASE_IP records the new host, TAKEOVER_IP makes it the
//! host. Every control and message is logged; failures are injected per node and opcode.

use crate::protocol::control::{
    pull_request_data, ControlReplyData, ControlRequestData, PUBLIC_IP_FLAGS_ONLY_AVAILABLE,
};
use crate::protocol::opcode::ControlOpcode;
use crate::protocol::packet::ReplyControl;
use crate::protocol::sock_addr::SockAddr;
use crate::protocol::types::{
    NodeAndFlags, NodeMap, PublicIp as WireIp, PublicIpList, TunableList, UNKNOWN_PNN,
};
use crate::server::recovery_helper::transport::{
    Disconnected, MultiOutcome, Outcome, Request, Transport,
};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

/// How an injected failure shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// A reply with this status.
    Status(i32),
    /// No reply: the control fails with this errno.
    Errno(i32),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeNode {
    pub flags: u32,
    /// Whether the node could host addresses now (not disabled, not inactive).
    pub can_host: bool,
    /// Configured address → the node this node believes hosts it.
    pub ips: BTreeMap<IpAddr, u32>,
}

/// One control as the cluster saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub pnn: u32,
    pub opcode: ControlOpcode,
    pub flags: u32,
    pub ip: Option<WireIp>,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct FakeCluster {
    pub me: u32,
    pub tunables: TunableList,
    pub nodes: Vec<FakeNode>,
    pub faults: BTreeMap<(u32, ControlOpcode), Fault>,
    pub seen: Vec<Seen>,
    /// (destination, srvid, data)
    pub messages: Vec<(u32, u64, Vec<u8>)>,
    /// Batched controls report their completions last-sent first.
    pub reverse_arrivals: bool,
    timeout: Duration,
}

pub fn stock_tunables() -> TunableList {
    TunableList {
        takeover_timeout: 9,
        enable_bans: 1,
        ip_alloc_algorithm: 2,
        ..TunableList::default()
    }
}

impl FakeCluster {
    /// `nodes` nodes that all know `addresses` (nobody hosting them) and can host.
    pub fn new(nodes: u32, addresses: &[&str]) -> Self {
        let ips: BTreeMap<IpAddr, u32> = addresses
            .iter()
            .map(|a| {
                (
                    a.parse().unwrap_or_else(|_| IpAddr::from([0, 0, 0, 0])),
                    UNKNOWN_PNN,
                )
            })
            .collect();
        FakeCluster {
            me: 0,
            tunables: stock_tunables(),
            nodes: (0..nodes)
                .map(|_| FakeNode {
                    flags: 0,
                    can_host: true,
                    ips: ips.clone(),
                })
                .collect(),
            faults: BTreeMap::new(),
            seen: Vec::new(),
            messages: Vec::new(),
            reverse_arrivals: false,
            timeout: Duration::ZERO,
        }
    }

    /// Who hosts what, by the hosts' own account; `None` if an address has several hosts.
    pub fn hosts(&self) -> Option<BTreeMap<IpAddr, u32>> {
        let mut out = BTreeMap::new();
        for (pnn, node) in self.nodes.iter().enumerate() {
            let pnn = u32::try_from(pnn).ok()?;
            for (addr, &host) in &node.ips {
                if host == pnn && out.insert(*addr, pnn).is_some() {
                    return None;
                }
            }
        }
        Some(out)
    }

    pub fn opcodes(&self) -> Vec<(u32, ControlOpcode)> {
        self.seen.iter().map(|s| (s.pnn, s.opcode)).collect()
    }

    fn reply(data: ControlReplyData) -> Outcome {
        let mut bytes = Vec::new();
        crate::protocol::control::push_reply_data(&data, &mut bytes);
        Ok(ReplyControl {
            status: 0,
            data: bytes,
            errmsg: Vec::new(),
        })
    }

    fn answer(&mut self, pnn: u32, request: &Request) -> Outcome {
        let ip = match pull_request_data(request.opcode, &request.data) {
            Ok(ControlRequestData::PublicIp(ip)) => Some(ip),
            _ => None,
        };
        self.seen.push(Seen {
            pnn,
            opcode: request.opcode,
            flags: request.flags,
            ip,
            timeout: self.timeout,
        });
        if let Some(fault) = self.faults.get(&(pnn, request.opcode)) {
            return match *fault {
                Fault::Status(status) => Ok(ReplyControl {
                    status,
                    data: Vec::new(),
                    errmsg: Vec::new(),
                }),
                Fault::Errno(errno) => Err(errno),
            };
        }
        let Some(node) = self.nodes.get_mut(pnn as usize) else {
            return Err(libc::ETIMEDOUT);
        };
        match request.opcode {
            ControlOpcode::GetAllTunables => {
                Self::reply(ControlReplyData::TunableList(Box::new(self.tunables)))
            }
            ControlOpcode::GetNodemap => {
                let nodes = self
                    .nodes
                    .iter()
                    .enumerate()
                    .map(|(i, n)| NodeAndFlags {
                        pnn: u32::try_from(i).unwrap_or(UNKNOWN_PNN),
                        flags: n.flags,
                        addr: SockAddr::new(IpAddr::from([127, 0, 0, 1]), 4379),
                    })
                    .collect();
                Self::reply(ControlReplyData::NodeMap(NodeMap { nodes }))
            }
            ControlOpcode::GetPublicIps => {
                let only_available = request.flags & PUBLIC_IP_FLAGS_ONLY_AVAILABLE != 0;
                let ips = if only_available && !node.can_host {
                    Vec::new()
                } else {
                    node.ips
                        .iter()
                        .map(|(addr, &host)| WireIp {
                            pnn: host,
                            addr: SockAddr::new(*addr, 0),
                        })
                        .collect()
                };
                Self::reply(ControlReplyData::PublicIpList(PublicIpList { ips }))
            }
            ControlOpcode::ReleaseIp | ControlOpcode::TakeoverIp => {
                if let Some(ip) = ip {
                    if let Some(host) = node.ips.get_mut(&ip.addr.ip()) {
                        *host = ip.pnn;
                    }
                }
                Self::reply(ControlReplyData::Empty)
            }
            _ => Self::reply(ControlReplyData::Empty),
        }
    }
}

impl Transport for FakeCluster {
    fn pnn(&self) -> u32 {
        self.me
    }

    fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    fn control_multi(
        &mut self,
        pnns: &[u32],
        request: &Request,
    ) -> Result<MultiOutcome, Disconnected> {
        let outcomes: Vec<Outcome> = pnns.iter().map(|&p| self.answer(p, request)).collect();
        let order: Vec<usize> = (0..pnns.len()).collect();
        Ok(MultiOutcome::from_arrivals(outcomes, &order))
    }

    fn control_batch(
        &mut self,
        requests: &[(u32, Request)],
    ) -> Result<(Vec<Outcome>, Vec<usize>), Disconnected> {
        let outcomes = requests
            .iter()
            .map(|(pnn, request)| self.answer(*pnn, request))
            .collect();
        let mut order: Vec<usize> = (0..requests.len()).collect();
        if self.reverse_arrivals {
            order.reverse();
        }
        Ok((outcomes, order))
    }

    fn control_collecting(
        &mut self,
        _pnn: u32,
        _request: &Request,
        _srvid: u64,
        _sink: &mut dyn FnMut(crate::server::recovery_helper::transport::Payload),
    ) -> Result<Outcome, Disconnected> {
        Ok(Err(libc::ENOTSUP))
    }

    fn message_multi(&mut self, pnns: &[u32], srvid: u64, data: &[u8]) -> Result<(), Disconnected> {
        for &pnn in pnns {
            self.messages.push((pnn, srvid, data.to_vec()));
        }
        Ok(())
    }
}
