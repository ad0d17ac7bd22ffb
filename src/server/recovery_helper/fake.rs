//! A simulated cluster behind the [`Transport`] trait, for unit tests of the recovery logic.
//!
//! Each node answers the controls the helper sends with the semantics of stock's daemon side
//! (`ctdb_freeze.c`, `ctdb_recover.c`): freezing, recovery transactions, wipes, pulls as
//! messages before the reply, pushes into the open transaction and commits. Failures are
//! injected per node and opcode.

use super::transport::{Disconnected, MultiOutcome, Outcome, Payload, Request, Transport};
use crate::common::tdb::jenkins_hash;
use crate::protocol::basic::Marshal;
use crate::protocol::control::{
    pull_request_data, ControlReplyData, ControlRequestData, CTRL_FLAG_ATTACH_RECOVERY,
};
use crate::protocol::ltdb::{LtdbHeader, LTDB_HEADER_LEN, REC_RO_FLAGS};
use crate::protocol::opcode::ControlOpcode;
use crate::protocol::packet::ReplyControl;
use crate::protocol::types::{
    capabilities, db_flags, Dbid, DbidMap, NodeAndFlags, NodeMap, RecBuffer, RecData, RecoveryMode,
    TunableList, VnnMap,
};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Key → ltdb header ‖ value.
pub type Records = BTreeMap<Vec<u8>, Vec<u8>>;

pub const SEQNUM_KEY: &[u8] = b"__db_sequence_number__\0";

