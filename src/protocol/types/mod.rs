//! Control payload types (mirrors `ctdb/protocol/protocol_types.c` and the type half of
//! `ctdb/protocol/protocol.h`).
//!
//! Every struct here has the byte layout that stock CTDB 4.17 produces on x86_64: either the
//! marshalling of `protocol_types.c` or, where the daemon still `memcpy`s a raw C struct, that
//! struct's layout (the two agree for every type below). Alignment holes are written as zeros
//! and ignored on input, as `ctdb_padding_pull` does.
//!
//! Pulls are as lenient as stock's where stock is lenient (trailing bytes after a complete value
//! are left to the caller; strings end at the first NUL inside their length) and strict where
//! stock is strict (`bool` must be 0 or 1, every count must be backed by bytes). Unlike stock,
//! no count or inner length is trusted before it is checked against the bytes that remain.

mod db;
mod ip;
mod message;
mod node;
mod stats;
mod tunable;

#[cfg(test)]
pub(crate) mod fill;

pub use db::{
    DbVacuum, Dbid, DbidMap, EchoData, KeyData, NotifyData, PidSrvid, Pulldb, PulldbExt, RecBuffer,
    RecBufferView, RecData, RecDataView, ServerId, Transdb, TraverseAll, TraverseAllExt,
    TraverseStart, TraverseStartExt, REC_DATA_HEADER_LEN,
};
pub use ip::{
    AddrInfo, Connection, Iface, IfaceList, PublicIp, PublicIpInfo, PublicIpList, TickleList,
    IFACE_NAME_LEN,
};
pub use message::{DisableMessage, ElectionMessage, SrvidMessage};
pub use node::{BanState, NodeAndFlags, NodeFlagChange, NodeMap, Uptime, VnnMap};
pub use stats::{
    ClientPacketCounters, DbStatistics, HotKey, LatencyCounter, LockStatistics, NodePacketCounters,
    ReclockLatency, Statistics, StatisticsList, TimeoutCounters, DB_STATISTICS_FIXED_LEN,
    STATISTICS_LEN,
};
pub use tunable::{Tunable, TunableList, VarList, TUNABLE_COUNT};

use super::basic::{Marshal, PullError, Reader};

/// Buckets of the latency histograms in the statistics structs (`MAX_COUNT_BUCKETS`).
pub const MAX_COUNT_BUCKETS: usize = 16;
/// Hot keys reported per database (`MAX_HOT_KEYS`).
pub const MAX_HOT_KEYS: usize = 10;
/// `IFNAMSIZ` on Linux; `ctdb_iface.name` is two bytes longer than this (`CTDB_IFACE_SIZE`).
pub const CTDB_IFACE_SIZE: usize = 16;
/// `CTDB_LMASTER_ANY`: a pull of every record, whoever its lmaster is.
pub const LMASTER_ANY: u32 = 0xffff_ffff;
/// `INVALID_GENERATION`: the generation of a vnn map that no recovery has set yet.
pub const INVALID_GENERATION: u32 = 1;
/// The pnn of a public address that no node hosts (`CTDB_UNKNOWN_PNN`).
pub const UNKNOWN_PNN: u32 = 0xffff_ffff;

/// Node flags (`NODE_FLAGS_*`), as carried by node maps and `MODIFY_FLAGS`.
pub mod node_flags {
    pub const DISCONNECTED: u32 = 0x0000_0001;
    pub const UNHEALTHY: u32 = 0x0000_0002;
    pub const PERMANENTLY_DISABLED: u32 = 0x0000_0004;
    pub const BANNED: u32 = 0x0000_0008;
    pub const DELETED: u32 = 0x0000_0010;
    pub const STOPPED: u32 = 0x0000_0020;
    pub const DISABLED: u32 = UNHEALTHY | PERMANENTLY_DISABLED;
    pub const INACTIVE: u32 = DELETED | DISCONNECTED | BANNED | STOPPED;
}

/// Node capabilities and features (`CTDB_CAP_*`), the reply of `GET_CAPABILITIES`.
pub mod capabilities {
    pub const RECMASTER: u32 = 0x0000_0001;
    pub const LMASTER: u32 = 0x0000_0002;
    /// Obsolete; never set by 4.17.
    pub const LVS: u32 = 0x0000_0004;
    /// Obsolete; never set by 4.17.
    pub const NATGW: u32 = 0x0000_0008;
    pub const PARALLEL_RECOVERY: u32 = 0x0001_0000;
    pub const FRAGMENTED_CONTROLS: u32 = 0x0002_0000;
    pub const FEATURES: u32 = PARALLEL_RECOVERY | FRAGMENTED_CONTROLS;
    /// What a stock daemon reports unless configured otherwise (0x00030003).
    pub const DEFAULT: u32 = RECMASTER | LMASTER | FEATURES;
}

