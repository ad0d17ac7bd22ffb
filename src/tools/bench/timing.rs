//! Timed cluster events for the recovery and failover benchmarks: what `ctdb recover` does,
//! and a node dying under its public addresses, each watched through the client protocol at a
//! few milliseconds' resolution (the stock CLI polls once a second).

use super::output::KeyValues;
use crate::client::{Client, ClientError, DEFAULT_TIMEOUT};
use crate::common::clock::{wall_clock_now, Instant, MonotonicClock};
use crate::protocol::basic::{Marshal, Timeval};
use crate::protocol::header::CURRENT_NODE;
use crate::protocol::opcode::ControlOpcode;
use crate::protocol::sock_addr::SockAddr;
use crate::protocol::srvid;
use crate::protocol::types::{node_flags, INVALID_GENERATION};
use crate::protocol::types::{NodeMap, PublicIpList, Uptime, VnnMap};
use std::path::PathBuf;
use std::time::Duration;

const RECOVERY_NORMAL: i32 = 0;
const RECOVERY_ACTIVE: u32 = 1;

fn proto(e: impl std::fmt::Display) -> ClientError {
    ClientError::Protocol(e.to_string())
}

fn ok_data(
    client: &mut Client,
    destnode: u32,
    opcode: ControlOpcode,
) -> Result<Vec<u8>, ClientError> {
    let reply = client.control(destnode, opcode, 0, 0, Vec::new(), DEFAULT_TIMEOUT)?;
    if reply.status != 0 {
        return Err(proto(format!(
            "{} to node {destnode}: status {}",
            opcode.name(),
            reply.status
        )));
    }
    Ok(reply.data)
}

/// The leader as its recovery daemon announces it (a LEADER broadcast every second; 4.17
/// answers GET_RECMASTER with an error).
fn leader(client: &mut Client) -> Result<u32, ClientError> {
    client.register_srvid(srvid::LEADER)?;
    let clock = MonotonicClock::new();
    let deadline = clock.now().saturating_add(Duration::from_secs(10));
    let found = loop {
        let left = deadline.saturating_since(clock.now());
        if left.is_zero() {
            return Err(ClientError::Timeout);
        }
        let message = client.recv_message(left)?;
        if message.srvid != srvid::LEADER {
            continue;
        }
        if let Some(bytes) = message.data.get(..4) {
            let mut pnn = [0u8; 4];
            pnn.copy_from_slice(bytes);
            break u32::from_ne_bytes(pnn);
        }
    };
    client.deregister_srvid(srvid::LEADER)?;
    Ok(found)
}

fn node_pnns(client: &mut Client) -> Result<Vec<u32>, ClientError> {
    let data = ok_data(client, CURRENT_NODE, ControlOpcode::GetNodemap)?;
    let map = NodeMap::from_bytes_exact(&data).map_err(proto)?;
    Ok(map.nodes.iter().map(|n| n.pnn).collect())
}

fn recmode(client: &mut Client, pnn: u32) -> Result<i32, ClientError> {
    client.control_status(pnn, ControlOpcode::GetRecmode)
}

fn generation(client: &mut Client, pnn: u32) -> Result<u32, ClientError> {
    let data = ok_data(client, pnn, ControlOpcode::Getvnnmap)?;
    Ok(VnnMap::from_bytes_exact(&data).map_err(proto)?.generation)
}

fn seconds(t: &Timeval) -> f64 {
    t.tv_sec as f64 + t.tv_usec as f64 / 1e6
}

#[derive(Debug, Clone)]
pub struct RecoverOptions {
    pub socket: PathBuf,
    /// Wait until every node's last recovery ended at least this long ago: after a
    /// recovery the leader refuses new ones for `RerecoveryTimeout`, which is not what is
    /// being measured.
    pub quiet: Duration,
    pub timeout: Duration,
    pub poll: Duration,
}

fn uptime(client: &mut Client, pnn: u32) -> Result<Uptime, ClientError> {
    let data = ok_data(client, pnn, ControlOpcode::Uptime)?;
    Uptime::from_bytes_exact(&data).map_err(proto)
}

fn wall_seconds() -> f64 {
    let (sec, usec) = wall_clock_now();
    sec as f64 + usec as f64 / 1e6
}

/// Sleeps until every node's last recovery ended at least `quiet` ago.
fn wait_quiet(client: &mut Client, pnns: &[u32], quiet: Duration) -> Result<(), ClientError> {
    let mut last_finished: f64 = 0.0;
    for &pnn in pnns {
        last_finished = last_finished.max(seconds(&uptime(client, pnn)?.last_recovery_finished));
    }
    let wait = last_finished + quiet.as_secs_f64() - wall_seconds();
    if wait > 0.0 {
        std::thread::sleep(Duration::from_secs_f64(wait));
    }
    Ok(())
}

