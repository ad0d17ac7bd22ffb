//! The `ctdb-bench` load tool and the report of `bench/run.sh` (no stock counterpart: CTDB's
//! own test programs such as `message_ring` are not packaged, so this drives both daemons
//! through the client protocol).
//!
//! Every workload prints `key=value` lines ([`output`]); the harness collects them per
//! benchmark, side and repetition, and [`report`] turns them into the side-by-side table.

pub mod concurrent;
pub mod conn;
#[cfg(test)]
mod fake;
pub mod fetch_lock;
pub mod output;
pub mod procfs;
pub mod report;
pub mod ring;
pub mod rtt;
pub mod stats;
pub mod timing;
pub mod volatile;
