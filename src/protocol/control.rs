//! Control request and reply payloads by opcode (mirrors `ctdb_req_control_data_{len,push,pull}`
//! and `ctdb_reply_control_data_{len,push,pull}` in `ctdb/protocol/protocol_control.c`, checked
//! against the daemon side in `ctdb/server/ctdb_control.c`).
//!
//! The opcode alone decides the payload type; [`request_kind`] and [`reply_kind`] are that
//! mapping for all of 0–158. Conventions worth knowing:
//!
//! * Many controls answer in the reply `status` and carry no data (GET_PNN, GET_PID, PING,
//!   GET_RECMODE, PROCESS_EXISTS, CHECK_PID_SRVID, TRANS3_COMMIT, DB_VACUUM, ...): their reply
//!   kind is [`ReplyKind::Empty`].
//! * Strings whose length comes from `datalen` end at the first NUL (none is required, as in
//!   `ctdb_string_pull`) and are pushed with their NUL. GET_RECLOCK_FILE and DB_GET_HEALTH send
//!   0 bytes for "none", hence `Option<String>`. DUMP_MEMORY is the exception: the daemon strips
//!   the NUL, so [`ControlReplyData::MemoryReport`] is pushed without one.
//! * GET_DB_SEQNUM's request is the db id followed by 4 zero bytes (the daemon wants exactly 8).
//! * Pulls are lenient about trailing bytes after a complete payload, like stock: the reply
//!   parsers of the CLI and helpers ignore them, and the daemon enforces sizes itself before it
//!   reads (see [`stock_size_check`]). Missing bytes are always an error.
//! * Obsolete and unknown opcodes carry [`ControlRequestData::Raw`] / [`ControlReplyData::Raw`]
//!   so that their bytes survive; a 4.17 daemon answers them with status -1 and no data.
//!
//! Nothing here panics on any input.

use super::basic::{Marshal, PullError, Reader, Writer};
use super::opcode::ControlOpcode;
use super::sock_addr::{SockAddr, SOCK_ADDR_LEN};
use super::types::{pull_stringn_lenient, STATISTICS_LEN};
use super::types::{
    text_until_nul, AddrInfo, BanState, Connection, DbStatistics, DbVacuum, DbidMap, EchoData,
    Iface, IfaceList, KeyData, NodeFlagChange, NodeMap, NotifyData, PidSrvid, PublicIp,
    PublicIpInfo, PublicIpList, PulldbExt, RecBuffer, RecData, RecoveryMode, Runstate, Statistics,
    StatisticsList, TickleList, Transdb, TraverseAll, TraverseAllExt, TraverseStart,
    TraverseStartExt, Tunable, TunableList, Uptime, VarList, VnnMap,
};
use crate::protocol::basic::{push_stringn, stringn_len};

/// `CTDB_CTRL_FLAG_NOREPLY`: the sender wants no reply (required for broadcasts).
pub const CTRL_FLAG_NOREPLY: u32 = 0x0000_0001;
/// `CTDB_CTRL_FLAG_OPCODE_SPECIFIC`: the flag bits whose meaning depends on the opcode.
pub const CTRL_FLAG_OPCODE_SPECIFIC: u32 = 0xffff_0000;
/// `CTDB_PUBLIC_IP_FLAGS_ONLY_AVAILABLE`: GET_PUBLIC_IPS lists only addresses this node can host.
pub const PUBLIC_IP_FLAGS_ONLY_AVAILABLE: u32 = 0x0001_0000;
/// `CTDB_CTRL_FLAG_ATTACH_RECOVERY`: a DB_ATTACH* sent by the recovery helper during recovery.
pub const CTRL_FLAG_ATTACH_RECOVERY: u32 = 0x0002_0000;

/// The request payload of a control, one variant per payload type of
/// `struct ctdb_req_control_data`.
#[derive(Debug, Clone, PartialEq)]
pub enum ControlRequestData {
    /// No payload (or one stock ignores, such as the srvid-in-header controls).
    Empty,
    /// PROCESS_EXISTS.
    Pid(i32),
    /// The many controls that name one database.
    DbId(u32),
    /// GET_DB_SEQNUM: the db id and 4 zero bytes.
    DbIdPadded(u32),
    /// SETVNNMAP.
    VnnMap(VnnMap),
    /// SET_DEBUG.
    DebugLevel(i32),
    /// SET_RECMODE.
    RecMode(RecoveryMode),
    /// DB_ATTACH, DB_ATTACH_PERSISTENT, DB_ATTACH_REPLICATED.
    DbName(String),
    /// TRAVERSE_START, TRAVERSE_KILL.
    TraverseStart(TraverseStart),
    /// TRAVERSE_ALL.
    TraverseAll(TraverseAll),
    /// TRAVERSE_DATA.
    RecData(RecData),
    /// TCP_CLIENT, TCP_ADD, TCP_REMOVE, TCP_ADD_DELAYED_UPDATE.
    Connection(Connection),
    /// SET_TUNABLE.
    Tunable(Tunable),
    /// GET_TUNABLE: the name as a u32 length (NUL included) and the bytes.
    TunableName(String),
    /// MODIFY_FLAGS.
    NodeFlagChange(NodeFlagChange),
    /// GET_TCP_TICKLE_LIST, GET_PUBLIC_IP_INFO.
    SockAddr(SockAddr),
    /// SET_TCP_TICKLE_LIST.
    TickleList(TickleList),
    /// UPDATE_RECORD, TRY_DELETE_RECORDS, TRANS3_COMMIT, VACUUM_FETCH.
    RecBuffer(RecBuffer),
    /// SEND_GRATUITOUS_ARP, ADD_PUBLIC_IP, DEL_PUBLIC_IP.
    AddrInfo(AddrInfo),
    /// WIPE_DATABASE, DB_TRANSACTION_START, DB_TRANSACTION_COMMIT.
    Transdb(Transdb),
    /// RELEASE_IP, TAKEOVER_IP.
    PublicIp(PublicIp),
    /// RECD_RECLOCK_LATENCY, in seconds.
    ReclockLatency(f64),
    /// SET_LMASTERROLE, SET_RECMASTERROLE (0 off, anything else on).
    Role(u32),
    /// SET_BAN_STATE.
    BanState(BanState),
    /// REGISTER_NOTIFY.
    NotifyData(NotifyData),
    /// DEREGISTER_NOTIFY.
    Srvid(u64),
    /// SET_IFACE_LINK_STATE.
    Iface(Iface),
    /// SCHEDULE_FOR_DELETION.
    KeyData(KeyData),
    /// TRAVERSE_START_EXT.
    TraverseStartExt(TraverseStartExt),
    /// TRAVERSE_ALL_EXT.
    TraverseAllExt(TraverseAllExt),
    /// DB_PULL, DB_PUSH_START.
    PulldbExt(PulldbExt),
    /// CHECK_PID_SRVID (12 packed bytes).
    PidSrvid(PidSrvid),
    /// DB_VACUUM.
    DbVacuum(DbVacuum),
    /// ECHO_DATA.
    EchoData(EchoData),
    /// Obsolete and unknown opcodes: the bytes as received.
    Raw(Vec<u8>),
}

