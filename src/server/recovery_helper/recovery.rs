//! The recovery itself (`recovery_send` and everything below it in
//! `ctdb/server/ctdb_recovery_helper.c`), generic over the [`Transport`] to the local daemon.
//!
//! The steps, their order, the nodes each control goes to, the merge and push rules, the
//! retries, the ban credits and the log lines are stock's. One deliberate difference: stock
//! recovers all databases concurrently, this helper recovers them one after the other (each
//! with up to three attempts). Every database is recovered by its own, independent sequence
//! of controls in both, so the resulting databases are the same; only the interleaving of
//! the traffic (and of the log lines after the "recover database" ones, which are all
//! logged up front as stock logs them when it starts the parallel recoveries) differs.
//!
//! Two more are [`Extensions`] (off with `CTDB_RS_RECOVERY_STOCK=1`): a volatile database's
//! records are pushed only to their lmaster under the new vnn map, and it is pulled from all
//! nodes at once (`CTDB_RS_RECOVERY_CONCURRENT_PULLS=0` pulls one node after the other); see
//! `ARCHITECTURE.md`, "The recovery helper merges in memory ...". Without them, the traffic
//! per database is stock's.
//!
//! Two stock quirks are kept because they decide who gets ban credits or how records look:
//! the GET_DBNAME check blames the i-th node of the recovery's node list rather than the i-th
//! node holding the database, and replicated databases get their records' dmaster rewritten
//! like volatile ones. One is not: on a database name mismatch stock reports error 0, which
//! never completes the request and stalls the helper; here the attempt fails with `EIO`.

use super::lists::{DbEntry, DbList, DbListError, NodeList};
use super::recdb::{lmasters_covered, AddError, Destination, RecDb};
use super::transport::{Disconnected, Outcome, Payload, Request, Transport};
use crate::protocol::control::{
    pull_reply_data, ControlReplyData, ControlRequestData, CTRL_FLAG_ATTACH_RECOVERY,
};
use crate::protocol::opcode::ControlOpcode;
use crate::protocol::packet::ReplyControl;
use crate::protocol::srvid;
use crate::protocol::types::{
    node_flags, BanState, NodeMap, PulldbExt, RecoveryMode, Transdb, TunableList, VnnMap,
    INVALID_GENERATION, LMASTER_ANY, UNKNOWN_PNN,
};
use log::{debug, error, info, trace, warn};
use std::time::Duration;

/// Attempts per database before the recovery gives up on it (`NUM_RETRIES`); also the ban
/// credits that get a node banned.
pub const NUM_RETRIES: u32 = 3;

/// Why a recovery did not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryError {
    /// The recovery failed with this error (an errno, or a control's status).
    Failed(i32),
    /// The connection to the local daemon was lost.
    Disconnected,
}

impl From<Disconnected> for RecoveryError {
    fn from(_: Disconnected) -> Self {
        RecoveryError::Disconnected
    }
}

/// Result of one step: the outer error aborts everything, the inner one is the step's
/// failure (an errno or status), which the caller may retry.
type Step<T> = Result<Result<T, i32>, Disconnected>;

/// The environment variable that makes the helper behave like stock's (see
/// [`Extensions::from_env`]).
pub const ENV_STOCK: &str = "CTDB_RS_RECOVERY_STOCK";

/// The environment variable that turns [`Extensions::concurrent_pulls`] off (`0`, `no`,
/// `false`) or on.
pub const ENV_CONCURRENT_PULLS: &str = "CTDB_RS_RECOVERY_CONCURRENT_PULLS";

/// This helper's deliberate departures from stock's recovery; [`Extensions::STOCK`] has
/// them all off (for comparisons with stock's helper).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extensions {
    /// A volatile database is pulled from every node at once instead of one node after the
    /// other. The merge gives the same result in any arrival order (see
    /// [`super::recdb::replaces`]). The records of all nodes then reach us through the local
    /// daemon at once, faster than we merge them; a ctdb-rs daemon holds its node links back
    /// while our queue is long (its `shell::pacing`), stock's queues them without limit.
    pub concurrent_pulls: bool,
    /// The records of a volatile (neither persistent nor replicated) database go only to
    /// their lmaster under the new vnn map, as its dmaster, instead of to every node with
    /// the leader as dmaster. Every node still wipes its copy, so the authoritative copy at
    /// the lmaster is the only one left, which is exactly what a node asks for when it
    /// lacks a record.
    pub partitioned_push: bool,
    /// When several nodes tie on the highest `__db_sequence_number__` of a persistent or
    /// replicated database, the copy comes from the first of them that belongs to the
    /// leader's current vnn map (the nodes of the last generation), not simply the first.
    /// A node that was away (killed, disconnected) can come back with a commit the others
    /// never finished; while it was away they committed their own transaction under the same
    /// sequence number, and that one may have been acknowledged. Stock takes the lowest pnn
    /// and so may pick the returning node's copy. Without a valid vnn map on the leader (it
    /// has just started itself) the choice is stock's.
    pub seqnum_tie_prefers_members: bool,
}

