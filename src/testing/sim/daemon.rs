//! A model of the parts of ctdbd the recovery daemon and its helpers talk to: node flags as
//! this node sees them, recovery mode, vnn map and generation, one database's generation and
//! freeze state, runstate, bans, control forwarding and message routing.
//!
//! Receiver semantics follow stock (`ctdb_recover.c`, `ctdb_banning.c`, `ctdb_monitor.c`,
//! `ctdb_freeze.c`): SET_RECMODE(NORMAL) checks the database generation and tests the cluster
//! lock, SETVNNMAP needs recovery mode ACTIVE, MODIFY_FLAGS ignores the receiver's own flags and
//! the DISCONNECTED bit and forces a recovery for start-up, SET_BAN_STATE makes the node
//! inactive. Start-up is compressed as in test mode: `startup` right after the first recovery,
//! the first good monitor a second later.

use super::{Client, ClientRequest, Event, Pnn, Sim};
use crate::common::clock::Instant;
use crate::common::tunable::Tunables;
use crate::protocol::control::{pull_request_data, ControlReplyData, ControlRequestData};
use crate::protocol::header::{
    BROADCAST_ACTIVE, BROADCAST_ALL, BROADCAST_CONNECTED, CURRENT_NODE, INVALID_GENERATION,
};
use crate::protocol::helper::ClusterMutexResult;
use crate::protocol::opcode::ControlOpcode;
use crate::protocol::types::{
    capabilities, node_flags, IfaceList, NodeAndFlags, NodeMap, PublicIpList, Runstate,
    TunableList, VnnMap,
};
use crate::server::recoverd::{RECOVERY_ACTIVE, RECOVERY_NORMAL};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// The one database every simulated node has attached.
pub const SIM_DB_ID: u32 = 0x5a5a_0001;

/// Where a control's reply goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReplyTo {
    Local { client: Client, token: u64 },
    Remote { node: Pnn, reqid: u32 },
}

#[derive(Debug, Clone)]
struct Forward {
    client: Client,
    token: u64,
    dest: Pnn,
    deadline: Instant,
}

/// One node's ctdbd.
#[derive(Debug, Clone)]
pub struct DaemonModel {
    pub pnn: Pnn,
    /// Flags of every node as this daemon sees them; its own entry is authoritative.
    pub flags: Vec<u32>,
    pub recmode: u32,
    pub vnnmap: VnnMap,
    pub db_generation: u32,
    pub frozen: bool,
    pub transaction: Option<u32>,
    pub runstate: Runstate,
    pub capabilities: u32,
    pub tunables: Tunables,
    pub ban_until: Option<Instant>,
    startup_at: Option<Instant>,
    healthy_at: Option<Instant>,
    pub recoveries_ended: u64,
    pub bans_applied: u64,
    pub(crate) registered: BTreeSet<u64>,
    forwards: BTreeMap<u32, Forward>,
    next_reqid: u32,
    recmode_tests: BTreeMap<u64, ReplyTo>,
    lock_configured: bool,
}

/// What running a control produced.
pub(crate) enum ControlResult {
    Done(i32, Vec<u8>),
    /// The reply comes later (SET_RECMODE(NORMAL) testing the cluster lock).
    Async,
}

impl DaemonModel {
    pub(crate) fn new(
        pnn: Pnn,
        num_nodes: usize,
        lock_configured: bool,
        tunables: Tunables,
    ) -> Self {
        let flags = (0..num_nodes)
            .map(|i| {
                if i == pnn as usize {
                    node_flags::UNHEALTHY
                } else {
                    node_flags::UNHEALTHY | node_flags::DISCONNECTED
                }
            })
            .collect();
        DaemonModel {
            pnn,
            flags,
            recmode: RECOVERY_ACTIVE,
            vnnmap: VnnMap {
                generation: INVALID_GENERATION,
                map: (0..u32::try_from(num_nodes).unwrap_or(u32::MAX)).collect(),
            },
            db_generation: INVALID_GENERATION,
            frozen: false,
            transaction: None,
            runstate: Runstate::FirstRecovery,
            capabilities: capabilities::DEFAULT,
            tunables,
            ban_until: None,
            startup_at: None,
            healthy_at: None,
            recoveries_ended: 0,
            bans_applied: 0,
            registered: BTreeSet::new(),
            forwards: BTreeMap::new(),
            next_reqid: 1,
            recmode_tests: BTreeMap::new(),
            lock_configured,
        }
    }

