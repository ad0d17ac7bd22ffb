//! Public IP allocation (mirrors `ctdb/server/ipalloc.c` and the algorithm files
//! `ipalloc_common.c`, `ipalloc_deterministic.c`, `ipalloc_nondeterministic.c` and
//! `ipalloc_lcp2.c` of CTDB 4.17).
//!
//! Pure: the caller supplies each node's known and available public IPs (the two
//! `GET_PUBLIC_IPS` answers, indexed by PNN) and gets back the merged address list with the node
//! that should host each address. The result, and every log line, is identical to stock for
//! every input, including stock's list order and tie-breaks and its wrapping `uint32_t`
//! arithmetic. Only the cost differs: LCP2 keeps per-(address, node) distance sums up to date
//! instead of recomputing them (see `lcp2.rs`).
//!
//! The order everything depends on: the merged list is sorted by descending [`addr::ip_key`]
//! (so IPv6 comes before IPv4, and `192.168.1.10` before `192.168.1.9`); every "first" below is
//! first in that order.

pub mod addr;
mod cheapest;
mod common;
mod deterministic;
pub mod driver;
mod lcp2;
mod nondeterministic;

use std::fmt;
use std::net::IpAddr;

pub use addr::CtdbIp;

use crate::common::logging::{DEBUG_DEBUG, DEBUG_ERR, DEBUG_INFO, DEBUG_NOTICE, DEBUG_WARNING};

/// `CTDB_UNKNOWN_PNN`: the address is not hosted anywhere.
pub const UNKNOWN_PNN: u32 = u32::MAX;

/// The `IPAllocAlgorithm` tunable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Algorithm {
    Deterministic,
    NonDeterministic,
    #[default]
    Lcp2,
}

impl Algorithm {
    /// `determine_algorithm`: 0 and 1 pick the old algorithms, everything else is LCP2.
    pub fn from_tunable(value: u32) -> Self {
        match value {
            0 => Algorithm::Deterministic,
            1 => Algorithm::NonDeterministic,
            _ => Algorithm::Lcp2,
        }
    }
}

/// One entry of a `GET_PUBLIC_IPS` answer (`struct ctdb_public_ip`): an address and the node
/// the answering node believes hosts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicIp {
    pub pnn: u32,
    pub addr: IpAddr,
}

/// The `ipalloc_state_init` arguments other than the node count.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    pub algorithm: Algorithm,
    /// `NoIPTakeover`: no node may take on an address (hosted ones stay where they can).
    pub no_ip_takeover: bool,
    /// `NoIPFailback`: place unhosted addresses but never move hosted ones to rebalance.
    pub no_ip_failback: bool,
    /// Nodes named by `REBALANCE_NODE` since the last run; LCP2 lets addresses move onto them.
    pub force_rebalance_nodes: Vec<u32>,
}

/// A set of PNNs (`struct bitmap`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeSet {
    words: Vec<u64>,
}

impl NodeSet {
    pub fn contains(&self, pnn: u32) -> bool {
        let pnn = pnn as usize;
        self.words
            .get(pnn / 64)
            .is_some_and(|w| w & (1u64 << (pnn % 64)) != 0)
    }

    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.words.iter().enumerate().flat_map(|(i, &w)| {
            (0..64u32)
                .filter(move |bit| w & (1u64 << bit) != 0)
                .map(move |bit| i as u32 * 64 + bit)
        })
    }
}

/// One address of the merged list after allocation (`struct public_ip_list`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocatedIp {
    pub addr: IpAddr,
    /// The node that should host it, or [`UNKNOWN_PNN`].
    pub pnn: u32,
    /// Nodes that reported the address at all (these get a release if they are not `pnn`).
    pub known_on: NodeSet,
    /// Nodes that may host it.
    pub available_on: NodeSet,
}