/// The request payload type of an opcode, without the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestKind {
    Empty,
    Pid,
    DbId,
    DbIdPadded,
    VnnMap,
    DebugLevel,
    RecMode,
    DbName,
    TraverseStart,
    TraverseAll,
    RecData,
    Connection,
    Tunable,
    TunableName,
    NodeFlagChange,
    SockAddr,
    TickleList,
    RecBuffer,
    AddrInfo,
    Transdb,
    PublicIp,
    ReclockLatency,
    Role,
    BanState,
    NotifyData,
    Srvid,
    Iface,
    KeyData,
    TraverseStartExt,
    TraverseAllExt,
    PulldbExt,
    PidSrvid,
    DbVacuum,
    EchoData,
    Raw,
}

/// The reply payload of a control with status 0, one variant per payload type of
/// `struct ctdb_reply_control_data`.
#[derive(Debug, Clone, PartialEq)]
pub enum ControlReplyData {
    /// No payload: the result, if any, is the reply status.
    Empty,
    /// STATISTICS.
    Statistics(Box<Statistics>),
    /// GETDBPATH.
    DbPath(String),
    /// GETVNNMAP.
    VnnMap(VnnMap),
    /// GET_DEBUG.
    DebugLevel(i32),
    /// GET_DBMAP.
    DbidMap(DbidMap),
    /// DB_ATTACH, DB_ATTACH_PERSISTENT, DB_ATTACH_REPLICATED.
    DbId(u32),
    /// GET_DBNAME.
    DbName(String),
    /// DUMP_MEMORY: the talloc report, sent without its NUL.
    MemoryReport(String),
    /// GET_TUNABLE.
    TunableValue(u32),
    /// LIST_TUNABLES.
    VarList(VarList),
    /// GET_ALL_TUNABLES.
    TunableList(Box<TunableList>),
    /// GET_TCP_TICKLE_LIST.
    TickleList(TickleList),
    /// UPTIME.
    Uptime(Uptime),
    /// TRY_DELETE_RECORDS: the records that could not be deleted.
    RecBuffer(RecBuffer),
    /// GET_CAPABILITIES (`CTDB_CAP_*`).
    Capabilities(u32),
    /// GET_PUBLIC_IPS.
    PublicIpList(PublicIpList),
    /// GET_NODEMAP, GET_NODES_FILE.
    NodeMap(NodeMap),
    /// GET_RECLOCK_FILE: `None` (0 bytes) when no cluster lock is configured.
    ReclockFile(Option<String>),
    /// GET_BAN_STATE.
    BanState(BanState),
    /// GET_DB_SEQNUM.
    Seqnum(u64),
    /// DB_GET_HEALTH: `None` (0 bytes) when the database is healthy.
    HealthReason(Option<String>),
    /// GET_PUBLIC_IP_INFO.
    PublicIpInfo(PublicIpInfo),
    /// GET_IFACES.
    IfaceList(IfaceList),
    /// GET_STAT_HISTORY.
    StatisticsList(StatisticsList),
    /// GET_DB_STATISTICS.
    DbStatistics(Box<DbStatistics>),
    /// GET_RUNSTATE.
    Runstate(Runstate),
    /// DB_PULL, DB_PUSH_CONFIRM.
    NumRecords(u32),
    /// DB_OPEN_FLAGS: the TDB open flags.
    TdbFlags(i32),
    /// ECHO_DATA.
    EchoData(EchoData),
    /// Obsolete and unknown opcodes: the bytes as received.
    Raw(Vec<u8>),
}

/// The reply payload type of an opcode, without the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplyKind {
    Empty,
    Statistics,
    DbPath,
    VnnMap,
    DebugLevel,
    DbidMap,
    DbId,
    DbName,
    MemoryReport,
    TunableValue,
    VarList,
    TunableList,
    TickleList,
    Uptime,
    RecBuffer,
    Capabilities,
    PublicIpList,
    NodeMap,
    ReclockFile,
    BanState,
    Seqnum,
    HealthReason,
    PublicIpInfo,
    IfaceList,
    StatisticsList,
    DbStatistics,
    Runstate,
    NumRecords,
    TdbFlags,
    EchoData,
    Raw,
}

/// The request payload type stock 4.17 uses for `opcode`.
pub fn request_kind(opcode: ControlOpcode) -> RequestKind {
    use ControlOpcode as Op;
    use RequestKind as K;
    if opcode.is_obsolete() {
        return K::Raw;
    }
    match opcode {
        Op::ProcessExists => K::Pid,
        Op::Getdbpath
        | Op::GetDbname
        | Op::EnableSeqnum
        | Op::UpdateSeqnum
        | Op::DbSetHealthy
        | Op::DbGetHealth
        | Op::SetDbReadonly
        | Op::GetDbStatistics
        | Op::SetDbSticky
        | Op::DbDetach
        | Op::DbFreeze
        | Op::DbThaw
        | Op::DbTransactionCancel
        | Op::DbPushConfirm
        | Op::DbOpenFlags => K::DbId,
        Op::GetDbSeqnum => K::DbIdPadded,
        Op::Setvnnmap => K::VnnMap,
        Op::SetDebug => K::DebugLevel,
        Op::SetRecmode => K::RecMode,
        Op::DbAttach | Op::DbAttachPersistent | Op::DbAttachReplicated => K::DbName,
        Op::TraverseStart | Op::TraverseKill => K::TraverseStart,
        Op::TraverseAll => K::TraverseAll,
        Op::TraverseData => K::RecData,
        Op::TcpClient | Op::TcpAdd | Op::TcpRemove | Op::TcpAddDelayedUpdate => K::Connection,
        Op::SetTunable => K::Tunable,
        Op::GetTunable => K::TunableName,
        Op::ModifyFlags => K::NodeFlagChange,
        Op::GetTcpTickleList | Op::GetPublicIpInfo => K::SockAddr,
        Op::SetTcpTickleList => K::TickleList,
        Op::UpdateRecord | Op::TryDeleteRecords | Op::Trans3Commit | Op::VacuumFetch => {
            K::RecBuffer
        }
        Op::SendGratuitousArp | Op::AddPublicIp | Op::DelPublicIp => K::AddrInfo,
        Op::WipeDatabase | Op::DbTransactionStart | Op::DbTransactionCommit => K::Transdb,
        Op::ReleaseIp | Op::TakeoverIp => K::PublicIp,
        Op::RecdReclockLatency => K::ReclockLatency,
        Op::SetLmasterrole | Op::SetRecmasterrole => K::Role,
        Op::SetBanState => K::BanState,
        Op::RegisterNotify => K::NotifyData,
        Op::DeregisterNotify => K::Srvid,
        Op::SetIfaceLinkState => K::Iface,
        Op::ScheduleForDeletion => K::KeyData,
        Op::TraverseStartExt => K::TraverseStartExt,
        Op::TraverseAllExt => K::TraverseAllExt,
        Op::DbPull | Op::DbPushStart => K::PulldbExt,
        Op::CheckPidSrvid => K::PidSrvid,
        Op::DbVacuum => K::DbVacuum,
        Op::EchoData => K::EchoData,
        Op::Statistics
        | Op::Ping
        | Op::Getvnnmap
        | Op::GetDebug
        | Op::GetDbmap
        | Op::GetRecmode
        | Op::StatisticsReset
        | Op::RegisterSrvid
        | Op::DeregisterSrvid
        | Op::DumpMemory
        | Op::GetPid
        | Op::Freeze
        | Op::GetPnn
        | Op::Shutdown
        | Op::Startup
        | Op::ListTunables
        | Op::GetAllTunables
        | Op::Uptime
        | Op::StartRecovery
        | Op::EndRecovery
        | Op::ReloadNodesFile
        | Op::GetCapabilities
        | Op::StartPersistentUpdate
        | Op::CancelPersistentUpdate
        | Op::RecdPing
        | Op::GetPublicIps
        | Op::GetNodemap
        | Op::GetReclockFile
        | Op::StopNode
        | Op::ContinueNode
        | Op::GetBanState
        | Op::GetIfaces
        | Op::GetStatHistory
        | Op::ReloadPublicIps
        | Op::Ipreallocated
        | Op::GetRunstate
        | Op::GetNodesFile
        | Op::TunnelRegister
        | Op::TunnelDeregister
        | Op::DisableNode
        | Op::EnableNode => K::Empty,
        // Every obsolete opcode returned above; what is left here is not a 4.17 control.
        _ => K::Raw,
    }
}