/// The generation every node agrees on while all are in NORMAL mode, or `None`.
fn settled_generation(client: &mut Client, pnns: &[u32]) -> Result<Option<u32>, ClientError> {
    let mut agreed = None;
    for &pnn in pnns {
        if recmode(client, pnn)? != RECOVERY_NORMAL {
            return Ok(None);
        }
        let g = generation(client, pnn)?;
        if g == INVALID_GENERATION || agreed.is_some_and(|a| a != g) {
            return Ok(None);
        }
        agreed = Some(g);
    }
    Ok(agreed)
}

/// `ctdb recover`: note the generation, set recovery mode ACTIVE on the local node (the
/// leader's recovery daemon notices on its next pass and recovers), then wait until every
/// node is back in NORMAL mode with the same new generation.
///
/// `recover_s` runs from the SET_RECMODE to that moment; `daemon_recovery_s` is the longest
/// of the nodes' own account of the recovery (`ctdb uptime`: START_RECOVERY to the end of
/// the "recovered" event), which leaves out the wait for the monitoring pass.
pub fn recover(options: &RecoverOptions) -> Result<KeyValues, ClientError> {
    let clock = MonotonicClock::new();
    let mut client = Client::connect(&options.socket)?;
    let pnns = node_pnns(&mut client)?;
    let deadline = clock.now().saturating_add(options.timeout);
    let before = loop {
        if let Some(g) = settled_generation(&mut client, &pnns)? {
            break g;
        }
        if clock.now() >= deadline {
            return Err(ClientError::Timeout);
        }
        std::thread::sleep(options.poll);
    };
    let mut last_finished: f64 = 0.0;
    for &pnn in &pnns {
        last_finished =
            last_finished.max(seconds(&uptime(&mut client, pnn)?.last_recovery_finished));
    }
    let wait = last_finished + options.quiet.as_secs_f64() - wall_seconds();
    if wait > 0.0 {
        std::thread::sleep(Duration::from_secs_f64(wait));
    }
    let wall_started = wall_seconds();
    let started = clock.now();
    let reply = client.control(
        CURRENT_NODE,
        ControlOpcode::SetRecmode,
        0,
        0,
        RECOVERY_ACTIVE.to_ne_bytes().to_vec(),
        DEFAULT_TIMEOUT,
    )?;
    if reply.status != 0 {
        return Err(proto(format!("SET_RECMODE status {}", reply.status)));
    }
    let after = loop {
        std::thread::sleep(options.poll);
        if clock.now() >= deadline {
            return Err(ClientError::Timeout);
        }
        // Busy daemons may not answer within the timeout; keep asking.
        match settled_generation(&mut client, &pnns) {
            Ok(Some(g)) if g != before => break g,
            Ok(_) | Err(ClientError::Timeout) => {}
            Err(e) => return Err(e),
        }
    };
    let elapsed = clock.now().saturating_since(started).as_secs_f64();
    // NORMAL mode comes back before the "recovered" event ends the daemons' own account.
    let mut longest: f64 = 0.0;
    for &pnn in &pnns {
        let took = loop {
            let u = uptime(&mut client, pnn)?;
            let begun = seconds(&u.last_recovery_started);
            let ended = seconds(&u.last_recovery_finished);
            if begun + 0.5 < wall_started {
                return Err(proto(format!(
                    "node {pnn}: last recovery started before the one requested"
                )));
            }
            if ended >= begun {
                break ended - begun;
            }
            if clock.now() >= deadline {
                return Err(ClientError::Timeout);
            }
            std::thread::sleep(options.poll);
        };
        longest = longest.max(took);
    }
    let mut kv = KeyValues::new();
    kv.number("recover_s", elapsed)
        .number("daemon_recovery_s", longest)
        .count("generation", u64::from(after));
    Ok(kv)
}

#[derive(Debug, Clone)]
pub struct FailoverOptions {
    /// One socket per node, in PNN order.
    pub sockets: Vec<PathBuf>,
    /// Daemon pid of each node, in PNN order.
    pub pids: Vec<i32>,
    /// As [`RecoverOptions::quiet`]: a node dying within `RerecoveryTimeout` of the last
    /// recovery waits for that hold-off, in both daemons.
    pub quiet: Duration,
    pub timeout: Duration,
    pub poll: Duration,
    /// SIGKILL (the kernel closes the node's connections at once) or SIGSTOP (a hung node:
    /// its connections stay up and only keepalives tell); a stopped node is killed after.
    pub signal: i32,
}

/// Who hosts which public address, as node `pnn` sees it.
fn public_ips(client: &mut Client, pnn: u32) -> Result<Vec<(SockAddr, u32)>, ClientError> {
    let data = ok_data(client, pnn, ControlOpcode::GetPublicIps)?;
    let list = PublicIpList::from_bytes_exact(&data).map_err(proto)?;
    Ok(list.ips.into_iter().map(|ip| (ip.addr, ip.pnn)).collect())
}

fn sees_disconnected(client: &mut Client, victim: u32) -> Result<bool, ClientError> {
    let data = ok_data(client, CURRENT_NODE, ControlOpcode::GetNodemap)?;
    let map = NodeMap::from_bytes_exact(&data).map_err(proto)?;
    Ok(map
        .nodes
        .iter()
        .any(|n| n.pnn == victim && n.flags & node_flags::DISCONNECTED != 0))
}

