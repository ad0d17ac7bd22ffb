//! Models of `ctdb_recovery_helper` and `ctdb_takeover_helper`: ordinary clients of the local
//! daemon that run stock's control sequences (digest §4.7 and §4.8) with the records left out.
//! Every step goes to every node of the list and fails if any node fails or times out.

use super::daemon::SIM_DB_ID;
use super::{Client, ClientRequest, Event, Pnn, Sim};
use crate::common::clock::Instant;
use crate::protocol::control::{ControlReplyData, ControlRequestData};
use crate::protocol::header::CURRENT_NODE;
use crate::protocol::helper::EPIPE;
use crate::protocol::opcode::ControlOpcode;
use crate::protocol::types::{capabilities, node_flags, RecoveryMode, Transdb, VnnMap};
use crate::server::recoverd::HelperKind;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    LocalNodemap,
    RemoteNodemaps,
    Capabilities,
    RecmodeActive,
    StartRecovery,
    SetVnnmap,
    Freeze,
    TransactionStart,
    Commit,
    Thaw,
    RecmodeNormal,
    EndRecovery,
    TakeoverNodemap,
    Ipreallocated,
}

#[derive(Debug, Clone)]
pub(crate) struct HelperRun {
    pub(crate) kind: HelperKind,
    generation: u32,
    stage: Stage,
    nlist: Vec<Pnn>,
    caps: BTreeMap<Pnn, u32>,
    outstanding: BTreeMap<u64, Pnn>,
    replies: Vec<(Pnn, i32, Vec<u8>)>,
    deadline: Option<Instant>,
    timeout: Duration,
}

impl HelperRun {
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.deadline
    }
}

impl Sim {
    pub(crate) fn start_helper(&mut self, node: Pnn, kind: HelperKind, generation: u32) {
        let id = self.next_id();
        let tunables = self.nodes[node as usize]
            .daemon
            .as_ref()
            .map(|d| d.tunables)
            .unwrap_or_default();
        let (stage, timeout) = match kind {
            HelperKind::Recovery => (
                Stage::LocalNodemap,
                Duration::from_secs(u64::from(tunables.recover_timeout())),
            ),
            HelperKind::Takeover => (
                Stage::TakeoverNodemap,
                Duration::from_secs(u64::from(tunables.takeover_timeout())),
            ),
        };
        self.nodes[node as usize].helpers.insert(
            id,
            HelperRun {
                kind,
                generation,
                stage,
                nlist: Vec::new(),
                caps: BTreeMap::new(),
                outstanding: BTreeMap::new(),
                replies: Vec::new(),
                deadline: None,
                timeout,
            },
        );
        self.helper_send(
            node,
            id,
            ControlOpcode::GetNodemap,
            &[CURRENT_NODE],
            Vec::new(),
        );
    }

    /// SIGKILL: forget the run; its late replies find nothing.
    pub(crate) fn kill_helper(&mut self, node: Pnn, kind: HelperKind) {
        self.nodes[node as usize]
            .helpers
            .retain(|_, run| run.kind != kind);
    }

    fn helper_send(
        &mut self,
        node: Pnn,
        id: u64,
        opcode: ControlOpcode,
        dests: &[u32],
        data: Vec<u8>,
    ) {
        let now = self.now;
        let tokens: Vec<u64> = dests.iter().map(|_| self.next_id()).collect();
        let Some(run) = self.nodes[node as usize].helpers.get_mut(&id) else {
            return;
        };
        run.replies.clear();
        run.deadline = Some(now.saturating_add(run.timeout));
        for (&token, &dest) in tokens.iter().zip(dests) {
            let pnn = if dest == CURRENT_NODE { node } else { dest };
            run.outstanding.insert(token, pnn);
        }
        if dests.is_empty() {
            run.deadline = None;
            self.helper_advance(node, id);
            return;
        }
        for (&token, &dest) in tokens.iter().zip(dests) {
            self.schedule_local(
                node,
                Event::ClientControl {
                    node,
                    inc: self.nodes[node as usize].inc,
                    request: ClientRequest {
                        client: Client::Helper(id),
                        token,
                        destnode: dest,
                        opcode,
                        flags: 0,
                        data: data.clone(),
                    },
                },
            );
        }
    }

    pub(crate) fn helper_reply(
        &mut self,
        node: Pnn,
        id: u64,
        token: u64,
        status: i32,
        data: Vec<u8>,
    ) {
        let Some(run) = self.nodes[node as usize].helpers.get_mut(&id) else {
            return;
        };
        let Some(pnn) = run.outstanding.remove(&token) else {
            return;
        };
        run.replies.push((pnn, status, data));
        if run.outstanding.is_empty() {
            run.deadline = None;
            self.helper_advance(node, id);
        }
    }

    pub(crate) fn helper_timers(&mut self, node: Pnn) {
        let now = self.now;
        let expired: Vec<u64> = self.nodes[node as usize]
            .helpers
            .iter()
            .filter(|(_, r)| r.deadline.is_some_and(|d| now >= d))
            .map(|(&id, _)| id)
            .collect();
        for id in expired {
            self.helper_finish(node, id, EPIPE);
        }
    }

    fn helper_finish(&mut self, node: Pnn, id: u64, result: i32) {
        let Some(run) = self.nodes[node as usize].helpers.remove(&id) else {
            return;
        };
        self.schedule_local(
            node,
            Event::HelperDone {
                node,
                inc: self.nodes[node as usize].inc,
                kind: run.kind,
                result,
            },
        );
    }