/// Where allocation log lines go. Levels are CTDB's (`DEBUG_ERR` 0 ... `DEBUG_DEBUG` 10); lines
/// carry no trailing newline. Lines are only formatted when [`IpallocLog::enabled`] says so,
/// which keeps the fast paths fast.
pub trait IpallocLog {
    fn enabled(&self, level: i32) -> bool;
    fn log(&mut self, level: i32, message: fmt::Arguments<'_>);
}

/// Discards everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoLog;

impl IpallocLog for NoLog {
    fn enabled(&self, _level: i32) -> bool {
        false
    }
    fn log(&mut self, _level: i32, _message: fmt::Arguments<'_>) {}
}

/// Keeps the lines at or below a level, as the takeover test driver prints them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LineLog {
    pub level: i32,
    pub lines: Vec<String>,
}

impl LineLog {
    pub fn new(level: i32) -> Self {
        LineLog {
            level,
            lines: Vec::new(),
        }
    }
}

impl IpallocLog for LineLog {
    fn enabled(&self, level: i32) -> bool {
        level <= self.level
    }
    fn log(&mut self, level: i32, message: fmt::Arguments<'_>) {
        if self.enabled(level) {
            self.lines.push(message.to_string());
        }
    }
}

/// Forwards to the `log` crate with CTDB's level mapping (NOTICE is `info!`, INFO is `debug!`,
/// DEBUG is `trace!`).
#[derive(Debug, Clone, Copy, Default)]
pub struct StdLog;

fn std_level(level: i32) -> log::Level {
    match level {
        l if l <= DEBUG_ERR => log::Level::Error,
        l if l <= DEBUG_WARNING => log::Level::Warn,
        l if l <= DEBUG_NOTICE => log::Level::Info,
        l if l <= DEBUG_INFO => log::Level::Debug,
        _ => log::Level::Trace,
    }
}

impl IpallocLog for StdLog {
    fn enabled(&self, level: i32) -> bool {
        log::log_enabled!(std_level(level))
    }
    fn log(&mut self, level: i32, message: fmt::Arguments<'_>) {
        log::log!(std_level(level), "{message}");
    }
}

/// Logs a line if the sink wants that level; arguments are not evaluated otherwise.
macro_rules! ilog {
    ($sink:expr, $level:expr, $($arg:tt)*) => {
        if $sink.enabled($level) {
            $sink.log($level, format_args!($($arg)*));
        }
    };
}
pub(crate) use ilog;

// Re-exported for the algorithm files, which log at these levels.
pub(crate) const LOG_ERR: i32 = DEBUG_ERR;
pub(crate) const LOG_WARNING: i32 = DEBUG_WARNING;
pub(crate) const LOG_NOTICE: i32 = DEBUG_NOTICE;
pub(crate) const LOG_INFO: i32 = DEBUG_INFO;
pub(crate) const LOG_DEBUG: i32 = DEBUG_DEBUG;

/// `ipalloc_can_host_ips`: false when no node knows any address, or when none is hosted and no
/// node has any available (then the leader skips straight to `IPREALLOCATED`).
pub fn can_host_ips(known: &[Vec<PublicIp>], available: &[Vec<PublicIp>]) -> bool {
    let mut have_ips = false;
    for (node, ips) in known.iter().enumerate() {
        if !ips.is_empty() {
            have_ips = true;
            if ips.iter().any(|ip| ip.pnn as usize == node) {
                return true;
            }
        }
    }
    have_ips
        && available
            .iter()
            .take(known.len())
            .any(|ips| !ips.is_empty())
}

/// `ipalloc`: merges the nodes' lists and runs the chosen algorithm. `known` has one entry per
/// node (its length is the node count); `available` is indexed the same way (missing entries
/// count as empty). The result is the merged list in stock's order; it is empty when no node
/// knows any address (stock returns NULL then).
pub fn ipalloc(
    known: &[Vec<PublicIp>],
    available: &[Vec<PublicIp>],
    options: &Options,
    log: &mut dyn IpallocLog,
) -> Vec<AllocatedIp> {
    let mut state = common::State::new(known, available, options, log);
    if state.num_ips() == 0 {
        return Vec::new();
    }
    match options.algorithm {
        Algorithm::Lcp2 => lcp2::run(&mut state),
        Algorithm::Deterministic => deterministic::run(&mut state),
        Algorithm::NonDeterministic => nondeterministic::run(&mut state),
    }
    state.into_result()
}