/// The reply payload type stock 4.17 uses for `opcode` (when the status is 0).
pub fn reply_kind(opcode: ControlOpcode) -> ReplyKind {
    use ControlOpcode as Op;
    use ReplyKind as K;
    if opcode.is_obsolete() {
        return K::Raw;
    }
    match opcode {
        Op::Statistics => K::Statistics,
        Op::Getdbpath => K::DbPath,
        Op::Getvnnmap => K::VnnMap,
        Op::GetDebug => K::DebugLevel,
        Op::GetDbmap => K::DbidMap,
        Op::DbAttach | Op::DbAttachPersistent | Op::DbAttachReplicated => K::DbId,
        Op::GetDbname => K::DbName,
        Op::DumpMemory => K::MemoryReport,
        Op::GetTunable => K::TunableValue,
        Op::ListTunables => K::VarList,
        Op::GetAllTunables => K::TunableList,
        Op::GetTcpTickleList => K::TickleList,
        Op::Uptime => K::Uptime,
        Op::TryDeleteRecords => K::RecBuffer,
        Op::GetCapabilities => K::Capabilities,
        Op::GetPublicIps => K::PublicIpList,
        Op::GetNodemap | Op::GetNodesFile => K::NodeMap,
        Op::GetReclockFile => K::ReclockFile,
        Op::GetBanState => K::BanState,
        Op::GetDbSeqnum => K::Seqnum,
        Op::DbGetHealth => K::HealthReason,
        Op::GetPublicIpInfo => K::PublicIpInfo,
        Op::GetIfaces => K::IfaceList,
        Op::GetStatHistory => K::StatisticsList,
        Op::GetDbStatistics => K::DbStatistics,
        Op::GetRunstate => K::Runstate,
        Op::DbPull | Op::DbPushConfirm => K::NumRecords,
        Op::DbOpenFlags => K::TdbFlags,
        Op::EchoData => K::EchoData,
        Op::Unknown(_) => K::Raw,
        _ => K::Empty,
    }
}

/// Parses a value of `T` from the front of `data`; trailing bytes are ignored, as stock does.
fn lead<T: Marshal>(data: &[u8]) -> Result<T, PullError> {
    T::pull(data).map(|(value, _)| value)
}

/// A string payload whose length is `datalen`: `None` when there are no bytes at all.
fn optional_text(data: &[u8]) -> Option<String> {
    (!data.is_empty()).then(|| text_until_nul(data))
}

fn push_text(out: &mut Vec<u8>, text: &str) {
    out.put_bytes(text.as_bytes());
    out.put_u8(0);
}

impl ControlRequestData {
    pub fn kind(&self) -> RequestKind {
        use ControlRequestData as D;
        use RequestKind as K;
        match self {
            D::Empty => K::Empty,
            D::Pid(_) => K::Pid,
            D::DbId(_) => K::DbId,
            D::DbIdPadded(_) => K::DbIdPadded,
            D::VnnMap(_) => K::VnnMap,
            D::DebugLevel(_) => K::DebugLevel,
            D::RecMode(_) => K::RecMode,
            D::DbName(_) => K::DbName,
            D::TraverseStart(_) => K::TraverseStart,
            D::TraverseAll(_) => K::TraverseAll,
            D::RecData(_) => K::RecData,
            D::Connection(_) => K::Connection,
            D::Tunable(_) => K::Tunable,
            D::TunableName(_) => K::TunableName,
            D::NodeFlagChange(_) => K::NodeFlagChange,
            D::SockAddr(_) => K::SockAddr,
            D::TickleList(_) => K::TickleList,
            D::RecBuffer(_) => K::RecBuffer,
            D::AddrInfo(_) => K::AddrInfo,
            D::Transdb(_) => K::Transdb,
            D::PublicIp(_) => K::PublicIp,
            D::ReclockLatency(_) => K::ReclockLatency,
            D::Role(_) => K::Role,
            D::BanState(_) => K::BanState,
            D::NotifyData(_) => K::NotifyData,
            D::Srvid(_) => K::Srvid,
            D::Iface(_) => K::Iface,
            D::KeyData(_) => K::KeyData,
            D::TraverseStartExt(_) => K::TraverseStartExt,
            D::TraverseAllExt(_) => K::TraverseAllExt,
            D::PulldbExt(_) => K::PulldbExt,
            D::PidSrvid(_) => K::PidSrvid,
            D::DbVacuum(_) => K::DbVacuum,
            D::EchoData(_) => K::EchoData,
            D::Raw(_) => K::Raw,
        }
    }

    /// Whether this is the payload type stock sends with `opcode`.
    pub fn suits(&self, opcode: ControlOpcode) -> bool {
        self.kind() == request_kind(opcode)
    }

    /// Exact number of bytes [`push_request_data`] appends (the control's `datalen`).
    pub fn wire_len(&self) -> usize {
        use ControlRequestData as D;
        match self {
            D::Empty => 0,
            D::Pid(_) | D::DbId(_) | D::DebugLevel(_) | D::RecMode(_) | D::Role(_) => 4,
            D::DbIdPadded(_) | D::ReclockLatency(_) | D::Srvid(_) => 8,
            D::VnnMap(v) => v.wire_len(),
            D::DbName(s) => s.len() + 1,
            D::TraverseStart(v) => v.wire_len(),
            D::TraverseAll(v) => v.wire_len(),
            D::RecData(v) => v.wire_len(),
            D::Connection(v) => v.wire_len(),
            D::Tunable(v) => v.wire_len(),
            D::TunableName(s) => stringn_len(Some(s)),
            D::NodeFlagChange(v) => v.wire_len(),
            D::SockAddr(_) => SOCK_ADDR_LEN,
            D::TickleList(v) => v.wire_len(),
            D::RecBuffer(v) => v.wire_len(),
            D::AddrInfo(v) => v.wire_len(),
            D::Transdb(v) => v.wire_len(),
            D::PublicIp(v) => v.wire_len(),
            D::BanState(v) => v.wire_len(),
            D::NotifyData(v) => v.wire_len(),
            D::Iface(v) => v.wire_len(),
            D::KeyData(v) => v.wire_len(),
            D::TraverseStartExt(v) => v.wire_len(),
            D::TraverseAllExt(v) => v.wire_len(),
            D::PulldbExt(v) => v.wire_len(),
            D::PidSrvid(v) => v.wire_len(),
            D::DbVacuum(v) => v.wire_len(),
            D::EchoData(v) => v.wire_len(),
            D::Raw(bytes) => bytes.len(),
        }
    }