/// Database flags (`CTDB_DB_FLAGS_*`), the `flags` byte of a [`Dbid`].
pub mod db_flags {
    pub const PERSISTENT: u8 = 0x01;
    pub const READONLY: u8 = 0x02;
    pub const STICKY: u8 = 0x04;
    pub const REPLICATED: u8 = 0x08;
}

crate::enum_with_unknown! {
    /// The daemon's life-cycle stage (`enum ctdb_runstate`), the reply of `GET_RUNSTATE`.
    pub enum Runstate {
        /// `CTDB_RUNSTATE_UNKNOWN`, a real value distinct from [`Runstate::Unknown`].
        UnknownState = 0 => "UNKNOWN",
        Init = 1 => "INIT",
        Setup = 2 => "SETUP",
        FirstRecovery = 3 => "FIRST_RECOVERY",
        Startup = 4 => "STARTUP",
        Running = 5 => "RUNNING",
        Shutdown = 6 => "SHUTDOWN",
    }
}

crate::enum_with_unknown! {
    /// Recovery mode (`CTDB_RECOVERY_*`): the argument of `SET_RECMODE` and the status of
    /// `GET_RECMODE`.
    pub enum RecoveryMode {
        Normal = 0 => "NORMAL",
        Active = 1 => "ACTIVE",
    }
}

/// Pulls one `T` from the reader's position and advances past it.
pub(crate) fn pull_item<T: Marshal>(r: &mut Reader<'_>) -> Result<T, PullError> {
    let (value, used) = T::pull(r.rest())?;
    r.skip(used)?;
    Ok(value)
}

/// Pulls `count` items of `T`; `count` must already have been checked against the input (see
/// `Reader::count_u32`) so that it cannot drive a huge allocation.
pub(crate) fn pull_items<T: Marshal>(
    r: &mut Reader<'_>,
    count: usize,
) -> Result<Vec<T>, PullError> {
    let mut items = Vec::with_capacity(count);
    for _ in 0..count {
        items.push(pull_item(r)?);
    }
    Ok(items)
}

/// The text of a C string stored in `bytes`: everything before the first NUL, or all of it when
/// there is none (what `talloc_strndup(buf, buflen)` keeps). Invalid UTF-8 is replaced rather
/// than rejected, because stock treats these as opaque bytes.
pub(crate) fn text_until_nul(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// `ctdb_stringn_pull` as stock does it: a u32 length that must fit in what remains, then a
/// string that ends at the first NUL inside that length (no NUL is required). Length 0 is the
/// NULL string. Unlike stock, the whole declared length is consumed; only trailing bytes of the
/// enclosing payload could tell the difference and every user has the string last.
pub(crate) fn pull_stringn_lenient(r: &mut Reader<'_>) -> Result<Option<String>, PullError> {
    let len = r.len_u32("stringn")?;
    if len == 0 {
        return Ok(None);
    }
    Ok(Some(text_until_nul(r.bytes(len)?)))
}

/// Test helpers shared by the round-trip tests of every payload type.
#[cfg(test)]
pub(crate) mod check {
    use crate::protocol::basic::Marshal;
    use std::fmt::Debug;

    /// Pushes `value`, checks the length, pulls it back and checks value and bytes consumed.
    pub(crate) fn round_trip<T: Marshal + PartialEq + Debug>(what: &str, seed: u64, value: &T) {
        let bytes = value.to_bytes();
        assert_eq!(
            bytes.len(),
            value.wire_len(),
            "{what} seed {seed}: wire_len disagrees with push"
        );
        let (back, used) = T::pull(&bytes)
            .unwrap_or_else(|e| panic!("{what} seed {seed}: pull failed: {e} ({value:?})"));
        assert_eq!(used, bytes.len(), "{what} seed {seed}: consumed");
        assert_eq!(&back, value, "{what} seed {seed}: value changed");
        assert_eq!(back.to_bytes(), bytes, "{what} seed {seed}: bytes changed");
    }

    /// Every strict prefix of `value`'s encoding must be rejected.
    pub(crate) fn prefixes_rejected<T: Marshal + Debug>(what: &str, seed: u64, value: &T) {
        let bytes = value.to_bytes();
        for cut in 0..bytes.len() {
            if let Ok((v, used)) = T::pull(&bytes[..cut]) {
                panic!("{what} seed {seed}: prefix of {cut} bytes accepted ({used} used): {v:?}");
            }
        }
    }

    /// Both of the above, for seeds 1..=200 (or `CTDB_TEST_SEED`).
    pub(crate) fn all_seeds<T: Marshal + PartialEq + Debug>(
        what: &str,
        mut make: impl FnMut(&mut crate::testing::Prng) -> T,
    ) {
        for seed in crate::testing::seeds(200) {
            let mut rng = crate::testing::Prng::new(seed);
            let value = make(&mut rng);
            round_trip(what, seed, &value);
            prefixes_rejected(what, seed, &value);
        }
    }
}