impl Extensions {
    pub const STOCK: Extensions = Extensions {
        concurrent_pulls: false,
        partitioned_push: false,
        seqnum_tie_prefers_members: false,
    };

    /// [`Extensions::STOCK`] when [`ENV_STOCK`] is set to `1`, `yes` or `true`; else the
    /// default, with the concurrent pulls off if [`ENV_CONCURRENT_PULLS`] is `0`, `no` or
    /// `false`.
    pub fn from_env<'a>(var: impl Fn(&str) -> Option<&'a str>) -> Self {
        let is = |name: &str, words: [&str; 3]| {
            var(name).is_some_and(|v| words.iter().any(|t| v.trim().eq_ignore_ascii_case(t)))
        };
        if is(ENV_STOCK, ["1", "yes", "true"]) {
            return Extensions::STOCK;
        }
        Extensions {
            concurrent_pulls: !is(ENV_CONCURRENT_PULLS, ["0", "no", "false"]),
            ..Extensions::default()
        }
    }
}

impl Default for Extensions {
    fn default() -> Self {
        Extensions {
            concurrent_pulls: true,
            partitioned_push: true,
            seqnum_tie_prefers_members: true,
        }
    }
}

/// What a recovery needs besides the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryParams {
    /// The new generation (argv[3]); also the transaction id of every database.
    pub generation: u32,
    pub extensions: Extensions,
}

/// Runs a whole recovery.
pub fn recover<T: Transport>(
    transport: &mut T,
    params: &RecoveryParams,
) -> Result<(), RecoveryError> {
    let pnn = transport.pnn();
    let mut run = Run {
        transport,
        params,
        pnn,
        last_srvid: srvid::RECOVERY,
        tunables: TunableList::default(),
        nlist: NodeList::new(0),
        vnnmap: Vec::new(),
        members: Vec::new(),
    };
    match run.run()? {
        Ok(()) => Ok(()),
        Err(ret) => Err(RecoveryError::Failed(ret)),
    }
}

struct Run<'a, T: Transport> {
    transport: &'a mut T,
    params: &'a RecoveryParams,
    pnn: u32,
    /// The last srvid used for a pull or push (`srvid_next` pre-increments).
    last_srvid: u64,
    tunables: TunableList,
    nlist: NodeList,
    /// The vnn map this recovery sets (its lmasters decide a partitioned push).
    vnnmap: Vec<u32>,
    /// The leader's vnn map before this recovery, for
    /// [`Extensions::seqnum_tie_prefers_members`]; empty when unknown or unused.
    members: Vec<u32>,
}

fn parse(opcode: ControlOpcode, reply: &ReplyControl) -> Option<ControlReplyData> {
    pull_reply_data(opcode, &reply.data).ok()
}

fn request(opcode: ControlOpcode, data: ControlRequestData) -> Request {
    Request::new(opcode, data)
}

/// The node whose copy of a persistent database a recovery takes, and its sequence number:
/// the first (in `seqnums` order) with the highest number, except that on a tie the first
/// tied node listed in `members` wins (stock: strictly the first; `members` empty).
fn highest_seqnum(seqnums: &[(u32, u64)], members: &[u32]) -> Option<(u32, u64)> {
    let max = seqnums.iter().map(|&(_, seqnum)| seqnum).max()?;
    let mut tied = seqnums.iter().filter(|&&(_, seqnum)| seqnum == max);
    let first = *tied.clone().next()?;
    Some(
        tied.find(|(pnn, _)| members.contains(pnn))
            .copied()
            .unwrap_or(first),
    )
}

/// The failure of a control sent to several nodes: the error and the node stock blames.
struct MultiFailure {
    ret: i32,
    pnn: u32,
}

