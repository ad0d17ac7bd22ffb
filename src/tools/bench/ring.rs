//! Message ring across the nodes (benchmark B3), after CTDB's `message_ring` test program.
//!
//! One client per node registers the same srvid. Two tokens travel around the ring, one in
//! each direction: whoever receives a token sends it on to its neighbour in the token's
//! direction (the payload is the direction, +1 or -1, as a host-order int). Every hop is one
//! client-to-daemon write, one daemon-to-daemon forward and one daemon-to-client delivery.
//!
//! The headline figure is what `message_ring` prints: messages received per second by one
//! client (the first node's). The sum over all clients is reported too.

use super::conn::Pump;
use super::output::KeyValues;
use crate::client::{Client, ClientError};
use crate::common::clock::MonotonicClock;
use crate::protocol::packet::Body;
use crate::protocol::srvid;
use std::path::PathBuf;
use std::time::Duration;

/// The srvid the ring uses unless told otherwise: in the range reserved for tests.
pub const DEFAULT_SRVID: u64 = srvid::TEST_RANGE | 0x0000_0000_7269_6e67;

#[derive(Debug, Clone)]
pub struct RingOptions {
    /// One socket per node taking part.
    pub sockets: Vec<PathBuf>,
    pub seconds: f64,
    pub srvid: u64,
    /// How long set-up (PNN lookup, srvid registration) may take.
    pub setup_timeout: Duration,
}

/// The neighbour of ring position `position` in direction `incr` (+1 or -1).
pub fn neighbour(position: usize, len: usize, incr: i32) -> usize {
    if len == 0 {
        return 0;
    }
    if incr >= 0 {
        (position + 1) % len
    } else {
        (position + len - 1) % len
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    plus: u64,
    minus: u64,
}

pub fn run(options: &RingOptions) -> Result<KeyValues, ClientError> {
    if options.sockets.is_empty() {
        return Err(ClientError::Protocol(
            "message ring needs at least one node".into(),
        ));
    }
    // Ring order is PNN order, whatever order the sockets were given in.
    let mut members: Vec<(u32, PathBuf)> = Vec::new();
    for socket in &options.sockets {
        let pnn = Client::connect(socket)?.get_pnn()?;
        if members.iter().any(|(p, _)| *p == pnn) {
            return Err(ClientError::Protocol(format!(
                "two sockets belong to node {pnn}"
            )));
        }
        members.push((pnn, socket.clone()));
    }
    members.sort_by_key(|(pnn, _)| *pnn);
    let pnns: Vec<u32> = members.iter().map(|(p, _)| *p).collect();
    let len = members.len();

    let mut pump = Pump::new()?;
    let mut pending: Vec<Option<u32>> = Vec::with_capacity(len);
    for (_, socket) in &members {
        let index = pump.connect(socket)?;
        pending.push(Some(pump.conn(index)?.send_register_srvid(options.srvid)?));
    }
    let clock = MonotonicClock::new();
    let setup_deadline = clock.now().saturating_add(options.setup_timeout);
    while pending.iter().any(Option::is_some) {
        let now = clock.now();
        if now >= setup_deadline {
            return Err(ClientError::Timeout);
        }
        let mut failure = None;
        pump.turn(setup_deadline.saturating_since(now), |_, index, packet| {
            if let (Body::ReplyControl(reply), Some(slot)) = (&packet.body, pending.get_mut(index))
            {
                if *slot == Some(packet.reqid) {
                    if reply.status != 0 {
                        failure = Some(reply.status);
                    }
                    *slot = None;
                }
            }
            Ok(())
        })?;
        if let Some(status) = failure {
            return Err(ClientError::Protocol(format!(
                "REGISTER_SRVID failed with status {status}"
            )));
        }
    }

    let mut counts = vec![Counts::default(); len];
    let mut reinjected = 0u64;
    let inject = |pump: &mut Pump, incr: i32| -> Result<(), ClientError> {
        let to = neighbour(0, len, incr);
        let destnode = pnns.get(to).copied().unwrap_or_default();
        pump.conn(0)?
            .send_message(destnode, options.srvid, incr.to_ne_bytes().to_vec())
    };
    let started = clock.now();
    let run_for = Duration::from_secs_f64(options.seconds.max(0.0));
    let deadline = started.saturating_add(run_for);
    inject(&mut pump, 1)?;
    inject(&mut pump, -1)?;
    let mut next_check = started.saturating_add(Duration::from_secs(1));
    loop {
        let now = clock.now();
        if now >= deadline {
            break;
        }
        if now >= next_check {
            // As message_ring does: a token that never came back is sent again.
            let first = counts.first().copied().unwrap_or_default();
            if first.plus == 0 {
                inject(&mut pump, 1)?;
                reinjected += 1;
            }
            if first.minus == 0 {
                inject(&mut pump, -1)?;
                reinjected += 1;
            }
            next_check = now.saturating_add(Duration::from_secs(1));
        }
        let wait = deadline
            .min(next_check)
            .saturating_since(now)
            .max(Duration::from_micros(100));
        pump.turn(wait, |conn, index, packet| {
            let Body::ReqMessage(message) = packet.body else {
                return Ok(());
            };
            if message.srvid != options.srvid {
                return Ok(());
            }
            let Ok(word) = <[u8; 4]>::try_from(message.data.as_slice()) else {
                return Ok(());
            };
            let incr = i32::from_ne_bytes(word);
            if let Some(c) = counts.get_mut(index) {
                if incr >= 0 {
                    c.plus += 1;
                } else {
                    c.minus += 1;
                }
            }
            let destnode = pnns
                .get(neighbour(index, len, incr))
                .copied()
                .unwrap_or_default();
            conn.send_message(destnode, options.srvid, message.data)
        })?;
    }
    let elapsed = clock.now().saturating_since(started).as_secs_f64();

    let first = counts.first().copied().unwrap_or_default();
    let total: u64 = counts.iter().map(|c| c.plus + c.minus).sum();
    let mut kv = KeyValues::new();
    kv.count("nodes", len as u64).number("elapsed_s", elapsed);
    if elapsed > 0.0 {
        kv.number(
            "ring_msgs_per_s",
            (first.plus + first.minus) as f64 / elapsed,
        )
        .number("all_msgs_per_s", total as f64 / elapsed);
    }
    kv.count("plus_msgs", first.plus)
        .count("minus_msgs", first.minus)
        .count("total_msgs", total)
        .count("reinjected", reinjected);
    Ok(kv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbours_wrap_both_ways() {
        assert_eq!(neighbour(0, 3, 1), 1);
        assert_eq!(neighbour(2, 3, 1), 0);
        assert_eq!(neighbour(0, 3, -1), 2);
        assert_eq!(neighbour(1, 3, -1), 0);
        assert_eq!(neighbour(0, 1, 1), 0);
        assert_eq!(neighbour(0, 1, -1), 0);
        assert_eq!(neighbour(5, 0, 1), 0);
    }

    /// Going once round in either direction visits every position and comes back.
    #[test]
    fn a_full_lap_visits_everyone() {
        for len in 1..8 {
            for incr in [1, -1] {
                let mut seen = vec![false; len];
                let mut at = 0;
                for _ in 0..len {
                    at = neighbour(at, len, incr);
                    seen[at] = true;
                }
                assert_eq!(at, 0, "len {len} incr {incr}");
                assert!(seen.iter().all(|s| *s), "len {len} incr {incr}");
            }
        }
    }
}