    /// The payload as a fresh vector.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.wire_len());
        push_request_data(self, &mut out);
        out
    }
}

/// Appends the request payload (mirrors `ctdb_req_control_data_push`).
pub fn push_request_data(data: &ControlRequestData, out: &mut Vec<u8>) {
    use ControlRequestData as D;
    match data {
        D::Empty => {}
        D::Pid(pid) => out.put_i32(*pid),
        D::DbId(db_id) => out.put_u32(*db_id),
        D::DbIdPadded(db_id) => {
            out.put_u32(*db_id);
            out.put_u32(0);
        }
        D::VnnMap(v) => v.push(out),
        D::DebugLevel(level) => out.put_i32(*level),
        D::RecMode(mode) => out.put_u32(u32::from(*mode)),
        D::DbName(name) => push_text(out, name),
        D::TraverseStart(v) => v.push(out),
        D::TraverseAll(v) => v.push(out),
        D::RecData(v) => v.push(out),
        D::Connection(v) => v.push(out),
        D::Tunable(v) => v.push(out),
        D::TunableName(name) => push_stringn(out, Some(name)),
        D::NodeFlagChange(v) => v.push(out),
        D::SockAddr(v) => v.push(out),
        D::TickleList(v) => v.push(out),
        D::RecBuffer(v) => v.push(out),
        D::AddrInfo(v) => v.push(out),
        D::Transdb(v) => v.push(out),
        D::PublicIp(v) => v.push(out),
        D::ReclockLatency(seconds) => out.put_f64(*seconds),
        D::Role(role) => out.put_u32(*role),
        D::BanState(v) => v.push(out),
        D::NotifyData(v) => v.push(out),
        D::Srvid(srvid) => out.put_u64(*srvid),
        D::Iface(v) => v.push(out),
        D::KeyData(v) => v.push(out),
        D::TraverseStartExt(v) => v.push(out),
        D::TraverseAllExt(v) => v.push(out),
        D::PulldbExt(v) => v.push(out),
        D::PidSrvid(v) => v.push(out),
        D::DbVacuum(v) => v.push(out),
        D::EchoData(v) => v.push(out),
        D::Raw(bytes) => out.put_bytes(bytes),
    }
}

/// Parses the request payload of `opcode` from exactly the control's `datalen` bytes (mirrors
/// `ctdb_req_control_data_pull`: trailing bytes are ignored, missing bytes are an error).
pub fn pull_request_data(
    opcode: ControlOpcode,
    data: &[u8],
) -> Result<ControlRequestData, PullError> {
    use ControlRequestData as D;
    use RequestKind as K;
    let mut r = Reader::new(data);
    Ok(match request_kind(opcode) {
        K::Empty => D::Empty,
        K::Pid => D::Pid(r.i32()?),
        K::DbId => D::DbId(r.u32()?),
        K::DbIdPadded => {
            let db_id = r.u32()?;
            r.skip(4)?;
            D::DbIdPadded(db_id)
        }
        K::VnnMap => D::VnnMap(lead(data)?),
        K::DebugLevel => D::DebugLevel(r.i32()?),
        K::RecMode => D::RecMode(RecoveryMode::from(r.u32()?)),
        K::DbName => D::DbName(text_until_nul(data)),
        K::TraverseStart => D::TraverseStart(lead(data)?),
        K::TraverseAll => D::TraverseAll(lead(data)?),
        K::RecData => D::RecData(lead(data)?),
        K::Connection => D::Connection(lead(data)?),
        K::Tunable => D::Tunable(lead(data)?),
        K::TunableName => D::TunableName(pull_stringn_lenient(&mut r)?.unwrap_or_default()),
        K::NodeFlagChange => D::NodeFlagChange(lead(data)?),
        K::SockAddr => D::SockAddr(lead(data)?),
        K::TickleList => D::TickleList(lead(data)?),
        K::RecBuffer => D::RecBuffer(lead(data)?),
        K::AddrInfo => D::AddrInfo(lead(data)?),
        K::Transdb => D::Transdb(lead(data)?),
        K::PublicIp => D::PublicIp(lead(data)?),
        K::ReclockLatency => D::ReclockLatency(r.f64()?),
        K::Role => D::Role(r.u32()?),
        K::BanState => D::BanState(lead(data)?),
        K::NotifyData => D::NotifyData(lead(data)?),
        K::Srvid => D::Srvid(r.u64()?),
        K::Iface => D::Iface(lead(data)?),
        K::KeyData => D::KeyData(lead(data)?),
        K::TraverseStartExt => D::TraverseStartExt(lead(data)?),
        K::TraverseAllExt => D::TraverseAllExt(lead(data)?),
        K::PulldbExt => D::PulldbExt(lead(data)?),
        K::PidSrvid => D::PidSrvid(lead(data)?),
        K::DbVacuum => D::DbVacuum(lead(data)?),
        K::EchoData => D::EchoData(lead(data)?),
        K::Raw => D::Raw(data.to_vec()),
    })
}

impl ControlReplyData {
    pub fn kind(&self) -> ReplyKind {
        use ControlReplyData as D;
        use ReplyKind as K;
        match self {
            D::Empty => K::Empty,
            D::Statistics(_) => K::Statistics,
            D::DbPath(_) => K::DbPath,
            D::VnnMap(_) => K::VnnMap,
            D::DebugLevel(_) => K::DebugLevel,
            D::DbidMap(_) => K::DbidMap,
            D::DbId(_) => K::DbId,
            D::DbName(_) => K::DbName,
            D::MemoryReport(_) => K::MemoryReport,
            D::TunableValue(_) => K::TunableValue,
            D::VarList(_) => K::VarList,
            D::TunableList(_) => K::TunableList,
            D::TickleList(_) => K::TickleList,
            D::Uptime(_) => K::Uptime,
            D::RecBuffer(_) => K::RecBuffer,
            D::Capabilities(_) => K::Capabilities,
            D::PublicIpList(_) => K::PublicIpList,
            D::NodeMap(_) => K::NodeMap,
            D::ReclockFile(_) => K::ReclockFile,
            D::BanState(_) => K::BanState,
            D::Seqnum(_) => K::Seqnum,
            D::HealthReason(_) => K::HealthReason,
            D::PublicIpInfo(_) => K::PublicIpInfo,
            D::IfaceList(_) => K::IfaceList,
            D::StatisticsList(_) => K::StatisticsList,
            D::DbStatistics(_) => K::DbStatistics,
            D::Runstate(_) => K::Runstate,
            D::NumRecords(_) => K::NumRecords,
            D::TdbFlags(_) => K::TdbFlags,
            D::EchoData(_) => K::EchoData,
            D::Raw(_) => K::Raw,
        }
    }

    /// Whether this is the payload type stock sends in reply to `opcode`.
    pub fn suits(&self, opcode: ControlOpcode) -> bool {
        self.kind() == reply_kind(opcode)
    }