impl<T: Transport> Run<'_, T> {
    fn next_srvid(&mut self) -> u64 {
        self.last_srvid = self.last_srvid.wrapping_add(1);
        self.last_srvid
    }

    /// A control to every node of `pnns`. On failure it logs `<what> on node <pnn>, ret=<ret>`
    /// for the node that failed first, as stock does.
    fn multi(
        &mut self,
        pnns: &[u32],
        request: &Request,
        what: impl FnOnce() -> String,
    ) -> Result<Result<Vec<ReplyControl>, MultiFailure>, Disconnected> {
        if pnns.is_empty() {
            // Stock's client library refuses a control to no nodes, which the helper reports
            // as an allocation failure.
            return Ok(Err(MultiFailure {
                ret: libc::ENOMEM,
                pnn: UNKNOWN_PNN,
            }));
        }
        let outcome = self.transport.control_multi(pnns, request)?;
        if let Some((ret, index)) = outcome.error() {
            let pnn = pnns.get(index).copied().unwrap_or(UNKNOWN_PNN);
            error!("{} on node {pnn}, ret={ret}", what());
            return Ok(Err(MultiFailure { ret, pnn }));
        }
        Ok(Ok(outcome.into_replies().unwrap_or_default()))
    }

    /// [`Run::multi`] to the recovery's node list, for steps whose failure is just an error.
    fn multi_nodes(&mut self, request: &Request, what: impl FnOnce() -> String) -> Step<()> {
        let pnns = self.nlist.pnns();
        Ok(self
            .multi(&pnns, request, what)?
            .map(|_| ())
            .map_err(|f| f.ret))
    }

    fn single(&mut self, pnn: u32, request: &Request) -> Result<Outcome, Disconnected> {
        self.transport.control(pnn, request)
    }

    fn run(&mut self) -> Step<()> {
        if let Err(ret) = self.get_tunables()? {
            return Ok(Err(ret));
        }
        if let Err(ret) = self.build_node_list()? {
            return Ok(Err(ret));
        }
        if let Err(ret) = self.get_capabilities()? {
            return Ok(Err(ret));
        }
        let dblist = match self.get_dbmaps()? {
            Ok(dblist) => dblist,
            Err(ret) => return Ok(Err(ret)),
        };

        let active = request(
            ControlOpcode::SetRecmode,
            ControlRequestData::RecMode(RecoveryMode::Active),
        );
        if let Err(ret) =
            self.multi_nodes(&active, || "failed to set recovery mode ACTIVE".to_owned())?
        {
            return Ok(Err(ret));
        }
        error!("Set recovery mode to ACTIVE");

        if self.params.extensions.seqnum_tie_prefers_members
            && dblist
                .dbs()
                .iter()
                .any(|db| db.is_persistent() || db.is_replicated())
        {
            self.members = self.current_members()?;
        }

        let mut map = self.nlist.lmasters();
        if map.is_empty() {
            warn!("No active lmasters found. Adding recmaster anyway");
            map.push(self.pnn);
        }
        self.vnnmap.clone_from(&map);
        let vnnmap = VnnMap {
            generation: self.params.generation,
            map,
        };

        let start = request(ControlOpcode::StartRecovery, ControlRequestData::Empty);
        if let Err(ret) =
            self.multi_nodes(&start, || "failed to run start_recovery event".to_owned())?
        {
            return Ok(Err(ret));
        }
        error!("start_recovery event finished");

        let set_vnnmap = request(ControlOpcode::Setvnnmap, ControlRequestData::VnnMap(vnnmap));
        if let Err(ret) = self.multi_nodes(&set_vnnmap, || "failed to update VNNMAP".to_owned())? {
            return Ok(Err(ret));
        }
        info!("updated VNNMAP");

        let (recovered, all) = self.recover_databases(&dblist)?;
        error!("{recovered} of {} databases recovered", dblist.len());
        if !all {
            if let Err(ret) = self.ban_node()? {
                error!("failed to ban node, ret={ret}");
            }
            return Ok(Err(libc::EIO));
        }

        let normal = request(
            ControlOpcode::SetRecmode,
            ControlRequestData::RecMode(RecoveryMode::Normal),
        );
        if let Err(ret) =
            self.multi_nodes(&normal, || "failed to set recovery mode NORMAL".to_owned())?
        {
            return Ok(Err(ret));
        }
        error!("Set recovery mode to NORMAL");

        let end = request(ControlOpcode::EndRecovery, ControlRequestData::Empty);
        if let Err(ret) = self.multi_nodes(&end, || "failed to run recovered event".to_owned())? {
            return Ok(Err(ret));
        }
        error!("recovered event finished");
        Ok(Ok(()))
    }

    /// The nodes of the leader's vnn map as it stands before this recovery replaces it;
    /// empty when the map is not a real generation or cannot be read (then ties are broken
    /// as stock does).
    fn current_members(&mut self) -> Result<Vec<u32>, Disconnected> {
        let req = request(ControlOpcode::Getvnnmap, ControlRequestData::Empty);
        let Ok(reply) = self.single(self.pnn, &req)? else {
            return Ok(Vec::new());
        };
        match parse(ControlOpcode::Getvnnmap, &reply) {
            Some(ControlReplyData::VnnMap(map)) if map.generation != INVALID_GENERATION => {
                Ok(map.map)
            }
            _ => Ok(Vec::new()),
        }
    }

    fn get_tunables(&mut self) -> Step<()> {
        let req = request(ControlOpcode::GetAllTunables, ControlRequestData::Empty);
        let reply = match self.single(self.pnn, &req)? {
            Ok(reply) => reply,
            Err(ret) => {
                error!("control GET_ALL_TUNABLES failed, ret={ret}");
                return Ok(Err(ret));
            }
        };
        let parsed = match reply.status {
            0 => parse(ControlOpcode::GetAllTunables, &reply),
            _ => None,
        };
        let Some(ControlReplyData::TunableList(tunables)) = parsed else {
            let ret = if reply.status != 0 {
                reply.status
            } else {
                libc::EPROTO
            };
            error!("control GET_ALL_TUNABLES failed, ret={ret}");
            return Ok(Err(libc::EPROTO));
        };
        self.tunables = *tunables;
        self.transport.set_timeout(Duration::from_secs(u64::from(
            self.tunables.recover_timeout,
        )));
        Ok(Ok(()))
    }

    /// The local node map gives the candidates (every node not disconnected); each candidate's
    /// own view of itself decides whether it takes part (not INACTIVE).
    fn build_node_list(&mut self) -> Step<()> {
        let req = request(ControlOpcode::GetNodemap, ControlRequestData::Empty);
        let reply = match self.single(self.pnn, &req)? {
            Ok(reply) => reply,
            Err(ret) => {
                error!("control GET_NODEMAP failed to node {}, ret={ret}", self.pnn);
                return Ok(Err(ret));
            }
        };
        let Some(nodemap) = nodemap_of(&reply) else {
            let ret = status_or_eproto(&reply);
            error!("control GET_NODEMAP failed, ret={ret}");
            return Ok(Err(ret));
        };
        let mut candidates = NodeList::new(nodemap.nodes.len());
        for node in &nodemap.nodes {
            if node.flags & node_flags::DISCONNECTED != 0 {
                continue;
            }
            if !candidates.add(node.pnn) {
                return Ok(Err(libc::EINVAL));
            }
        }
        self.nlist = candidates;

        let pnns = self.nlist.pnns();
        let replies = match self.multi(&pnns, &req, || "control GET_NODEMAP failed".to_owned())? {
            Ok(replies) => replies,
            Err(failure) => return Ok(Err(failure.ret)),
        };
        let mut active = NodeList::new(self.nlist.capacity());
        for (&pnn, reply) in pnns.iter().zip(&replies) {
            let Some(nodemap) = nodemap_of(reply) else {
                error!("control GET_NODEMAP failed on node {pnn}");
                return Ok(Err(libc::EPROTO));
            };
            let flags = nodemap
                .nodes
                .iter()
                .find(|node| node.pnn == pnn)
                .map_or(node_flags::DISCONNECTED, |node| node.flags);
            if flags & node_flags::INACTIVE != 0 {
                continue;
            }
            if !active.add(pnn) {
                return Ok(Err(libc::EINVAL));
            }
        }
        self.nlist = active;
        Ok(Ok(()))
    }

    fn get_capabilities(&mut self) -> Step<()> {
        let req = request(ControlOpcode::GetCapabilities, ControlRequestData::Empty);
        let pnns = self.nlist.pnns();
        let replies =
            match self.multi(&pnns, &req, || "control GET_CAPABILITIES failed".to_owned())? {
                Ok(replies) => replies,
                Err(failure) => return Ok(Err(failure.ret)),
            };
        for (index, reply) in replies.iter().enumerate() {
            let Some(ControlReplyData::Capabilities(caps)) =
                parse(ControlOpcode::GetCapabilities, reply)
            else {
                error!(
                    "control GET_CAPABILITIES failed on node {}",
                    pnns.get(index).copied().unwrap_or(UNKNOWN_PNN)
                );
                return Ok(Err(libc::EPROTO));
            };
            self.nlist.set_caps(index, caps);
        }
        Ok(Ok(()))
    }

    fn get_dbmaps(&mut self) -> Step<DbList> {
        let req = request(ControlOpcode::GetDbmap, ControlRequestData::Empty);
        let pnns = self.nlist.pnns();
        let replies = match self.multi(&pnns, &req, || "control GET_DBMAP failed".to_owned())? {
            Ok(replies) => replies,
            Err(failure) => return Ok(Err(failure.ret)),
        };
        let mut dblist = DbList::new(pnns.len());
        for (&pnn, reply) in pnns.iter().zip(&replies) {
            let Some(ControlReplyData::DbidMap(dbmap)) = parse(ControlOpcode::GetDbmap, reply)
            else {
                error!("control GET_DBMAP failed on node {pnn}");
                return Ok(Err(libc::EPROTO));
            };
            for db in &dbmap.dbs {
                if let Err(e) = dblist.check_and_add(db.db_id, db.flags, pnn) {
                    if let DbListError::IncompatibleFlags {
                        db_id,
                        flags,
                        known,
                    } = e
                    {
                        error!(
                            "Incompatible database flags for 0x{db_id:x} (0x{flags:x} != 0x{known:x})"
                        );
                    }
                    error!("failed to add database list entry, ret={}", libc::EINVAL);
                    return Ok(Err(libc::EINVAL));
                }
            }
        }
        Ok(Ok(dblist))
    }

    /// Recovers every database, each up to [`NUM_RETRIES`] times. Returns how many were
    /// recovered and whether that is all of them.
    fn recover_databases(&mut self, dblist: &DbList) -> Result<(usize, bool), Disconnected> {
        for db in dblist.dbs() {
            info!("recover database 0x{:08x}", db.db_id);
        }
        let mut recovered = 0;
        for db in dblist.dbs() {
            let mut fails = 0;
            loop {
                if self.recover_database(db)?.is_ok() {
                    recovered += 1;
                    break;
                }
                fails += 1;
                if fails >= NUM_RETRIES {
                    break;
                }
                info!("recover database 0x{:08x}, attempt {}", db.db_id, fails + 1);
            }
        }
        Ok((recovered, recovered == dblist.len()))
    }

    fn recover_database(&mut self, db: &DbEntry) -> Step<()> {
        let db_id = db.db_id;
        let transdb = Transdb {
            db_id,
            tid: self.params.generation,
        };

        let name = match self.database_name(db)? {
            Ok(name) => name,
            Err(ret) => return Ok(Err(ret)),
        };
        if let Err(ret) = self.create_missing(db, &name)? {
            return Ok(Err(ret));
        }

        // Stock needs the path for its scratch TDB; the records are collected in memory here,
        // but the control stays so that a failing node fails the attempt as with stock.
        let req = request(ControlOpcode::Getdbpath, ControlRequestData::DbId(db_id));
        let _db_path = match self.single(self.pnn, &req)? {
            Err(ret) => {
                error!("control GETDBPATH failed for db {name}, ret={ret}");
                return Ok(Err(ret));
            }
            Ok(reply) => match (reply.status, parse(ControlOpcode::Getdbpath, &reply)) {
                (0, Some(ControlReplyData::DbPath(path))) => path,
                _ => {
                    error!(
                        "control GETDBPATH failed for db {name}, ret={}",
                        status_or_eproto(&reply)
                    );
                    return Ok(Err(libc::EPROTO));
                }
            },
        };

        let freeze = request(ControlOpcode::DbFreeze, ControlRequestData::DbId(db_id));
        let pnns = self.nlist.pnns();
        if let Err(failure) = self.multi(&pnns, &freeze, || {
            format!("control FREEZE_DB failed for db {name}")
        })? {
            self.nlist.add_ban_credit(failure.pnn);
            return Ok(Err(failure.ret));
        }

        let start = request(
            ControlOpcode::DbTransactionStart,
            ControlRequestData::Transdb(transdb),
        );
        if let Err(ret) = self.multi_nodes(&start, || {
            format!("control TRANSACTION_DB failed for db={name}")
        })? {
            return Ok(Err(ret));
        }

        let mut recdb = RecDb::new(db_id, &name, db.is_persistent(), self.pnn);
        let collected = if db.is_persistent() || db.is_replicated() {
            self.collect_highest_seqnum(&mut recdb)?
        } else {
            self.collect_all(&mut recdb)?
        };
        if let Err(ret) = collected {
            return Ok(Err(ret));
        }

        let wipe = request(
            ControlOpcode::WipeDatabase,
            ControlRequestData::Transdb(transdb),
        );
        if let Err(ret) =
            self.multi_nodes(&wipe, || format!("control WIPEDB failed for db {name}"))?
        {
            return Ok(Err(ret));
        }

        let volatile = !db.is_persistent() && !db.is_replicated();
        if let Err(ret) = self.push_database(recdb, volatile)? {
            return Ok(Err(ret));
        }

        let commit = request(
            ControlOpcode::DbTransactionCommit,
            ControlRequestData::Transdb(transdb),
        );
        if let Err(ret) = self.multi_nodes(&commit, || {
            format!("control DB_TRANSACTION_COMMIT failed for db {name}")
        })? {
            return Ok(Err(ret));
        }

        let thaw = request(ControlOpcode::DbThaw, ControlRequestData::DbId(db_id));
        if let Err(ret) =
            self.multi_nodes(&thaw, || format!("control DB_THAW failed for db {name}"))?
        {
            return Ok(Err(ret));
        }
        Ok(Ok(()))
    }

    /// GET_DBNAME from every node that has the database; all names must agree.
    fn database_name(&mut self, db: &DbEntry) -> Step<String> {
        let req = request(ControlOpcode::GetDbname, ControlRequestData::DbId(db.db_id));
        let replies = match self.multi(&db.pnns, &req, || "control GET_DBNAME failed".to_owned())? {
            Ok(replies) => replies,
            Err(failure) => return Ok(Err(failure.ret)),
        };
        let mut name: Option<String> = None;
        for (index, reply) in replies.iter().enumerate() {
            // Stock names (and blames) the index-th node of the recovery's node list here,
            // not the index-th node that has the database.
            let blamed = self.nlist.pnn_at(index).unwrap_or(UNKNOWN_PNN);
            let Some(ControlReplyData::DbName(this)) = parse(ControlOpcode::GetDbname, reply)
            else {
                error!(
                    "control GET_DBNAME failed on node {blamed} for db=0x{:x}, ret={}",
                    db.db_id,
                    libc::EPROTO
                );
                return Ok(Err(libc::EPROTO));
            };
            match &name {
                None => name = Some(this),
                Some(known) if *known != this => {
                    error!(
                        "Incompatible database name for 0x{:x} ({this} != {known}) on node {blamed}",
                        db.db_id
                    );
                    self.nlist.add_ban_credit(blamed);
                    return Ok(Err(libc::EIO));
                }
                Some(_) => {}
            }
        }
        Ok(Ok(name.unwrap_or_default()))
    }

    /// Attaches the database (flagged as a recovery attach) on the nodes that lack it.
    fn create_missing(&mut self, db: &DbEntry, name: &str) -> Step<()> {
        let missing: Vec<u32> = self
            .nlist
            .pnns()
            .into_iter()
            .filter(|pnn| !db.pnns.contains(pnn))
            .collect();
        if missing.is_empty() {
            return Ok(Ok(()));
        }
        for pnn in &missing {
            debug!("db_create_missing_send: Create database {name} on node {pnn}");
        }
        let opcode = if db.is_persistent() {
            ControlOpcode::DbAttachPersistent
        } else if db.is_replicated() {
            ControlOpcode::DbAttachReplicated
        } else {
            ControlOpcode::DbAttach
        };
        let req = request(opcode, ControlRequestData::DbName(name.to_owned()))
            .with_flags(CTRL_FLAG_ATTACH_RECOVERY);
        if let Err(failure) = self.multi(&missing, &req, || {
            format!("control DB_ATTACH failed for db {name}")
        })? {
            self.nlist.add_ban_credit(failure.pnn);
            return Ok(Err(failure.ret));
        }
        Ok(Ok(()))
    }

    /// Persistent and replicated databases: the copy of the node with the highest
    /// `__db_sequence_number__` (the first such node on a tie), taken whole.
    fn collect_highest_seqnum(&mut self, recdb: &mut RecDb) -> Step<()> {
        let req = request(
            ControlOpcode::GetDbSeqnum,
            ControlRequestData::DbIdPadded(recdb.db_id()),
        );
        let pnns = self.nlist.pnns();
        let name = recdb.name().to_owned();
        let replies = match self.multi(&pnns, &req, || {
            format!("control GET_DB_SEQNUM failed for db {name}")
        })? {
            Ok(replies) => replies,
            Err(failure) => return Ok(Err(failure.ret)),
        };
        let mut seqnums = Vec::with_capacity(pnns.len());
        for (&pnn, reply) in pnns.iter().zip(&replies) {
            let Some(ControlReplyData::Seqnum(seqnum)) = parse(ControlOpcode::GetDbSeqnum, reply)
            else {
                return Ok(Err(libc::EPROTO));
            };
            seqnums.push((pnn, seqnum));
        }
        let (max_pnn, max_seqnum) = highest_seqnum(&seqnums, &self.members)
            .unwrap_or_else(|| (pnns.first().copied().unwrap_or(UNKNOWN_PNN), 0));
        if let Some((stock_pnn, _)) = highest_seqnum(&seqnums, &[]) {
            if stock_pnn != max_pnn {
                info!(
                    "Nodes {stock_pnn} and {max_pnn} tie on seqnum 0x{max_seqnum:x} of {name}; \
                     taking node {max_pnn}, which was in the last generation"
                );
            }
        }
        debug!("Pull persistent db {name} from node {max_pnn} with seqnum 0x{max_seqnum:x}");
        if let Err((ret, pnn)) = self.pull_databases(&[(max_pnn, 0)], recdb)? {
            self.nlist.add_ban_credit(pnn);
            return Ok(Err(ret));
        }
        Ok(Ok(()))
    }

    /// Volatile databases: every node's copy, merged record by record. Stock pulls one node
    /// after the other; with [`Extensions::concurrent_pulls`] all are pulled at once. Either
    /// way the first failing node in list order gets the ban credit.
    fn collect_all(&mut self, recdb: &mut RecDb) -> Step<()> {
        let sources: Vec<(u32, u32)> = self.nlist.pnns().into_iter().zip(0..).collect();
        if self.params.extensions.concurrent_pulls {
            if let Err((ret, pnn)) = self.pull_databases(&sources, recdb)? {
                self.nlist.add_ban_credit(pnn);
                return Ok(Err(ret));
            }
            return Ok(Ok(()));
        }
        for source in sources {
            if let Err((ret, pnn)) = self.pull_databases(&[source], recdb)? {
                self.nlist.add_ban_credit(pnn);
                return Ok(Err(ret));
            }
        }
        Ok(Ok(()))
    }

    /// DB_PULL from each `(pnn, position)` of `sources` at once, each to its own fresh
    /// srvid: the records arrive as messages before the reply, which says how many there
    /// should have been; `position` orders the copies for the merge. On failure, the error
    /// and the first failing node in the order of `sources`.
    fn pull_databases(
        &mut self,
        sources: &[(u32, u32)],
        recdb: &mut RecDb,
    ) -> Result<Result<(), (i32, u32)>, Disconnected> {
        let name = recdb.name().to_owned();
        // Stock blames the node being pulled from for a failed (de)registration too.
        let first_source = sources.first().map_or(UNKNOWN_PNN, |&(pnn, _)| pnn);
        let srvids: Vec<u64> = sources.iter().map(|_| self.next_srvid()).collect();
        let registers: Vec<(u32, Request)> = srvids
            .iter()
            .map(|&srvid| {
                (
                    self.pnn,
                    request(ControlOpcode::RegisterSrvid, ControlRequestData::Empty)
                        .with_srvid(srvid),
                )
            })
            .collect();
        let (outcomes, _) = self.transport.control_batch(&registers)?;
        let failed = outcomes.into_iter().map(status_of).find_map(Result::err);
        if let Some(ret) = failed {
            error!("Failed to set message handler for DB_PULL for {name}");
            // Best effort: the registration error is what counts.
            let _ = self.deregister(&srvids)?;
            return Ok(Err((ret, first_source)));
        }

        let db_id = recdb.db_id();
        let mut received: Vec<u32> = vec![0; sources.len()];
        let mut sink = |index: usize, payload: Payload| {
            let Some(&(_, position)) = sources.get(index) else {
                return;
            };
            let (message, range) = payload.into_parts();
            let count = match recdb.add_message_in(message, range, position) {
                Ok(count) => count,
                Err(AddError::Malformed | AddError::TooLarge) => {
                    error!("Invalid data received for DB_PULL messages");
                    return;
                }
                Err(AddError::WrongDb(other)) => {
                    error!("Invalid dbid:{other:08x} for DB_PULL messages for {name}");
                    return;
                }
                Err(AddError::ShortRecord) => {
                    error!("Failed to add records to recdb for {name}");
                    return;
                }
            };
            if let Some(received) = received.get_mut(index) {
                *received = received.wrapping_add(count);
            }
        };
        let pulls: Vec<(u32, Request)> = sources
            .iter()
            .zip(&srvids)
            .map(|(&(pnn, _), &srvid)| {
                let pull = request(
                    ControlOpcode::DbPull,
                    ControlRequestData::PulldbExt(PulldbExt {
                        db_id,
                        lmaster: LMASTER_ANY,
                        srvid,
                    }),
                );
                (pnn, pull)
            })
            .collect();
        let outcomes = self
            .transport
            .controls_collecting(&pulls, &srvids, &mut sink)?;

        let mut result = Ok(());
        for ((&(pnn, _), outcome), &received) in sources.iter().zip(outcomes).zip(&received) {
            let this = match outcome {
                Err(ret) => {
                    error!("control DB_PULL failed for {name} on node {pnn}, ret={ret}");
                    Err(ret)
                }
                Ok(reply) => match (reply.status, parse(ControlOpcode::DbPull, &reply)) {
                    (0, Some(ControlReplyData::NumRecords(count))) if count == received => {
                        debug!("Pulled {received} records for db {name} from node {pnn}");
                        Ok(())
                    }
                    (0, Some(ControlReplyData::NumRecords(count))) => {
                        error!("mismatch ({count} != {received}) in DB_PULL records for db {name}");
                        Err(libc::EIO)
                    }
                    _ => {
                        error!(
                            "control DB_PULL failed for {name} on node {pnn}, ret={}",
                            status_or_eproto(&reply)
                        );
                        Err(libc::EIO)
                    }
                },
            };
            if let (Ok(()), Err(ret)) = (&result, this) {
                result = Err((ret, pnn));
            }
        }

        if let Err(ret) = self.deregister(&srvids)? {
            error!("failed to remove message handler for DB_PULL for db {name}");
            return Ok(Err((ret, first_source)));
        }
        Ok(result)
    }

    /// DEREGISTER_SRVID for each of `srvids` at once; the first error.
    fn deregister(&mut self, srvids: &[u64]) -> Step<()> {
        let requests: Vec<(u32, Request)> = srvids
            .iter()
            .map(|&srvid| {
                (
                    self.pnn,
                    request(ControlOpcode::DeregisterSrvid, ControlRequestData::Empty)
                        .with_srvid(srvid),
                )
            })
            .collect();
        let (outcomes, _) = self.transport.control_batch(&requests)?;
        Ok(
            match outcomes.into_iter().map(status_of).find_map(Result::err) {
                Some(ret) => Err(ret),
                None => Ok(()),
            },
        )
    }

    /// Sends the collected records: DB_PUSH_START to every node, the buffers as messages to
    /// the push srvid, then DB_PUSH_CONFIRM, whose count must match on every node. Stock
    /// sends every record to every node; with [`Extensions::partitioned_push`] the records
    /// of a `volatile` database go only to their lmaster (each node's count is its share).
    fn push_database(&mut self, recdb: RecDb, volatile: bool) -> Step<()> {
        let srvid = self.next_srvid();
        let db_id = recdb.db_id();
        let name = recdb.name().to_owned();
        let limit = usize::try_from(self.tunables.rec_buffer_size_limit).unwrap_or(usize::MAX);
        let hash_size = self.tunables.database_hash_size;
        let pnns = self.nlist.pnns();
        let partitioned = self.params.extensions.partitioned_push
            && volatile
            && lmasters_covered(&self.vnnmap, &pnns);
        let start = request(
            ControlOpcode::DbPushStart,
            ControlRequestData::PulldbExt(PulldbExt {
                db_id,
                lmaster: 0,
                srvid,
            }),
        );
        if let Err(failure) = self.multi(&pnns, &start, || {
            format!("control DB_PUSH_START failed for db {name}")
        })? {
            return Ok(Err(failure.ret));
        }

        // Buffers leave as they are cut (as stock's helper sends them while it traverses its
        // recdb), so the daemons store while the rest is cut. A partitioned push sends each
        // share to its node; the shares fill in hash-chain order together, so every daemon
        // gets work from the start.
        let destination = if partitioned {
            Destination::Lmaster {
                vnnmap: &self.vnnmap,
                nodes: &pnns,
            }
        } else {
            Destination::Everyone { dmaster: self.pnn }
        };
        let mut buffers = 0usize;
        let transport = &mut *self.transport;
        let pushed = recdb.push_streamed(destination, hash_size, limit, |share, count, data| {
            buffers += 1;
            if partitioned {
                let pnn = pnns.get(share).copied().unwrap_or(UNKNOWN_PNN);
                trace!("Pushing buffer with {count} records for db {name} to node {pnn}");
                transport.message_to(pnn, srvid, data)
            } else {
                trace!("Pushing buffer with {count} records for db {name}");
                transport.message_multi(&pnns, srvid, data.payload())
            }
        })?;
        trace!("Wrote {buffers} buffers of recovery records for {name}");
        // What each node of `pnns` should confirm.
        let expected: Vec<u32> = if partitioned {
            pushed
        } else {
            vec![pushed.first().copied().unwrap_or(0); pnns.len()]
        };

        let confirm = request(
            ControlOpcode::DbPushConfirm,
            ControlRequestData::DbId(db_id),
        );
        let replies = match self.multi(&pnns, &confirm, || {
            format!("control DB_PUSH_CONFIRM failed for db {name}")
        })? {
            Ok(replies) => replies,
            Err(failure) => return Ok(Err(failure.ret)),
        };
        for ((&pnn, reply), &sent) in pnns.iter().zip(&replies).zip(&expected) {
            let Some(ControlReplyData::NumRecords(count)) =
                parse(ControlOpcode::DbPushConfirm, reply)
            else {
                return Ok(Err(libc::EPROTO));
            };
            if count != sent {
                error!("Node {pnn} received {count} of {sent} records for {name}");
                return Ok(Err(libc::EPROTO));
            }
        }
        let total = expected.iter().fold(0u32, |sum, n| sum.wrapping_add(*n));
        if partitioned {
            debug!("Pushed {total} records for db {name} to their lmasters");
        } else {
            debug!(
                "Pushed {} records for db {name}",
                expected.first().unwrap_or(&0)
            );
        }
        Ok(Ok(()))
    }

    /// After a failed recovery: ban the node with the most ban credits if it has at least
    /// [`NUM_RETRIES`], unless it has become inactive meanwhile (then its credits are dropped
    /// and the next candidate is considered).
    fn ban_node(&mut self) -> Step<()> {
        if self.tunables.enable_bans == 0 {
            error!("Bans are not enabled");
            return Ok(Ok(()));
        }
        loop {
            let Some((pnn, credits)) = self.nlist.most_credits() else {
                return Ok(Ok(()));
            };
            if credits < NUM_RETRIES {
                return Ok(Ok(()));
            }
            let req = request(ControlOpcode::GetNodemap, ControlRequestData::Empty);
            let reply = match self.single(pnn, &req)? {
                Ok(reply) => reply,
                Err(ret) => {
                    error!("control GET_NODEMAP failed to node {pnn}, ret={ret}");
                    return Ok(Err(ret));
                }
            };
            let Some(nodemap) = nodemap_of(&reply) else {
                let ret = status_or_eproto(&reply);
                error!("control GET_NODEMAP failed, ret={ret}");
                return Ok(Err(ret));
            };
            let inactive = nodemap
                .nodes
                .iter()
                .any(|node| node.pnn == pnn && node.flags & node_flags::INACTIVE != 0);
            if inactive {
                self.nlist.reset_ban_credits(pnn);
                continue;
            }

            let ban = BanState {
                pnn,
                time: self.tunables.recovery_ban_period,
            };
            error!("Banning node {} for {} seconds", ban.pnn, ban.time);
            let req = request(
                ControlOpcode::SetBanState,
                ControlRequestData::BanState(ban),
            );
            return Ok(match self.single(pnn, &req)? {
                Err(ret) => Err(ret),
                Ok(reply) if reply.status != 0 => {
                    error!("control SET_BAN_STATE failed, ret={}", reply.status);
                    Err(reply.status)
                }
                Ok(_) => Ok(()),
            });
        }
    }
}

fn nodemap_of(reply: &ReplyControl) -> Option<NodeMap> {
    if reply.status != 0 {
        return None;
    }
    match parse(ControlOpcode::GetNodemap, reply) {
        Some(ControlReplyData::NodeMap(nodemap)) => Some(nodemap),
        _ => None,
    }
}

fn status_or_eproto(reply: &ReplyControl) -> i32 {
    if reply.status != 0 {
        reply.status
    } else {
        libc::EPROTO
    }
}

/// A control whose answer is its status: the errno, or the non-zero status.
fn status_of(outcome: Outcome) -> Result<(), i32> {
    match outcome {
        Err(ret) => Err(ret),
        Ok(reply) if reply.status != 0 => Err(reply.status),
        Ok(_) => Ok(()),
    }
}