    pub fn own_flags(&self) -> u32 {
        self.flags[self.pnn as usize]
    }

    fn own_flags_mut(&mut self) -> &mut u32 {
        let pnn = self.pnn as usize;
        &mut self.flags[pnn]
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        [
            self.ban_until,
            self.startup_at,
            self.healthy_at,
            self.forwards.values().map(|f| f.deadline).min(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn connected(&self, pnn: Pnn) -> bool {
        self.flags
            .get(pnn as usize)
            .is_some_and(|f| f & (node_flags::DISCONNECTED | node_flags::DELETED) == 0)
    }

    /// `ctdb_node_become_inactive`.
    fn become_inactive(&mut self) {
        self.vnnmap.generation = INVALID_GENERATION;
        self.db_generation = INVALID_GENERATION;
        self.recmode = RECOVERY_ACTIVE;
        self.frozen = true;
    }

    /// SET_BAN_STATE for this node.
    pub(crate) fn set_ban(&mut self, now: Instant, time_s: u32) -> i32 {
        let already_banned = self.ban_until.take().is_some();
        if time_s == 0 {
            *self.own_flags_mut() &= !node_flags::BANNED;
            return 0;
        }
        if self.tunables.enable_bans() == 0 {
            return 0;
        }
        self.bans_applied += 1;
        *self.own_flags_mut() |= node_flags::BANNED;
        self.ban_until = Some(now.saturating_add(Duration::from_secs(u64::from(time_s))));
        if !already_banned {
            self.become_inactive();
        }
        0
    }

    pub(crate) fn stop_node(&mut self) {
        *self.own_flags_mut() |= node_flags::STOPPED;
        self.become_inactive();
    }

    pub(crate) fn continue_node(&mut self) {
        *self.own_flags_mut() &= !node_flags::STOPPED;
    }

    pub(crate) fn node_map(&self) -> NodeMap {
        NodeMap {
            nodes: self
                .flags
                .iter()
                .enumerate()
                .map(|(i, &flags)| NodeAndFlags {
                    pnn: u32::try_from(i).unwrap_or(u32::MAX),
                    flags,
                    addr: Default::default(),
                })
                .collect(),
        }
    }
}

fn reply_data(data: ControlReplyData) -> ControlResult {
    ControlResult::Done(0, data.to_bytes())
}

fn status(status: i32) -> ControlResult {
    ControlResult::Done(status, Vec::new())
}

impl Sim {
    fn daemon_mut(&mut self, node: Pnn) -> Option<&mut DaemonModel> {
        self.nodes.get_mut(node as usize)?.daemon.as_mut()
    }

    /// Runs a control on `node`'s daemon.
    pub(crate) fn exec_control(
        &mut self,
        node: Pnn,
        opcode: ControlOpcode,
        flags: u32,
        data: &[u8],
        reply_to: ReplyTo,
    ) -> ControlResult {
        let now = self.now;
        let lock_test_id = self.next_id();
        let Some(d) = self.daemon_mut(node) else {
            return status(-1);
        };
        let request = pull_request_data(opcode, data);
        let _ = flags;
        match opcode {
            ControlOpcode::RecdPing | ControlOpcode::RecdReclockLatency => status(0),
            ControlOpcode::GetDebug => reply_data(ControlReplyData::DebugLevel(0)),
            ControlOpcode::GetAllTunables => reply_data(ControlReplyData::TunableList(Box::new(
                TunableList::from_array(d.tunables.to_wire()),
            ))),
            ControlOpcode::GetRunstate => reply_data(ControlReplyData::Runstate(d.runstate)),
            ControlOpcode::GetNodemap => reply_data(ControlReplyData::NodeMap(d.node_map())),
            ControlOpcode::GetRecmode => status(d.recmode.cast_signed()),
            ControlOpcode::GetCapabilities => {
                reply_data(ControlReplyData::Capabilities(d.capabilities))
            }
            ControlOpcode::GetIfaces => {
                reply_data(ControlReplyData::IfaceList(IfaceList::default()))
            }
            ControlOpcode::GetPublicIps => {
                reply_data(ControlReplyData::PublicIpList(PublicIpList::default()))
            }
            ControlOpcode::Getvnnmap => reply_data(ControlReplyData::VnnMap(d.vnnmap.clone())),
            ControlOpcode::Freeze => {
                d.frozen = true;
                status(0)
            }
            ControlOpcode::SetRecmode => {
                let Ok(ControlRequestData::RecMode(mode)) = request else {
                    return status(-1);
                };
                let mode = u32::from(mode);
                if mode == d.recmode {
                    return status(0);
                }
                if mode == RECOVERY_ACTIVE {
                    d.recmode = RECOVERY_ACTIVE;
                    return status(0);
                }
                if mode != RECOVERY_NORMAL || d.db_generation != d.vnnmap.generation {
                    return status(-1);
                }
                d.frozen = false;
                d.transaction = None;
                if !d.lock_configured {
                    d.recmode = RECOVERY_NORMAL;
                    return status(0);
                }
                d.recmode_tests.insert(lock_test_id, reply_to);
                self.lock_test(node, lock_test_id);
                ControlResult::Async
            }
            ControlOpcode::ModifyFlags => {
                let Ok(ControlRequestData::NodeFlagChange(change)) = request else {
                    return status(-1);
                };
                if change.pnn == d.pnn {
                    return status(0);
                }
                let Some(old) = d.flags.get(change.pnn as usize).copied() else {
                    return status(-1);
                };
                if old & node_flags::DISCONNECTED != 0 {
                    return status(0);
                }
                let new = (old & node_flags::DISCONNECTED)
                    | (change.new_flags & !node_flags::DISCONNECTED);
                d.flags[change.pnn as usize] = new;
                if new != old && new == 0 && d.runstate <= Runstate::Startup {
                    // "Node became healthy - force recovery for startup".
                    d.recmode = RECOVERY_ACTIVE;
                }
                status(0)
            }
            ControlOpcode::SetBanState => {
                let Ok(ControlRequestData::BanState(ban)) = request else {
                    return status(-1);
                };
                if ban.pnn != d.pnn {
                    return status(-1);
                }
                let result = d.set_ban(now, ban.time);
                if ban.time != 0 {
                    self.record_ban(node);
                }
                status(result)
            }
            ControlOpcode::Setvnnmap => {
                let Ok(ControlRequestData::VnnMap(map)) = request else {
                    return status(-1);
                };
                if d.recmode != RECOVERY_ACTIVE {
                    return status(-1);
                }
                d.vnnmap = map;
                status(0)
            }
            ControlOpcode::StartRecovery | ControlOpcode::Ipreallocated => status(0),
            ControlOpcode::EndRecovery => {
                d.recoveries_ended += 1;
                if d.runstate == Runstate::FirstRecovery {
                    d.runstate = Runstate::Startup;
                    d.startup_at = Some(now.saturating_add(Duration::from_secs(1)));
                }
                status(0)
            }
            ControlOpcode::DbFreeze => {
                d.frozen = true;
                status(0)
            }
            ControlOpcode::DbTransactionStart => {
                let Ok(ControlRequestData::Transdb(t)) = request else {
                    return status(-1);
                };
                if !d.frozen || t.db_id != SIM_DB_ID {
                    return status(-1);
                }
                d.transaction = Some(t.tid);
                status(0)
            }
            ControlOpcode::DbTransactionCommit => {
                let Ok(ControlRequestData::Transdb(t)) = request else {
                    return status(-1);
                };
                if !d.frozen || d.transaction != Some(t.tid) {
                    return status(-1);
                }
                d.transaction = None;
                d.db_generation = t.tid;
                status(0)
            }
            ControlOpcode::DbThaw => {
                d.frozen = false;
                d.transaction = None;
                status(0)
            }
            other => {
                panic!("simulated daemon got unexpected control {}", other.name());
            }
        }
    }

    /// The daemon's own cluster-lock test of SET_RECMODE(NORMAL) finished.
    pub(crate) fn recmode_test_done(&mut self, node: Pnn, test: u64, result: ClusterMutexResult) {
        let Some(d) = self.daemon_mut(node) else {
            return;
        };
        let Some(reply_to) = d.recmode_tests.remove(&test) else {
            return;
        };
        let status = match result {
            ClusterMutexResult::Contended | ClusterMutexResult::Timeout => {
                d.recmode = RECOVERY_NORMAL;
                0
            }
            _ => -1,
        };
        self.send_reply(node, reply_to, status, Vec::new());
    }

    pub(crate) fn send_reply(&mut self, node: Pnn, reply_to: ReplyTo, status: i32, data: Vec<u8>) {
        match reply_to {
            ReplyTo::Local { client, token } => {
                self.reply_to_client(node, client, token, status, data)
            }
            ReplyTo::Remote { node: to, reqid } => {
                self.send_packet(
                    node,
                    to,
                    super::Packet::Reply {
                        reqid,
                        status,
                        data,
                    },
                );
            }
        }
    }

    /// A control from a local client (the recovery daemon or a helper).
    pub(crate) fn daemon_client_control(&mut self, node: Pnn, request: ClientRequest) {
        let ClientRequest {
            client,
            token,
            destnode,
            opcode,
            flags,
            data,
        } = request;
        let timeout = {
            let Some(d) = self.daemon_mut(node) else {
                return;
            };
            Duration::from_secs(u64::from(d.tunables.control_timeout()))
        };
        let dest = if destnode == CURRENT_NODE {
            node
        } else {
            destnode
        };
        if dest == node {
            let reply_to = ReplyTo::Local { client, token };
            if let ControlResult::Done(status, data) =
                self.exec_control(node, opcode, flags, &data, reply_to)
            {
                self.reply_to_client(node, client, token, status, data);
            }
            return;
        }
        let now = self.now;
        let Some(d) = self.daemon_mut(node) else {
            return;
        };
        if !d.connected(dest) {
            self.reply_to_client(node, client, token, -1, Vec::new());
            return;
        }
        let reqid = d.next_reqid;
        d.next_reqid = d.next_reqid.wrapping_add(1).max(1);
        d.forwards.insert(
            reqid,
            Forward {
                client,
                token,
                dest,
                deadline: now.saturating_add(timeout),
            },
        );
        self.send_packet(
            node,
            dest,
            super::Packet::Control {
                reqid,
                opcode,
                flags,
                data,
            },
        );
    }

    /// A message from a local client.
    pub(crate) fn daemon_client_message(
        &mut self,
        node: Pnn,
        destnode: u32,
        srvid: u64,
        data: Vec<u8>,
    ) {
        let Some(d) = self.daemon_mut(node) else {
            return;
        };
        let dest = if destnode == CURRENT_NODE {
            node
        } else {
            destnode
        };
        let targets: Vec<Pnn> = match dest {
            BROADCAST_ALL | BROADCAST_ACTIVE | BROADCAST_CONNECTED => d
                .flags
                .iter()
                .enumerate()
                .filter(|(i, f)| {
                    let i = u32::try_from(*i).unwrap_or(u32::MAX);
                    i == node
                        || match dest {
                            BROADCAST_ACTIVE => *f & node_flags::INACTIVE == 0,
                            _ => *f & (node_flags::DISCONNECTED | node_flags::DELETED) == 0,
                        }
                })
                .map(|(i, _)| u32::try_from(i).unwrap_or(u32::MAX))
                .collect(),
            single => vec![single],
        };
        for target in targets {
            if target == node {
                self.deliver_message(node, srvid, data.clone());
            } else if self.daemon_mut(node).is_some_and(|d| d.connected(target)) {
                self.send_packet(
                    node,
                    target,
                    super::Packet::Message {
                        srvid,
                        data: data.clone(),
                    },
                );
            }
        }
    }

    /// Hands a message to the local recovery daemon if it listens on `srvid`; anything else
    /// is kept for tests to inspect.
    pub(crate) fn deliver_message(&mut self, node: Pnn, srvid: u64, data: Vec<u8>) {
        let registered = self
            .daemon(node)
            .is_some_and(|d| d.registered.contains(&srvid));
        if registered {
            self.schedule_local(
                node,
                Event::RecoverdMessage {
                    node,
                    inc: self.nodes[node as usize].inc,
                    srvid,
                    data,
                },
            );
        } else {
            self.other_messages.push((node, srvid, data));
        }
    }

    /// A packet from another node's daemon.
    pub(crate) fn daemon_packet(&mut self, node: Pnn, from: Pnn, packet: super::Packet) {
        match packet {
            super::Packet::Control {
                reqid,
                opcode,
                flags,
                data,
            } => {
                let reply_to = ReplyTo::Remote { node: from, reqid };
                if let ControlResult::Done(status, data) =
                    self.exec_control(node, opcode, flags, &data, reply_to)
                {
                    self.send_reply(node, reply_to, status, data);
                }
            }
            super::Packet::Reply {
                reqid,
                status,
                data,
            } => {
                let Some(forward) = self
                    .daemon_mut(node)
                    .and_then(|d| d.forwards.remove(&reqid))
                else {
                    return;
                };
                self.reply_to_client(node, forward.client, forward.token, status, data);
            }
            super::Packet::Message { srvid, data } => self.deliver_message(node, srvid, data),
        }
    }

    /// The connection to `peer` went down (`ctdb_node_dead`).
    pub(crate) fn daemon_link_down(&mut self, node: Pnn, peer: Pnn) {
        let Some(d) = self.daemon_mut(node) else {
            return;
        };
        if let Some(f) = d.flags.get_mut(peer as usize) {
            if *f & node_flags::DISCONNECTED == 0 {
                *f |= node_flags::DISCONNECTED | node_flags::UNHEALTHY;
            }
        }
        let cancelled: Vec<u32> = d
            .forwards
            .iter()
            .filter(|(_, f)| f.dest == peer)
            .map(|(&r, _)| r)
            .collect();
        let mut replies = Vec::new();
        for reqid in cancelled {
            if let Some(f) = d.forwards.remove(&reqid) {
                replies.push(f);
            }
        }
        for f in replies {
            self.reply_to_client(node, f.client, f.token, -1, Vec::new());
        }
    }

    pub(crate) fn daemon_link_up(&mut self, node: Pnn, peer: Pnn) {
        if let Some(f) = self
            .daemon_mut(node)
            .and_then(|d| d.flags.get_mut(peer as usize))
        {
            *f &= !node_flags::DISCONNECTED;
        }
    }

    /// Ban expiry, start-up progress and forwarded-control timeouts.
    pub(crate) fn daemon_timers(&mut self, node: Pnn) {
        let now = self.now;
        let Some(d) = self.daemon_mut(node) else {
            return;
        };
        if d.ban_until.is_some_and(|t| now >= t) {
            d.ban_until = None;
            if d.frozen {
                *d.own_flags_mut() &= !node_flags::BANNED;
            } else {
                // "Banning timed out, but not all databases frozen yet".
                let period = d.tunables.recovery_ban_period();
                d.set_ban(now, period);
                self.record_ban(node);
            }
        }
        let Some(d) = self.daemon_mut(node) else {
            return;
        };
        if d.startup_at.is_some_and(|t| now >= t) {
            d.startup_at = None;
            d.runstate = Runstate::Running;
            d.healthy_at = Some(now.saturating_add(Duration::from_secs(1)));
        }
        if d.healthy_at.is_some_and(|t| now >= t) {
            d.healthy_at = None;
            *d.own_flags_mut() &= !node_flags::UNHEALTHY;
        }
        let expired: Vec<u32> = d
            .forwards
            .iter()
            .filter(|(_, f)| now >= f.deadline)
            .map(|(&r, _)| r)
            .collect();
        let mut replies = Vec::new();
        for reqid in expired {
            if let Some(f) = d.forwards.remove(&reqid) {
                replies.push(f);
            }
        }
        for f in replies {
            self.reply_to_client(node, f.client, f.token, -1, Vec::new());
        }
    }
}