    /// Exact number of bytes [`push_reply_data`] appends (the reply's `datalen`).
    pub fn wire_len(&self) -> usize {
        use ControlReplyData as D;
        match self {
            D::Empty => 0,
            D::Statistics(_) => STATISTICS_LEN,
            D::DbPath(s) | D::DbName(s) => s.len() + 1,
            D::MemoryReport(s) => s.len(),
            D::ReclockFile(s) | D::HealthReason(s) => s.as_ref().map_or(0, |s| s.len() + 1),
            D::VnnMap(v) => v.wire_len(),
            D::DebugLevel(_)
            | D::DbId(_)
            | D::TunableValue(_)
            | D::Capabilities(_)
            | D::Runstate(_)
            | D::NumRecords(_)
            | D::TdbFlags(_) => 4,
            D::Seqnum(_) => 8,
            D::DbidMap(v) => v.wire_len(),
            D::VarList(v) => v.wire_len(),
            D::TunableList(v) => v.wire_len(),
            D::TickleList(v) => v.wire_len(),
            D::Uptime(v) => v.wire_len(),
            D::RecBuffer(v) => v.wire_len(),
            D::PublicIpList(v) => v.wire_len(),
            D::NodeMap(v) => v.wire_len(),
            D::BanState(v) => v.wire_len(),
            D::PublicIpInfo(v) => v.wire_len(),
            D::IfaceList(v) => v.wire_len(),
            D::StatisticsList(v) => v.wire_len(),
            D::DbStatistics(v) => v.wire_len(),
            D::EchoData(v) => v.wire_len(),
            D::Raw(bytes) => bytes.len(),
        }
    }

    /// The payload as a fresh vector.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.wire_len());
        push_reply_data(self, &mut out);
        out
    }
}

/// Appends the reply payload (mirrors `ctdb_reply_control_data_push`, except that
/// DUMP_MEMORY's report goes without its NUL, as the daemon sends it).
pub fn push_reply_data(data: &ControlReplyData, out: &mut Vec<u8>) {
    use ControlReplyData as D;
    match data {
        D::Empty => {}
        D::Statistics(v) => v.push(out),
        D::DbPath(s) | D::DbName(s) => push_text(out, s),
        D::MemoryReport(s) => out.put_bytes(s.as_bytes()),
        D::ReclockFile(s) | D::HealthReason(s) => {
            if let Some(s) = s {
                push_text(out, s);
            }
        }
        D::VnnMap(v) => v.push(out),
        D::DebugLevel(v) | D::TdbFlags(v) => out.put_i32(*v),
        D::DbId(v) | D::TunableValue(v) | D::Capabilities(v) | D::NumRecords(v) => {
            out.put_u32(*v);
        }
        D::Runstate(v) => out.put_u32(u32::from(*v)),
        D::Seqnum(v) => out.put_u64(*v),
        D::DbidMap(v) => v.push(out),
        D::VarList(v) => v.push(out),
        D::TunableList(v) => v.push(out),
        D::TickleList(v) => v.push(out),
        D::Uptime(v) => v.push(out),
        D::RecBuffer(v) => v.push(out),
        D::PublicIpList(v) => v.push(out),
        D::NodeMap(v) => v.push(out),
        D::BanState(v) => v.push(out),
        D::PublicIpInfo(v) => v.push(out),
        D::IfaceList(v) => v.push(out),
        D::StatisticsList(v) => v.push(out),
        D::DbStatistics(v) => v.push(out),
        D::EchoData(v) => v.push(out),
        D::Raw(bytes) => out.put_bytes(bytes),
    }
}

/// Parses the reply payload of `opcode` from exactly the reply's `datalen` bytes (mirrors
/// `ctdb_reply_control_data_pull`, which stock only calls for status 0: trailing bytes are
/// ignored, missing bytes are an error).
pub fn pull_reply_data(opcode: ControlOpcode, data: &[u8]) -> Result<ControlReplyData, PullError> {
    use ControlReplyData as D;
    use ReplyKind as K;
    let mut r = Reader::new(data);
    Ok(match reply_kind(opcode) {
        K::Empty => D::Empty,
        K::Statistics => D::Statistics(Box::new(lead(data)?)),
        K::DbPath => D::DbPath(text_until_nul(data)),
        K::VnnMap => D::VnnMap(lead(data)?),
        K::DebugLevel => D::DebugLevel(r.i32()?),
        K::DbidMap => D::DbidMap(lead(data)?),
        K::DbId => D::DbId(r.u32()?),
        K::DbName => D::DbName(text_until_nul(data)),
        K::MemoryReport => D::MemoryReport(text_until_nul(data)),
        K::TunableValue => D::TunableValue(r.u32()?),
        K::VarList => D::VarList(lead(data)?),
        K::TunableList => D::TunableList(Box::new(lead(data)?)),
        K::TickleList => D::TickleList(lead(data)?),
        K::Uptime => D::Uptime(lead(data)?),
        K::RecBuffer => D::RecBuffer(lead(data)?),
        K::Capabilities => D::Capabilities(r.u32()?),
        K::PublicIpList => D::PublicIpList(lead(data)?),
        K::NodeMap => D::NodeMap(lead(data)?),
        K::ReclockFile => D::ReclockFile(optional_text(data)),
        K::BanState => D::BanState(lead(data)?),
        K::Seqnum => D::Seqnum(r.u64()?),
        K::HealthReason => D::HealthReason(optional_text(data)),
        K::PublicIpInfo => D::PublicIpInfo(lead(data)?),
        K::IfaceList => D::IfaceList(lead(data)?),
        K::StatisticsList => D::StatisticsList(lead(data)?),
        K::DbStatistics => D::DbStatistics(Box::new(lead(data)?)),
        K::Runstate => D::Runstate(Runstate::from(r.u32()?)),
        K::NumRecords => D::NumRecords(r.u32()?),
        K::TdbFlags => D::TdbFlags(r.i32()?),
        K::EchoData => D::EchoData(lead(data)?),
        K::Raw => D::Raw(data.to_vec()),
    })
}

/// How the stock 4.17 daemon checks a request's `datalen` before it reads the payload
/// (`CHECK_CONTROL_DATA_SIZE` and friends in `server/ctdb_control.c` and its handlers). A
/// request that fails the check gets status -1 and no error string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeCheck {
    /// `datalen` must be exactly this.
    Exact(usize),
    /// SCHEDULE_FOR_DELETION: at least 36 bytes, and then exactly 36 + the `keylen` at 32.
    KeyData,
    /// REGISTER_NOTIFY: at least 12 bytes, and then exactly 12 + the `len` at 8.
    NotifyData,
    /// ADD_PUBLIC_IP, DEL_PUBLIC_IP, SEND_GRATUITOUS_ARP: at least 36 bytes, and then exactly
    /// 36 + the `len` at 32.
    AddrInfo,
    /// SET_TCP_TICKLE_LIST: at least 32 bytes, and then at least 32 + 56 × the `num` at 28.
    TickleList,
    /// Not checked by size, or checked by the handler in its own way (record buffers, traverse
    /// messages, tunables, attaches, srvid-in-header controls, ...), or no longer implemented.
    Unchecked,
}

impl SizeCheck {
    /// Whether the daemon would accept a payload of these bytes.
    pub fn accepts(self, data: &[u8]) -> bool {
        let u32_at = |off: usize| -> Option<usize> {
            let bytes = data.get(off..off + 4)?;
            let mut raw = [0u8; 4];
            raw.copy_from_slice(bytes);
            Some(u32::from_ne_bytes(raw) as usize)
        };
        match self {
            SizeCheck::Exact(n) => data.len() == n,
            SizeCheck::KeyData => u32_at(32).is_some_and(|k| data.len() == 36 + k),
            SizeCheck::NotifyData => u32_at(8).is_some_and(|k| data.len() == 12 + k),
            SizeCheck::AddrInfo => u32_at(32).is_some_and(|k| data.len() == 36 + k),
            SizeCheck::TickleList => u32_at(28).is_some_and(|n| {
                n.checked_mul(56)
                    .and_then(|c| c.checked_add(32))
                    .is_some_and(|need| data.len() >= need)
            }),
            SizeCheck::Unchecked => true,
        }
    }
}

