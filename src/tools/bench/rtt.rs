//! Control round trips on one connection (benchmarks B1 and B2).
//!
//! One blocking [`Client`]: send a control, wait for its reply, repeat. To the local node the
//! daemon answers itself; to a remote node the daemon forwards the control over TCP and relays
//! the reply, so the difference between the two is the node-to-node hop.

use super::output::KeyValues;
use super::stats::LatencySummary;
use crate::client::{Client, ClientError, DEFAULT_TIMEOUT};
use crate::common::clock::MonotonicClock;
use crate::protocol::opcode::ControlOpcode;
use std::path::Path;

#[derive(Debug, Clone)]
pub struct RttOptions {
    /// PNN, or `CURRENT_NODE` for the node the socket belongs to.
    pub destnode: u32,
    pub opcode: ControlOpcode,
    pub count: usize,
    /// Round trips made first and not measured (connection set-up, caches).
    pub warmup: usize,
}

pub fn run(socket: &Path, options: &RttOptions) -> Result<KeyValues, ClientError> {
    let mut client = Client::connect(socket)?;
    let round_trip = |client: &mut Client| {
        client.control(
            options.destnode,
            options.opcode,
            0,
            0,
            Vec::new(),
            DEFAULT_TIMEOUT,
        )
    };
    for _ in 0..options.warmup {
        round_trip(&mut client)?;
    }
    let clock = MonotonicClock::new();
    let mut samples = Vec::with_capacity(options.count);
    let started = clock.now();
    for _ in 0..options.count {
        let before = clock.now();
        round_trip(&mut client)?;
        samples.push(clock.now().saturating_since(before).as_secs_f64() * 1e6);
    }
    let elapsed = clock.now().saturating_since(started).as_secs_f64();
    let mut kv = KeyValues::new();
    kv.label("opcode", options.opcode.name())
        .count("count", options.count as u64);
    if let Some(summary) = LatencySummary::from_samples(&mut samples) {
        for (key, value) in summary.pairs() {
            kv.number(key, value);
        }
    }
    if elapsed > 0.0 {
        kv.number("ops_per_s", options.count as f64 / elapsed);
    }
    Ok(kv)
}