pub fn db_id_of(name: &str) -> u32 {
    let mut bytes = name.as_bytes().to_vec();
    bytes.push(0);
    jenkins_hash(&bytes)
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FakeDb {
    pub name: String,
    pub flags: u8,
    /// Key → ltdb header ‖ value.
    pub records: BTreeMap<Vec<u8>, Vec<u8>>,
    pub frozen: bool,
    /// The open recovery transaction: its id and the records as they will be committed.
    pub transaction: Option<(u32, Records)>,
    pub generation: u32,
}

impl FakeDb {
    pub fn new(name: &str, flags: u8) -> Self {
        FakeDb {
            name: name.to_owned(),
            flags,
            generation: 1,
            ..FakeDb::default()
        }
    }

    pub fn put(&mut self, key: &[u8], header: LtdbHeader, value: &[u8]) {
        let mut data = header.to_bytes();
        data.extend_from_slice(value);
        self.records.insert(key.to_vec(), data);
    }

    fn seqnum(&self) -> u64 {
        self.records
            .get(SEQNUM_KEY)
            .and_then(|data| data.get(LTDB_HEADER_LEN..LTDB_HEADER_LEN + 8))
            .and_then(|bytes| bytes.try_into().ok())
            .map_or(0, u64::from_ne_bytes)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeNode {
    pub pnn: u32,
    /// The node's flags as it reports them about itself.
    pub own_flags: u32,
    pub caps: u32,
    pub dbs: BTreeMap<u32, FakeDb>,
    pub recmode: RecoveryMode,
    pub vnnmap: VnnMap,
    /// Opcodes this node answers with the given status.
    pub fail: BTreeMap<ControlOpcode, i32>,
    /// Opcodes that fail only this many more times.
    pub fail_times: BTreeMap<ControlOpcode, u32>,
    /// Opcodes this node never answers.
    pub silent: BTreeSet<ControlOpcode>,
    /// Added to the record count in DB_PULL replies.
    pub pull_count_error: u32,
    pub ban: Option<u32>,
    pub recoveries_started: u32,
    pub recoveries_ended: u32,
    /// An active push: srvid, db id, records received.
    push: Option<(u64, u32, u32)>,
}

impl FakeNode {
    pub fn new(pnn: u32) -> Self {
        FakeNode {
            pnn,
            own_flags: 0,
            caps: capabilities::DEFAULT,
            dbs: BTreeMap::new(),
            recmode: RecoveryMode::Normal,
            vnnmap: VnnMap {
                generation: 1,
                map: Vec::new(),
            },
            fail: BTreeMap::new(),
            fail_times: BTreeMap::new(),
            silent: BTreeSet::new(),
            pull_count_error: 0,
            ban: None,
            recoveries_started: 0,
            recoveries_ended: 0,
            push: None,
        }
    }

    pub fn db(&mut self, name: &str, flags: u8) -> &mut FakeDb {
        self.dbs
            .entry(db_id_of(name))
            .or_insert_with(|| FakeDb::new(name, flags))
    }
}

/// One control as the cluster saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sent {
    pub pnn: u32,
    pub opcode: ControlOpcode,
    pub flags: u32,
    pub data: ControlRequestData,
}

#[derive(Debug)]
pub struct FakeCluster {
    pub local: u32,
    pub nodes: Vec<FakeNode>,
    /// The flags the local node's node map shows for each node.
    pub local_view: Vec<u32>,
    pub tunables: TunableList,
    /// Records per DB_PULL message.
    pub pull_chunk: usize,
    pub sent: Vec<Sent>,
    /// Every message sent: destination, srvid, records.
    pub messages: Vec<(u32, u64, u32)>,
    pub registered: BTreeSet<u64>,
    pub timeout: Option<Duration>,
}

pub fn default_tunables() -> TunableList {
    TunableList {
        recover_timeout: 30,
        database_hash_size: 131,
        enable_bans: 1,
        recovery_ban_period: 300,
        rec_buffer_size_limit: 1_000_000,
        ..TunableList::default()
    }
}

impl FakeCluster {
    pub fn new(nodes: u32, local: u32) -> Self {
        FakeCluster {
            local,
            nodes: (0..nodes).map(FakeNode::new).collect(),
            local_view: vec![0; nodes as usize],
            tunables: default_tunables(),
            pull_chunk: 3,
            sent: Vec::new(),
            messages: Vec::new(),
            registered: BTreeSet::new(),
            timeout: None,
        }
    }

    pub fn node(&mut self, pnn: u32) -> &mut FakeNode {
        &mut self.nodes[pnn as usize]
    }

    /// The opcodes sent, in order, each with its destinations.
    pub fn trace(&self) -> Vec<(ControlOpcode, Vec<u32>)> {
        let mut out: Vec<(ControlOpcode, Vec<u32>)> = Vec::new();
        for sent in &self.sent {
            match out.last_mut() {
                Some((opcode, pnns)) if *opcode == sent.opcode && !pnns.contains(&sent.pnn) => {
                    pnns.push(sent.pnn)
                }
                _ => out.push((sent.opcode, vec![sent.pnn])),
            }
        }
        out
    }

    fn reply(status: i32, data: ControlReplyData) -> Outcome {
        Ok(ReplyControl {
            status,
            data: data.to_bytes(),
            errmsg: Vec::new(),
        })
    }

    fn ok(data: ControlReplyData) -> Outcome {
        Self::reply(0, data)
    }

    fn status(status: i32) -> Outcome {
        Self::reply(status, ControlReplyData::Empty)
    }

    fn nodemap_for(&self, index: usize) -> NodeMap {
        NodeMap {
            nodes: (0..self.nodes.len())
                .map(|j| NodeAndFlags {
                    pnn: self.nodes[j].pnn,
                    flags: if j == index {
                        self.nodes[j].own_flags
                    } else {
                        self.local_view[j]
                    },
                    addr: Default::default(),
                })
                .collect(),
        }
    }

    /// Handles one control on node `pnn`; DB_PULL records go to `pulled`.
    fn handle(&mut self, pnn: u32, request: &Request, pulled: &mut Vec<Vec<u8>>) -> Outcome {
        let data = pull_request_data(request.opcode, &request.data)
            .unwrap_or_else(|_| ControlRequestData::Raw(request.data.clone()));
        self.sent.push(Sent {
            pnn,
            opcode: request.opcode,
            flags: request.flags,
            data: data.clone(),
        });
        let Some(index) = self.nodes.iter().position(|n| n.pnn == pnn) else {
            return Err(libc::ETIMEDOUT);
        };
        {
            let node = &mut self.nodes[index];
            if node.silent.contains(&request.opcode) {
                return Err(libc::ETIMEDOUT);
            }
            if let Some(&status) = node.fail.get(&request.opcode) {
                return Self::status(status);
            }
            if let Some(left) = node.fail_times.get_mut(&request.opcode) {
                if *left > 0 {
                    *left -= 1;
                    return Self::status(-1);
                }
            }
        }
        let nodemap = self.nodemap_for(index);
        let tunables = self.tunables;
        let chunk = self.pull_chunk.max(1);
        let node = &mut self.nodes[index];
        use ControlOpcode as Op;
        use ControlRequestData as D;
        match (request.opcode, data) {
            (Op::GetAllTunables, _) => Self::ok(ControlReplyData::TunableList(Box::new(tunables))),
            (Op::GetNodemap, _) => Self::ok(ControlReplyData::NodeMap(nodemap)),
            (Op::GetCapabilities, _) => Self::ok(ControlReplyData::Capabilities(node.caps)),
            (Op::GetDbmap, _) => Self::ok(ControlReplyData::DbidMap(DbidMap {
                dbs: node
                    .dbs
                    .iter()
                    .map(|(&db_id, db)| Dbid {
                        db_id,
                        flags: db.flags,
                    })
                    .collect(),
            })),
            (Op::SetRecmode, D::RecMode(mode)) => {
                node.recmode = mode;
                Self::status(0)
            }
            (Op::StartRecovery, _) => {
                node.recoveries_started += 1;
                Self::status(0)
            }
            (Op::EndRecovery, _) => {
                node.recoveries_ended += 1;
                Self::status(0)
            }
            (Op::Getvnnmap, _) => Self::ok(ControlReplyData::VnnMap(node.vnnmap.clone())),
            (Op::Setvnnmap, D::VnnMap(map)) => {
                if node.recmode != RecoveryMode::Active {
                    return Self::status(-1);
                }
                node.vnnmap = map;
                Self::status(0)
            }
            (Op::GetDbname, D::DbId(db_id)) => match node.dbs.get(&db_id) {
                Some(db) => Self::ok(ControlReplyData::DbName(db.name.clone())),
                None => Self::status(-1),
            },
            (Op::DbAttach | Op::DbAttachPersistent | Op::DbAttachReplicated, D::DbName(name)) => {
                assert_eq!(request.flags, CTRL_FLAG_ATTACH_RECOVERY);
                let flags = match request.opcode {
                    Op::DbAttachPersistent => db_flags::PERSISTENT,
                    Op::DbAttachReplicated => db_flags::REPLICATED,
                    _ => 0,
                };
                let db_id = db_id_of(&name);
                node.db(&name, flags);
                Self::ok(ControlReplyData::DbId(db_id))
            }
            (Op::Getdbpath, D::DbId(db_id)) => match node.dbs.get(&db_id) {
                Some(db) => Self::ok(ControlReplyData::DbPath(format!(
                    "/fake/{}.{}",
                    db.name, node.pnn
                ))),
                None => Self::status(-1),
            },
            (Op::DbFreeze, D::DbId(db_id)) => match node.dbs.get_mut(&db_id) {
                Some(db) => {
                    db.frozen = true;
                    Self::status(0)
                }
                None => Self::status(-1),
            },
            (Op::DbThaw, D::DbId(db_id)) => match node.dbs.get_mut(&db_id) {
                Some(db) => {
                    db.frozen = false;
                    db.transaction = None;
                    Self::status(0)
                }
                None => Self::status(-1),
            },
            (Op::DbTransactionStart, D::Transdb(t)) => match node.dbs.get_mut(&t.db_id) {
                Some(db) if db.frozen => {
                    db.transaction = Some((t.tid, db.records.clone()));
                    Self::status(0)
                }
                _ => Self::status(-1),
            },
            (Op::WipeDatabase, D::Transdb(t)) => match node.dbs.get_mut(&t.db_id) {
                Some(FakeDb {
                    frozen: true,
                    transaction: Some((tid, staged)),
                    ..
                }) if *tid == t.tid => {
                    staged.clear();
                    Self::status(0)
                }
                _ => Self::status(-1),
            },
            (Op::DbTransactionCommit, D::Transdb(t)) => match node.dbs.get_mut(&t.db_id) {
                Some(db) if db.frozen && db.transaction.as_ref().map(|x| x.0) == Some(t.tid) => {
                    if let Some((_, staged)) = db.transaction.take() {
                        db.records = staged;
                    }
                    db.generation = t.tid;
                    Self::status(0)
                }
                _ => Self::status(-1),
            },
            (Op::GetDbSeqnum, D::DbIdPadded(db_id)) => match node.dbs.get(&db_id) {
                Some(db) => Self::ok(ControlReplyData::Seqnum(db.seqnum())),
                None => Self::status(-1),
            },
            (Op::DbPull, D::PulldbExt(ext)) => match node.dbs.get(&ext.db_id) {
                Some(db) if db.frozen => {
                    let records: Vec<RecData> = db
                        .records
                        .iter()
                        .map(|(k, v)| RecData {
                            reqid: 0,
                            key: k.clone(),
                            data: v.clone(),
                        })
                        .collect();
                    let count = records.len() as u32;
                    for part in records.chunks(chunk) {
                        pulled.push(
                            RecBuffer {
                                db_id: ext.db_id,
                                records: part.to_vec(),
                            }
                            .to_bytes(),
                        );
                    }
                    if records.is_empty() {
                        pulled.push(
                            RecBuffer {
                                db_id: ext.db_id,
                                records: Vec::new(),
                            }
                            .to_bytes(),
                        );
                    }
                    Self::ok(ControlReplyData::NumRecords(count + node.pull_count_error))
                }
                _ => Self::status(-1),
            },
            (Op::DbPushStart, D::PulldbExt(ext)) => match node.dbs.get(&ext.db_id) {
                Some(db) if db.frozen => {
                    node.push = Some((ext.srvid, ext.db_id, 0));
                    Self::status(0)
                }
                _ => Self::status(-1),
            },
            (Op::DbPushConfirm, D::DbId(db_id)) => match node.push.take() {
                Some((_, push_db, count)) if push_db == db_id => {
                    Self::ok(ControlReplyData::NumRecords(count))
                }
                _ => Self::status(-1),
            },
            (Op::RegisterSrvid, _) => {
                self.registered.insert(request.srvid);
                Self::status(0)
            }
            (Op::DeregisterSrvid, _) => {
                let known = self.registered.remove(&request.srvid);
                Self::status(if known { 0 } else { -1 })
            }
            (Op::SetBanState, D::BanState(ban)) => {
                if ban.pnn != node.pnn {
                    return Self::status(-1);
                }
                node.ban = Some(ban.time);
                Self::status(0)
            }
            _ => Self::status(-1),
        }
    }

    fn deliver(&mut self, pnn: u32, srvid: u64, data: &[u8]) {
        let Some(node) = self.nodes.iter_mut().find(|n| n.pnn == pnn) else {
            return;
        };
        let Some((push_srvid, db_id, count)) = node.push.as_mut() else {
            return;
        };
        if *push_srvid != srvid {
            return;
        }
        let Ok((buffer, _)) = RecBuffer::pull(data) else {
            return;
        };
        self.messages
            .push((pnn, srvid, buffer.records.len() as u32));
        let Some(FakeDb {
            transaction: Some((_, staged)),
            ..
        }) = node.dbs.get_mut(db_id)
        else {
            return;
        };
        for record in buffer.records {
            let Some(mut header) = record.header() else {
                continue;
            };
            header.flags &= !REC_RO_FLAGS;
            let mut data = header.to_bytes();
            data.extend_from_slice(record.value());
            staged.insert(record.key, data);
            *count += 1;
        }
    }
}

impl Transport for FakeCluster {
    fn pnn(&self) -> u32 {
        self.local
    }

    fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = Some(timeout);
    }

    fn control_multi(
        &mut self,
        pnns: &[u32],
        request: &Request,
    ) -> Result<MultiOutcome, Disconnected> {
        let mut ignored = Vec::new();
        let outcomes: Vec<Outcome> = pnns
            .iter()
            .map(|&pnn| self.handle(pnn, request, &mut ignored))
            .collect();
        let order: Vec<usize> = (0..pnns.len()).collect();
        Ok(MultiOutcome::from_arrivals(outcomes, &order))
    }

    fn control_collecting(
        &mut self,
        pnn: u32,
        request: &Request,
        srvid: u64,
        sink: &mut dyn FnMut(Payload),
    ) -> Result<Outcome, Disconnected> {
        let mut pulled = Vec::new();
        let outcome = self.handle(pnn, request, &mut pulled);
        if self.registered.contains(&srvid) {
            for message in pulled {
                sink(Payload::whole(message));
            }
        }
        Ok(outcome)
    }

    /// The pulls' messages arrive interleaved: one message of each control per round, the
    /// last control's first, so that later nodes' records tend to arrive before earlier ones.
    fn controls_collecting(
        &mut self,
        requests: &[(u32, Request)],
        srvids: &[u64],
        sink: &mut dyn FnMut(usize, Payload),
    ) -> Result<Vec<Outcome>, Disconnected> {
        let mut outcomes = Vec::with_capacity(requests.len());
        let mut pulled: Vec<Vec<Vec<u8>>> = Vec::with_capacity(requests.len());
        for (pnn, request) in requests {
            let mut messages = Vec::new();
            outcomes.push(self.handle(*pnn, request, &mut messages));
            pulled.push(messages);
        }
        let rounds = pulled.iter().map(Vec::len).max().unwrap_or(0);
        for round in 0..rounds {
            for (index, messages) in pulled.iter().enumerate().rev() {
                let registered = srvids
                    .get(index)
                    .is_some_and(|srvid| self.registered.contains(srvid));
                if let (true, Some(message)) = (registered, messages.get(round)) {
                    sink(index, Payload::whole(message.clone()));
                }
            }
        }
        Ok(outcomes)
    }

    fn message_multi(&mut self, pnns: &[u32], srvid: u64, data: &[u8]) -> Result<(), Disconnected> {
        for &pnn in pnns {
            self.deliver(pnn, srvid, data);
        }
        Ok(())
    }
}
