//! Many clients at once, each with one control in flight (closed loop).
//!
//! Every connection sends a control, waits for the reply, and sends the next, until it has
//! made its share. The daemon sees `clients` independent clients, as it would with that many
//! smbd processes; the figures are total throughput and the latency distribution under that
//! load.

use super::conn::Pump;
use super::output::KeyValues;
use super::stats::LatencySummary;
use crate::client::ClientError;
use crate::common::clock::{Instant, MonotonicClock};
use crate::protocol::opcode::ControlOpcode;
use crate::protocol::packet::Body;
use std::path::Path;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct ConcurrentOptions {
    pub clients: usize,
    /// Round trips per client.
    pub count: usize,
    pub destnode: u32,
    pub opcode: ControlOpcode,
    /// Give up when the whole run takes longer than this.
    pub timeout: Duration,
}

#[derive(Debug)]
struct InFlight {
    reqid: u32,
    sent_at: Instant,
    remaining: usize,
}

pub fn run(socket: &Path, options: &ConcurrentOptions) -> Result<KeyValues, ClientError> {
    let mut pump = Pump::new()?;
    for _ in 0..options.clients {
        pump.connect(socket)?;
    }
    let clock = MonotonicClock::new();
    let total = options.clients * options.count;
    let mut samples: Vec<f64> = Vec::with_capacity(total);
    let mut flights: Vec<InFlight> = Vec::with_capacity(options.clients);
    let started = clock.now();
    for index in 0..pump.len() {
        let reqid =
            pump.conn(index)?
                .send_control(options.destnode, options.opcode, 0, Vec::new())?;
        flights.push(InFlight {
            reqid,
            sent_at: clock.now(),
            remaining: options.count,
        });
    }
    let deadline = started.saturating_add(options.timeout);
    let mut finished = 0;
    while finished < options.clients && options.count > 0 {
        let now = clock.now();
        if now >= deadline {
            return Err(ClientError::Timeout);
        }
        let wait = deadline.saturating_since(now).min(Duration::from_secs(1));
        pump.turn(wait, |conn, index, packet| {
            let Body::ReplyControl(_) = packet.body else {
                return Ok(());
            };
            let Some(flight) = flights.get_mut(index) else {
                return Ok(());
            };
            if packet.reqid != flight.reqid || flight.remaining == 0 {
                return Ok(());
            }
            let now = clock.now();
            samples.push(now.saturating_since(flight.sent_at).as_secs_f64() * 1e6);
            flight.remaining -= 1;
            if flight.remaining == 0 {
                finished += 1;
            } else {
                flight.reqid =
                    conn.send_control(options.destnode, options.opcode, 0, Vec::new())?;
                flight.sent_at = now;
            }
            Ok(())
        })?;
    }
    let elapsed = clock.now().saturating_since(started).as_secs_f64();
    let mut kv = KeyValues::new();
    kv.label("opcode", options.opcode.name())
        .count("clients", options.clients as u64)
        .count("count", samples.len() as u64)
        .number("elapsed_s", elapsed);
    if elapsed > 0.0 {
        kv.number("ops_per_s", samples.len() as f64 / elapsed);
    }
    if let Some(summary) = LatencySummary::from_samples(&mut samples) {
        for (key, value) in summary.pairs() {
            kv.number(key, value);
        }
    }
    Ok(kv)
}