/// Kills (or stops) a node that is not the leader but hosts public addresses, then times
/// until
///   `detect_s`    every survivor has flagged it DISCONNECTED (at least once)
///   `failover_s`  every survivor reports each of its addresses hosted by a survivor
/// (the takeover has run: RELEASE_IP/TAKEOVER_IP update every node's view).
pub fn failover(options: &FailoverOptions) -> Result<KeyValues, ClientError> {
    let clock = MonotonicClock::new();
    let nodes = u32::try_from(options.sockets.len()).map_err(proto)?;
    if nodes < 2 || options.pids.len() != options.sockets.len() {
        return Err(proto("need at least two nodes and one pid per node"));
    }
    let mut clients = options
        .sockets
        .iter()
        .map(|s| Client::connect(s))
        .collect::<Result<Vec<_>, _>>()?;
    // The leader first: its broadcast comes at the start of the recovery daemon's pass, and
    // killing right after it would always hit the same phase of that pass.
    let leader_pnn = leader(&mut clients[0])?;
    let all: Vec<u32> = (0..nodes).collect();
    wait_quiet(&mut clients[0], &all, options.quiet)?;
    let before = public_ips(&mut clients[0], CURRENT_NODE)?;
    let victim = (0..nodes)
        .filter(|&pnn| pnn != leader_pnn)
        .max_by_key(|&pnn| before.iter().filter(|(_, host)| *host == pnn).count())
        .ok_or_else(|| proto("no node besides the leader"))?;
    let moving: Vec<SockAddr> = before
        .iter()
        .filter(|(_, host)| *host == victim)
        .map(|(addr, _)| *addr)
        .collect();
    if moving.is_empty() {
        return Err(proto(format!(
            "no node besides the leader {leader_pnn} hosts a public address"
        )));
    }
    let survivors: Vec<u32> = (0..nodes).filter(|&pnn| pnn != victim).collect();
    let victim_index = usize::try_from(victim).map_err(proto)?;
    let victim_pid = options.pids[victim_index];

    let started = clock.now();
    // SAFETY: plain kill(2) of a daemon pid the caller named.
    if unsafe { libc::kill(victim_pid, options.signal) } != 0 {
        return Err(ClientError::Io(std::io::Error::last_os_error()));
    }
    let watched = watch_failover(
        options,
        &clock,
        &mut clients,
        (victim, &moving, &survivors),
        started,
    );
    if options.signal != libc::SIGKILL {
        // SAFETY: as above; a stopped daemon must not outlive the measurement.
        unsafe { libc::kill(victim_pid, libc::SIGKILL) };
    }
    let (detected, failed_over) = watched?;
    let mut kv = KeyValues::new();
    if let Some(d) = detected {
        kv.number("detect_s", d);
    }
    kv.number("failover_s", failed_over)
        .count("victim", u64::from(victim))
        .count("leader", u64::from(leader_pnn))
        .count("moved_ips", moving.len() as u64);
    Ok(kv)
}

/// Polls the survivors until all of `moving` is hosted by survivors: (detect_s, failover_s).
fn watch_failover(
    options: &FailoverOptions,
    clock: &MonotonicClock,
    clients: &mut [Client],
    (victim, moving, survivors): (u32, &[SockAddr], &[u32]),
    started: Instant,
) -> Result<(Option<f64>, f64), ClientError> {
    let deadline = started.saturating_add(options.timeout);
    // When each survivor first flagged the victim DISCONNECTED (a hung node's kernel may
    // accept the reconnect, so the flag can come and go).
    let mut seen_gone: Vec<Option<f64>> = vec![None; survivors.len()];
    loop {
        std::thread::sleep(options.poll);
        let now = clock.now();
        if now >= deadline {
            return Err(ClientError::Timeout);
        }
        let elapsed = now.saturating_since(started).as_secs_f64();
        let mut all_moved = true;
        for (index, &pnn) in survivors.iter().enumerate() {
            let client = &mut clients[usize::try_from(pnn).map_err(proto)?];
            let step = (|| -> Result<(bool, bool), ClientError> {
                let gone = sees_disconnected(client, victim)?;
                let ips = public_ips(client, CURRENT_NODE)?;
                let moved = moving.iter().all(|addr| {
                    ips.iter()
                        .any(|(a, host)| a == addr && *host != victim && survivors.contains(host))
                });
                Ok((gone, moved))
            })();
            match step {
                Ok((gone, moved)) => {
                    if gone && seen_gone[index].is_none() {
                        seen_gone[index] = Some(elapsed);
                    }
                    all_moved &= moved;
                }
                Err(ClientError::Timeout) => all_moved = false,
                Err(e) => return Err(e),
            }
        }
        if all_moved {
            let detected = seen_gone
                .iter()
                .try_fold(0.0f64, |latest, seen| seen.map(|t| latest.max(t)));
            return Ok((detected, elapsed));
        }
    }
}