    fn helper_advance(&mut self, node: Pnn, id: u64) {
        let Some(run) = self.nodes[node as usize].helpers.get(&id).cloned() else {
            return;
        };
        if run.replies.iter().any(|(_, status, _)| *status != 0) {
            let result = if run.kind == HelperKind::Recovery {
                EPIPE
            } else {
                1
            };
            return self.helper_finish(node, id, result);
        }
        let nodemap_of = |data: &[u8]| match crate::protocol::control::pull_reply_data(
            ControlOpcode::GetNodemap,
            data,
        ) {
            Ok(ControlReplyData::NodeMap(m)) => Some(m),
            _ => None,
        };
        let nlist = run.nlist.clone();
        let generation = run.generation;
        let (next, opcode, dests, data): (Stage, ControlOpcode, Vec<u32>, Vec<u8>) = match run.stage
        {
            Stage::LocalNodemap => {
                let Some(map) = run.replies.first().and_then(|(_, _, d)| nodemap_of(d)) else {
                    return self.helper_finish(node, id, EPIPE);
                };
                let candidates = map
                    .nodes
                    .iter()
                    .filter(|n| n.flags & node_flags::DISCONNECTED == 0)
                    .map(|n| n.pnn)
                    .collect();
                (
                    Stage::RemoteNodemaps,
                    ControlOpcode::GetNodemap,
                    candidates,
                    Vec::new(),
                )
            }
            Stage::RemoteNodemaps => {
                let mut nlist: Vec<Pnn> = Vec::new();
                for (pnn, _, data) in &run.replies {
                    let Some(map) = nodemap_of(data) else {
                        return self.helper_finish(node, id, EPIPE);
                    };
                    let own_active = map
                        .nodes
                        .iter()
                        .find(|n| n.pnn == *pnn)
                        .is_some_and(|n| n.flags & node_flags::INACTIVE == 0);
                    if own_active {
                        nlist.push(*pnn);
                    }
                }
                nlist.sort_unstable();
                if let Some(r) = self.nodes[node as usize].helpers.get_mut(&id) {
                    r.nlist = nlist.clone();
                }
                (
                    Stage::Capabilities,
                    ControlOpcode::GetCapabilities,
                    nlist,
                    Vec::new(),
                )
            }
            Stage::Capabilities => {
                let mut caps = BTreeMap::new();
                for (pnn, _, data) in &run.replies {
                    if let Ok(ControlReplyData::Capabilities(c)) =
                        crate::protocol::control::pull_reply_data(
                            ControlOpcode::GetCapabilities,
                            data,
                        )
                    {
                        caps.insert(*pnn, c);
                    }
                }
                if let Some(r) = self.nodes[node as usize].helpers.get_mut(&id) {
                    r.caps = caps;
                }
                (
                    Stage::RecmodeActive,
                    ControlOpcode::SetRecmode,
                    nlist,
                    ControlRequestData::RecMode(RecoveryMode::Active).to_bytes(),
                )
            }
            Stage::RecmodeActive => (
                Stage::StartRecovery,
                ControlOpcode::StartRecovery,
                nlist,
                Vec::new(),
            ),
            Stage::StartRecovery => {
                let mut map: Vec<Pnn> = nlist
                    .iter()
                    .copied()
                    .filter(|p| {
                        run.caps
                            .get(p)
                            .is_some_and(|c| c & capabilities::LMASTER != 0)
                    })
                    .collect();
                if map.is_empty() {
                    map.push(node);
                }
                (
                    Stage::SetVnnmap,
                    ControlOpcode::Setvnnmap,
                    nlist,
                    ControlRequestData::VnnMap(VnnMap { generation, map }).to_bytes(),
                )
            }
            Stage::SetVnnmap => (
                Stage::Freeze,
                ControlOpcode::DbFreeze,
                nlist,
                ControlRequestData::DbId(SIM_DB_ID).to_bytes(),
            ),
            Stage::Freeze => (
                Stage::TransactionStart,
                ControlOpcode::DbTransactionStart,
                nlist,
                ControlRequestData::Transdb(Transdb {
                    db_id: SIM_DB_ID,
                    tid: generation,
                })
                .to_bytes(),
            ),
            Stage::TransactionStart => (
                Stage::Commit,
                ControlOpcode::DbTransactionCommit,
                nlist,
                ControlRequestData::Transdb(Transdb {
                    db_id: SIM_DB_ID,
                    tid: generation,
                })
                .to_bytes(),
            ),
            Stage::Commit => (
                Stage::Thaw,
                ControlOpcode::DbThaw,
                nlist,
                ControlRequestData::DbId(SIM_DB_ID).to_bytes(),
            ),
            Stage::Thaw => (
                Stage::RecmodeNormal,
                ControlOpcode::SetRecmode,
                nlist,
                ControlRequestData::RecMode(RecoveryMode::Normal).to_bytes(),
            ),
            Stage::RecmodeNormal => (
                Stage::EndRecovery,
                ControlOpcode::EndRecovery,
                nlist,
                Vec::new(),
            ),
            Stage::EndRecovery | Stage::Ipreallocated => {
                return self.helper_finish(node, id, 0);
            }
            Stage::TakeoverNodemap => {
                let Some(map) = run.replies.first().and_then(|(_, _, d)| nodemap_of(d)) else {
                    return self.helper_finish(node, id, 1);
                };
                let connected = map
                    .nodes
                    .iter()
                    .filter(|n| n.flags & node_flags::DISCONNECTED == 0)
                    .map(|n| n.pnn)
                    .collect();
                (
                    Stage::Ipreallocated,
                    ControlOpcode::Ipreallocated,
                    connected,
                    Vec::new(),
                )
            }
        };
        if let Some(r) = self.nodes[node as usize].helpers.get_mut(&id) {
            r.stage = next;
        }
        self.helper_send(node, id, opcode, &dests, data);
    }
}