/// The size check the stock daemon applies to `opcode`'s request data.
pub fn stock_size_check(opcode: ControlOpcode) -> SizeCheck {
    use ControlOpcode as Op;
    use SizeCheck::{Exact, Unchecked};
    match opcode {
        Op::Statistics
        | Op::Ping
        | Op::Getvnnmap
        | Op::GetDebug
        | Op::GetDbmap
        | Op::StatisticsReset
        | Op::DumpMemory
        | Op::Freeze
        | Op::Startup
        | Op::GetAllTunables
        | Op::ReloadNodesFile
        | Op::RecdPing
        | Op::GetPublicIps
        | Op::GetNodemap
        | Op::GetReclockFile
        | Op::StopNode
        | Op::ContinueNode
        | Op::GetBanState
        | Op::GetIfaces
        | Op::GetStatHistory
        | Op::ReloadPublicIps
        | Op::Ipreallocated
        | Op::GetRunstate
        | Op::GetNodesFile
        | Op::DisableNode
        | Op::EnableNode => Exact(0),
        Op::ProcessExists
        | Op::SetDebug
        | Op::SetRecmode
        | Op::Getdbpath
        | Op::GetDbname
        | Op::EnableSeqnum
        | Op::UpdateSeqnum
        | Op::SetLmasterrole
        | Op::SetRecmasterrole
        | Op::DbSetHealthy
        | Op::DbGetHealth
        | Op::SetDbReadonly
        | Op::GetDbStatistics
        | Op::SetDbSticky
        | Op::DbFreeze
        | Op::DbThaw
        | Op::DbTransactionCancel
        | Op::DbPushConfirm
        | Op::DbOpenFlags => Exact(4),
        Op::GetDbSeqnum
        | Op::WipeDatabase
        | Op::RecdReclockLatency
        | Op::SetBanState
        | Op::DeregisterNotify
        | Op::DbTransactionStart
        | Op::DbTransactionCommit => Exact(8),
        Op::ModifyFlags | Op::CheckPidSrvid => Exact(12),
        Op::TraverseStart | Op::TraverseKill | Op::DbPull | Op::DbPushStart => Exact(16),
        Op::TraverseStartExt | Op::SetIfaceLinkState => Exact(24),
        Op::GetTcpTickleList | Op::GetPublicIpInfo => Exact(SOCK_ADDR_LEN),
        Op::TakeoverIp | Op::ReleaseIp => Exact(PublicIp::WIRE_LEN),
        Op::TcpClient | Op::TcpAdd | Op::TcpAddDelayedUpdate | Op::TcpRemove => {
            Exact(Connection::WIRE_LEN)
        }
        Op::DbVacuum => Exact(DbVacuum::WIRE_LEN),
        Op::ScheduleForDeletion => SizeCheck::KeyData,
        Op::RegisterNotify => SizeCheck::NotifyData,
        Op::AddPublicIp | Op::DelPublicIp | Op::SendGratuitousArp => SizeCheck::AddrInfo,
        Op::SetTcpTickleList => SizeCheck::TickleList,
        _ => Unchecked,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::types::fill;
    use crate::testing::{seeds, Prng};

    /// A random request payload of `kind`, the way a sender of that opcode would build it.
    fn fill_request(kind: RequestKind, rng: &mut Prng) -> ControlRequestData {
        use ControlRequestData as D;
        use RequestKind as K;
        match kind {
            K::Empty => D::Empty,
            K::Pid => D::Pid(rng.i32()),
            K::DbId => D::DbId(rng.u32()),
            K::DbIdPadded => D::DbIdPadded(rng.u32()),
            K::VnnMap => D::VnnMap(fill::vnn_map(rng)),
            K::DebugLevel => D::DebugLevel(rng.i32()),
            K::RecMode => D::RecMode(RecoveryMode::from(rng.u32() % 3)),
            K::DbName => D::DbName(rng.string(40)),
            K::TraverseStart => D::TraverseStart(fill::traverse_start(rng)),
            K::TraverseAll => D::TraverseAll(fill::traverse_all(rng)),
            K::RecData => D::RecData(fill::rec_data(rng)),
            K::Connection => D::Connection(fill::connection(rng)),
            K::Tunable => D::Tunable(fill::tunable(rng)),
            K::TunableName => D::TunableName(rng.string(30)),
            K::NodeFlagChange => D::NodeFlagChange(fill::node_flag_change(rng)),
            K::SockAddr => D::SockAddr(fill::sock_addr(rng)),
            K::TickleList => D::TickleList(fill::tickle_list(rng)),
            K::RecBuffer => D::RecBuffer(fill::rec_buffer(rng)),
            K::AddrInfo => D::AddrInfo(fill::addr_info(rng)),
            K::Transdb => D::Transdb(fill::transdb(rng)),
            K::PublicIp => D::PublicIp(fill::public_ip(rng)),
            K::ReclockLatency => D::ReclockLatency(rng.f64()),
            K::Role => D::Role(rng.u32()),
            K::BanState => D::BanState(fill::ban_state(rng)),
            K::NotifyData => D::NotifyData(fill::notify_data(rng)),
            K::Srvid => D::Srvid(rng.next_u64()),
            K::Iface => D::Iface(fill::iface(rng)),
            K::KeyData => D::KeyData(fill::key_data(rng)),
            K::TraverseStartExt => D::TraverseStartExt(fill::traverse_start_ext(rng)),
            K::TraverseAllExt => D::TraverseAllExt(fill::traverse_all_ext(rng)),
            K::PulldbExt => D::PulldbExt(fill::pulldb_ext(rng)),
            K::PidSrvid => D::PidSrvid(fill::pid_srvid(rng)),
            K::DbVacuum => D::DbVacuum(fill::db_vacuum(rng)),
            K::EchoData => D::EchoData(fill::echo_data(rng)),
            K::Raw => D::Raw(rng.bytes(40)),
        }
    }

    /// A random reply payload of `kind`.
    fn fill_reply(kind: ReplyKind, rng: &mut Prng) -> ControlReplyData {
        use ControlReplyData as D;
        use ReplyKind as K;
        match kind {
            K::Empty => D::Empty,
            K::Statistics => D::Statistics(Box::new(fill::statistics(rng))),
            K::DbPath => D::DbPath(rng.string(60)),
            K::VnnMap => D::VnnMap(fill::vnn_map(rng)),
            K::DebugLevel => D::DebugLevel(rng.i32()),
            K::DbidMap => D::DbidMap(fill::dbid_map(rng)),
            K::DbId => D::DbId(rng.u32()),
            K::DbName => D::DbName(rng.string(40)),
            K::MemoryReport => D::MemoryReport(rng.string(200)),
            K::TunableValue => D::TunableValue(rng.u32()),
            K::VarList => D::VarList(fill::var_list(rng)),
            K::TunableList => D::TunableList(Box::new(fill::tunable_list(rng))),
            K::TickleList => D::TickleList(fill::tickle_list(rng)),
            K::Uptime => D::Uptime(fill::uptime(rng)),
            K::RecBuffer => D::RecBuffer(fill::rec_buffer(rng)),
            K::Capabilities => D::Capabilities(rng.u32()),
            K::PublicIpList => D::PublicIpList(fill::public_ip_list(rng)),
            K::NodeMap => D::NodeMap(fill::node_map(rng)),
            K::ReclockFile => D::ReclockFile(rng.bool().then(|| rng.string(60))),
            K::BanState => D::BanState(fill::ban_state(rng)),
            K::Seqnum => D::Seqnum(rng.next_u64()),
            K::HealthReason => D::HealthReason(rng.bool().then(|| rng.string(60))),
            K::PublicIpInfo => D::PublicIpInfo(fill::public_ip_info(rng)),
            K::IfaceList => D::IfaceList(fill::iface_list(rng)),
            K::StatisticsList => D::StatisticsList(fill::statistics_list(rng)),
            K::DbStatistics => D::DbStatistics(Box::new(fill::db_statistics(rng))),
            K::Runstate => D::Runstate(Runstate::from(rng.u32() % 8)),
            K::NumRecords => D::NumRecords(rng.u32()),
            K::TdbFlags => D::TdbFlags(rng.i32()),
            K::EchoData => D::EchoData(fill::echo_data(rng)),
            K::Raw => D::Raw(rng.bytes(40)),
        }
    }

    /// Every opcode 0–158, plus a few unknown values beyond.
    fn opcodes() -> impl Iterator<Item = ControlOpcode> {
        (0..=165u32).chain([999, u32::MAX]).map(ControlOpcode::from)
    }

    /// Request kinds whose encoding is self-delimiting, so every strict prefix must fail.
    fn request_is_delimited(kind: RequestKind) -> bool {
        !matches!(
            kind,
            RequestKind::Empty | RequestKind::DbName | RequestKind::Raw
        )
    }

    fn reply_is_delimited(kind: ReplyKind) -> bool {
        !matches!(
            kind,
            ReplyKind::Empty
                | ReplyKind::DbPath
                | ReplyKind::DbName
                | ReplyKind::MemoryReport
                | ReplyKind::ReclockFile
                | ReplyKind::HealthReason
                | ReplyKind::Raw
        )
    }

    #[test]
    fn every_opcode_request_round_trips() {
        for seed in seeds(200) {
            for opcode in opcodes() {
                let mut rng = Prng::new(seed ^ (u64::from(u32::from(opcode)) << 20));
                let kind = request_kind(opcode);
                let data = fill_request(kind, &mut rng);
                let what = format!(
                    "request {} ({}) seed {seed}",
                    opcode.name(),
                    u32::from(opcode)
                );
                assert!(data.suits(opcode), "{what}");
                let bytes = data.to_bytes();
                assert_eq!(bytes.len(), data.wire_len(), "{what}: wire_len");
                let back = pull_request_data(opcode, &bytes)
                    .unwrap_or_else(|e| panic!("{what}: {e} for {data:?}"));
                assert_eq!(back, data, "{what}");
                if request_is_delimited(kind) {
                    for cut in 0..bytes.len() {
                        assert!(
                            pull_request_data(opcode, &bytes[..cut]).is_err(),
                            "{what}: prefix {cut} accepted"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn every_opcode_reply_round_trips() {
        for seed in seeds(200) {
            for opcode in opcodes() {
                let mut rng = Prng::new(seed ^ (u64::from(u32::from(opcode)) << 20));
                let kind = reply_kind(opcode);
                let data = fill_reply(kind, &mut rng);
                let what = format!(
                    "reply {} ({}) seed {seed}",
                    opcode.name(),
                    u32::from(opcode)
                );
                assert!(data.suits(opcode), "{what}");
                let bytes = data.to_bytes();
                assert_eq!(bytes.len(), data.wire_len(), "{what}: wire_len");
                let back = pull_reply_data(opcode, &bytes)
                    .unwrap_or_else(|e| panic!("{what}: {e} for {data:?}"));
                assert_eq!(back, data, "{what}");
                if reply_is_delimited(kind) {
                    for cut in 0..bytes.len() {
                        assert!(
                            pull_reply_data(opcode, &bytes[..cut]).is_err(),
                            "{what}: prefix {cut} accepted"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn trailing_bytes_are_ignored_like_stock() {
        let mut bytes = ControlRequestData::DbId(7).to_bytes();
        bytes.extend_from_slice(&[1, 2, 3]);
        assert_eq!(
            pull_request_data(ControlOpcode::GetDbname, &bytes),
            Ok(ControlRequestData::DbId(7))
        );
        assert_eq!(
            pull_reply_data(ControlOpcode::GetPnn, &[1, 2, 3, 4]),
            Ok(ControlReplyData::Empty)
        );
        let mut map = ControlReplyData::VnnMap(VnnMap {
            generation: 1,
            map: vec![0],
        })
        .to_bytes();
        map.push(9);
        assert!(pull_reply_data(ControlOpcode::Getvnnmap, &map).is_ok());
    }

    #[test]
    fn garbage_never_panics() {
        for seed in seeds(200) {
            let mut rng = Prng::new(seed);
            for opcode in opcodes() {
                let junk = rng.bytes(600);
                let _ = pull_request_data(opcode, &junk);
                let _ = pull_reply_data(opcode, &junk);
            }
        }
        // Counts and lengths far beyond the data are refused without allocating them.
        let huge = [0xffu8; 64];
        for opcode in opcodes() {
            let _ = pull_request_data(opcode, &huge);
            let _ = pull_reply_data(opcode, &huge);
        }
    }

    #[test]
    fn mapping_spot_checks() {
        use ControlOpcode as Op;
        for op in [
            Op::GetPnn,
            Op::GetPid,
            Op::Ping,
            Op::GetRecmode,
            Op::ProcessExists,
            Op::CheckPidSrvid,
            Op::Trans3Commit,
            Op::DbVacuum,
            Op::RegisterSrvid,
            Op::SetRecmode,
        ] {
            assert_eq!(reply_kind(op), ReplyKind::Empty, "{}", op.name());
        }
        for &op in Op::ALL {
            let raw = request_kind(op) == RequestKind::Raw;
            assert_eq!(raw, op.is_obsolete(), "{}", op.name());
            assert_eq!(reply_kind(op) == ReplyKind::Raw, raw, "{}", op.name());
        }
        assert_eq!(request_kind(Op::GetDbSeqnum), RequestKind::DbIdPadded);
        assert_eq!(reply_kind(Op::GetDbSeqnum), ReplyKind::Seqnum);
        assert_eq!(request_kind(Op::CheckPidSrvid), RequestKind::PidSrvid);
        assert_eq!(request_kind(Op::GetNodemapV4), RequestKind::Raw);
        assert_eq!(reply_kind(Op::GetNodemapV4), ReplyKind::Raw);
        assert_eq!(request_kind(Op::Unknown(2)), RequestKind::Raw);
        assert_eq!(reply_kind(Op::Unknown(999)), ReplyKind::Raw);
        assert_eq!(request_kind(Op::TraverseKill), RequestKind::TraverseStart);
        assert_eq!(reply_kind(Op::GetNodesFile), ReplyKind::NodeMap);
        assert_eq!(reply_kind(Op::DbPull), ReplyKind::NumRecords);
        assert_eq!(reply_kind(Op::TryDeleteRecords), ReplyKind::RecBuffer);
        assert_eq!(request_kind(Op::StartPersistentUpdate), RequestKind::Empty);
        // Obsolete opcodes carry their bytes through untouched.
        assert_eq!(
            pull_request_data(Op::SetDmaster, &[1, 2]),
            Ok(ControlRequestData::Raw(vec![1, 2]))
        );
    }

    #[test]
    fn string_conventions() {
        use ControlOpcode as Op;
        // Names and paths carry their NUL; pulls stop at the first NUL and do not need one.
        let attach = ControlRequestData::DbName("test.tdb".into()).to_bytes();
        assert_eq!(attach, b"test.tdb\0");
        assert_eq!(
            pull_request_data(Op::DbAttach, b"test.tdb"),
            Ok(ControlRequestData::DbName("test.tdb".into()))
        );
        assert_eq!(
            pull_reply_data(Op::Getdbpath, b"/var/db\0junk"),
            Ok(ControlReplyData::DbPath("/var/db".into()))
        );
        // No cluster lock / healthy database: zero bytes.
        assert_eq!(
            pull_reply_data(Op::GetReclockFile, b""),
            Ok(ControlReplyData::ReclockFile(None))
        );
        assert!(ControlReplyData::ReclockFile(None).to_bytes().is_empty());
        assert_eq!(
            ControlReplyData::ReclockFile(Some("/l".into())).to_bytes(),
            b"/l\0"
        );
        assert_eq!(
            pull_reply_data(Op::DbGetHealth, b""),
            Ok(ControlReplyData::HealthReason(None))
        );
        // The memory report goes out without a NUL.
        assert_eq!(
            ControlReplyData::MemoryReport("full talloc report".into()).to_bytes(),
            b"full talloc report"
        );
        // GET_TUNABLE names are length-prefixed.
        let get = ControlRequestData::TunableName("RecoverTimeout".into()).to_bytes();
        assert_eq!(&get[..4], &15u32.to_ne_bytes());
        assert_eq!(&get[4..], b"RecoverTimeout\0");
    }

    #[test]
    fn fixed_request_layouts() {
        use ControlOpcode as Op;
        assert_eq!(
            ControlRequestData::DbIdPadded(0x1122_3344).to_bytes(),
            [0x44, 0x33, 0x22, 0x11, 0, 0, 0, 0]
        );
        assert!(pull_request_data(Op::GetDbSeqnum, &[1, 0, 0, 0]).is_err());
        assert_eq!(
            ControlRequestData::RecMode(RecoveryMode::Active).to_bytes(),
            1u32.to_ne_bytes()
        );
        assert_eq!(
            pull_request_data(Op::SetRecmode, &7u32.to_ne_bytes()),
            Ok(ControlRequestData::RecMode(RecoveryMode::Unknown(7)))
        );
        assert_eq!(ControlRequestData::ReclockLatency(0.5).to_bytes().len(), 8);
        assert_eq!(
            pull_reply_data(Op::GetRunstate, &[5, 0, 0, 0]),
            Ok(ControlReplyData::Runstate(Runstate::Running))
        );
        assert_eq!(
            pull_reply_data(Op::GetCapabilities, &[3, 0, 3, 0]),
            Ok(ControlReplyData::Capabilities(
                crate::protocol::types::capabilities::DEFAULT
            ))
        );
        assert_eq!(
            pull_reply_data(Op::GetBanState, &[0; 8]),
            Ok(ControlReplyData::BanState(BanState::default()))
        );
        assert_eq!(
            pull_reply_data(Op::GetTunable, &[0x1e, 0, 0, 0]),
            Ok(ControlReplyData::TunableValue(30))
        );
    }

    #[test]
    fn stock_replies_from_appendix_a() {
        use ControlOpcode as Op;
        let vnnmap = [0xc0, 0xf4, 0x11, 0x52, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0];
        let reply = pull_reply_data(Op::Getvnnmap, &vnnmap).unwrap();
        assert_eq!(
            reply,
            ControlReplyData::VnnMap(VnnMap {
                generation: 0x5211_f4c0,
                map: vec![0, 1]
            })
        );
        assert_eq!(reply.to_bytes(), vnnmap);

        let mut ifaces = 1u32.to_ne_bytes().to_vec();
        ifaces.extend_from_slice(b"lo");
        ifaces.extend_from_slice(&[0; 16]);
        ifaces.extend_from_slice(&[1, 0, 0, 0, 0, 0]);
        let reply = pull_reply_data(Op::GetIfaces, &ifaces).unwrap();
        assert_eq!(reply.to_bytes(), ifaces);

        let mut ips = 2u32.to_ne_bytes().to_vec();
        for ip in [[192, 168, 200, 1], [192, 168, 100, 1]] {
            ips.extend_from_slice(&[0xff; 4]);
            ips.extend_from_slice(&[2, 0, 0, 0]);
            ips.extend_from_slice(&ip);
            ips.extend_from_slice(&[0; 20]);
        }
        let reply = pull_reply_data(Op::GetPublicIps, &ips).unwrap();
        assert_eq!(reply.to_bytes(), ips);

        assert_eq!(
            pull_reply_data(Op::GetDbmap, &[0; 4]),
            Ok(ControlReplyData::DbidMap(DbidMap::default()))
        );
        assert_eq!(
            pull_reply_data(Op::Statistics, &[0; 488]).map(|d| d.wire_len()),
            Ok(488)
        );
        assert!(pull_reply_data(Op::Statistics, &[0; 487]).is_err());
        assert!(pull_reply_data(Op::GetAllTunables, &[0; 247]).is_err());
        assert!(pull_reply_data(Op::Uptime, &[0; 63]).is_err());
    }

    #[test]
    fn stock_size_checks() {
        use ControlOpcode as Op;
        assert_eq!(stock_size_check(Op::CheckPidSrvid), SizeCheck::Exact(12));
        assert_eq!(stock_size_check(Op::GetDbSeqnum), SizeCheck::Exact(8));
        assert_eq!(stock_size_check(Op::ProcessExists), SizeCheck::Exact(4));
        assert_eq!(stock_size_check(Op::TraverseStartExt), SizeCheck::Exact(24));
        assert_eq!(stock_size_check(Op::DbPull), SizeCheck::Exact(16));
        assert_eq!(stock_size_check(Op::DbVacuum), SizeCheck::Exact(5));
        assert_eq!(stock_size_check(Op::GetPnn), SizeCheck::Unchecked);
        assert!(!SizeCheck::Exact(12).accepts(&[0; 16]));

        let mut rng = Prng::new(1);
        // Whatever a well-formed sender builds passes the daemon's check.
        for opcode in opcodes() {
            let data = fill_request(request_kind(opcode), &mut rng);
            if matches!(data, ControlRequestData::Raw(_)) {
                continue;
            }
            let check = stock_size_check(opcode);
            assert!(check.accepts(&data.to_bytes()), "{}", opcode.name());
        }
        let key = ControlRequestData::KeyData(KeyData {
            key: b"k".to_vec(),
            ..KeyData::default()
        })
        .to_bytes();
        assert!(SizeCheck::KeyData.accepts(&key));
        assert!(!SizeCheck::KeyData.accepts(&key[..36]));
        assert!(!SizeCheck::KeyData.accepts(&key[..20]));
        let mut tickles = SockAddr::default().to_bytes();
        tickles.extend_from_slice(&u32::MAX.to_ne_bytes());
        assert!(!SizeCheck::TickleList.accepts(&tickles));
    }
}
