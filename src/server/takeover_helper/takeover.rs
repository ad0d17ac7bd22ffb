//! One takeover run, as `ctdb_takeover_helper.c:takeover_send` and its stages perform it:
//! tunables and node map from the local node, known then available public addresses from the
//! nodes, the allocation, then RELEASE_IP, TAKEOVER_IP and IPREALLOCATED.
//!
//! Everything goes through the [`Transport`] trait and the caller's clock, so the run is
//! exercised against a simulated cluster in unit tests. Failures are accounted like stock's:
//! a control sent to several nodes blames only the first node that failed (the client
//! library keeps a single error), and when the run fails with bans enabled the node with the
//! most blame gets a `BANNING` message sent to the local recovery daemon.

use crate::common::clock::Instant;
use crate::protocol::control::{
    pull_reply_data, ControlReplyData, ControlRequestData, PUBLIC_IP_FLAGS_ONLY_AVAILABLE,
};
use crate::protocol::opcode::ControlOpcode;
use crate::protocol::sock_addr::SockAddr;
use crate::protocol::srvid;
use crate::protocol::types::{node_flags, NodeMap, PublicIp as WireIp, TunableList};
use crate::server::ipalloc::{self, Algorithm, AllocatedIp, Options, PublicIp, StdLog};
use crate::server::recovery_helper::transport::{
    Disconnected, MultiOutcome, Outcome, Request, Transport,
};
use log::{debug, error, info, warn};
use std::net::IpAddr;
use std::time::Duration;

/// The timeout of the first controls, before `TakeoverTimeout` is known (stock's
/// `takeover_timeout` starts at 9 seconds).
pub const INITIAL_TIMEOUT_SECS: u32 = 9;

/// What the recovery daemon asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TakeoverParams {
    /// Nodes LCP2 should move addresses onto (the helper's optional third argument).
    pub force_rebalance: Vec<u32>,
    /// `CTDB_DISABLE_IP_FAILOVER` is set: no allocation, only IPREALLOCATED.
    pub failover_disabled: bool,
}

/// Why a run ended without success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TakeoverError {
    /// The local daemon went away.
    Disconnected,
    /// The errno (or control status) stock's run would end with.
    Failed(i32),
}

impl From<Disconnected> for TakeoverError {
    fn from(_: Disconnected) -> Self {
        TakeoverError::Disconnected
    }
}

/// The address as `ctdb_sock_addr_to_string(..., false)` prints it.
fn ip_text(addr: IpAddr) -> String {
    addr.to_string()
}

fn secs(value: u32) -> Duration {
    Duration::from_secs(u64::from(value))
}

/// The nodes of `nodemap` with none of `mask`'s flags (`list_of_nodes`).
fn nodes_without(nodemap: &NodeMap, mask: u32) -> Vec<u32> {
    nodemap
        .nodes
        .iter()
        .filter(|node| node.flags & mask == 0)
        .map(|node| node.pnn)
        .collect()
}

/// The error of a single control: its errno, or its reply status.
fn single_error(outcome: &Outcome) -> Option<i32> {
    match outcome {
        Ok(reply) if reply.status == 0 => None,
        Ok(reply) => Some(reply.status),
        Err(errno) => Some(*errno),
    }
}

/// A running takeover: the connection, the clock and the state the stages share.
struct Run<'a, T: Transport + ?Sized> {
    transport: &'a mut T,
    now: &'a mut dyn FnMut() -> Instant,
    pnn: u32,
    takeover_timeout: u32,
    tunables: TunableList,
    num_nodes: usize,
    ban_credits: Vec<u32>,
    /// The cumulative deadline of the RELEASE_IP, TAKEOVER_IP and IPREALLOCATED stages.
    deadline: Instant,
}

/// Performs one takeover run.
pub fn takeover<T: Transport + ?Sized>(
    transport: &mut T,
    now: &mut dyn FnMut() -> Instant,
    params: &TakeoverParams,
) -> Result<(), TakeoverError> {
    let pnn = transport.pnn();
    let mut run = Run {
        transport,
        now,
        pnn,
        takeover_timeout: INITIAL_TIMEOUT_SECS,
        tunables: TunableList::default(),
        num_nodes: 0,
        ban_credits: Vec::new(),
        deadline: Instant::ZERO,
    };
    run.transport.set_timeout(secs(run.takeover_timeout));
    run.tunables = run.get_tunables()?;
    run.takeover_timeout = run.tunables.takeover_timeout;
    run.transport.set_timeout(secs(run.takeover_timeout));
    let nodemap = run.get_nodemap()?;
    run.num_nodes = nodemap.nodes.len();
    let connected = nodes_without(&nodemap, node_flags::DISCONNECTED);
    let active = nodes_without(&nodemap, node_flags::INACTIVE);
    if connected.is_empty() || active.is_empty() {
        return Err(TakeoverError::Failed(libc::ENOMEM));
    }
    run.start_deadline();
    run.ban_credits = vec![0; run.num_nodes];

    if params.failover_disabled {
        return run.ipreallocated(&connected);
    }

    let known = match run.get_public_ips(&connected, false)? {
        Ok(ips) => ips,
        Err(ret) => {
            error!("Failed to fetch known public IPs");
            return run.failed(ret);
        }
    };
    let hosting_candidates: Vec<u32> = active
        .iter()
        .copied()
        .filter(|&pnn| known.get(pnn as usize).is_some_and(|ips| !ips.is_empty()))
        .collect();
    let available = match run.get_public_ips(&hosting_candidates, true)? {
        Ok(ips) => ips,
        Err(ret) => {
            error!("Failed to fetch available public IPs");
            return run.failed(ret);
        }
    };

    if !ipalloc::can_host_ips(&known, &available) {
        info!("No nodes available to host public IPs yet");
        return run.ipreallocated(&connected);
    }

    let options = Options {
        algorithm: Algorithm::from_tunable(run.tunables.ip_alloc_algorithm),
        no_ip_takeover: run.tunables.no_ip_takeover != 0,
        no_ip_failback: run.tunables.no_ip_failback != 0,
        force_rebalance_nodes: params.force_rebalance.clone(),
    };
    let all_ips = ipalloc::ipalloc(&known, &available, &options, &mut StdLog);

    // The three stages share one deadline of three TakeoverTimeouts, which starts after the
    // allocation: releasing can take long (connections are killed), the others rarely do.
    run.start_deadline();
    if let Err(ret) = run.release_ips(&connected, &all_ips)? {
        return run.failed(ret);
    }
    if let Err(ret) = run.take_ips(&all_ips)? {
        return run.failed(ret);
    }
    run.ipreallocated(&connected)
}

impl<T: Transport + ?Sized> Run<'_, T> {
    fn start_deadline(&mut self) {
        self.deadline = (self.now)().saturating_add(secs(self.takeover_timeout).saturating_mul(3));
    }

    /// Controls of the last stages expire at the shared deadline (at once if it has passed).
    fn use_deadline(&mut self) {
        let left = self.deadline.saturating_since((self.now)());
        self.transport.set_timeout(left);
    }

    fn credit(&mut self, pnn: u32) {
        if let Some(credits) = self.ban_credits.get_mut(pnn as usize) {
            *credits += 1;
        }
    }

    fn get_tunables(&mut self) -> Result<TunableList, TakeoverError> {
        let request = Request::new(ControlOpcode::GetAllTunables, ControlRequestData::Empty);
        let outcome = self.transport.control(self.pnn, &request)?;
        let ret = match &outcome {
            Ok(reply) if reply.status == 0 => {
                match pull_reply_data(ControlOpcode::GetAllTunables, &reply.data) {
                    Ok(ControlReplyData::TunableList(tunables)) => return Ok(*tunables),
                    _ => libc::EPROTO,
                }
            }
            other => single_error(other).unwrap_or(libc::EIO),
        };
        error!("control GET_ALL_TUNABLES failed, ret={ret}");
        Err(TakeoverError::Failed(ret))
    }

    fn get_nodemap(&mut self) -> Result<NodeMap, TakeoverError> {
        let request = Request::new(ControlOpcode::GetNodemap, ControlRequestData::Empty);
        let outcome = self.transport.control(self.pnn, &request)?;
        let ret = match &outcome {
            Ok(reply) if reply.status == 0 => {
                match pull_reply_data(ControlOpcode::GetNodemap, &reply.data) {
                    Ok(ControlReplyData::NodeMap(nodemap)) => return Ok(nodemap),
                    _ => libc::EPROTO,
                }
            }
            Ok(reply) => reply.status,
            Err(errno) => {
                error!(
                    "control GET_NODEMAP failed to node {}, ret={errno}",
                    self.pnn
                );
                return Err(TakeoverError::Failed(*errno));
            }
        };
        error!("control GET_NODEMAP failed, ret={ret}");
        Err(TakeoverError::Failed(ret))
    }

    /// `get_public_ips_send`: one list per node of the node map, empty for nodes not asked.
    fn get_public_ips(
        &mut self,
        pnns: &[u32],
        available_only: bool,
    ) -> Result<Result<Vec<Vec<PublicIp>>, i32>, Disconnected> {
        let mut lists = vec![Vec::new(); self.num_nodes];
        if pnns.is_empty() {
            return Ok(Ok(lists));
        }
        let mut request = Request::new(ControlOpcode::GetPublicIps, ControlRequestData::Empty);
        if available_only {
            request = request.with_flags(PUBLIC_IP_FLAGS_ONLY_AVAILABLE);
        }
        self.transport.set_timeout(secs(self.takeover_timeout));
        let multi = self.transport.control_multi(pnns, &request)?;
        if let Some((ret, index)) = multi.error() {
            if let Some(&pnn) = pnns.get(index) {
                error!("control GET_PUBLIC_IPS failed on node {pnn}, ret={ret}");
                self.credit(pnn);
            }
            return Ok(Err(ret));
        }
        let mut found_errors = false;
        for (&pnn, outcome) in pnns.iter().zip(multi.outcomes) {
            let parsed = outcome
                .ok()
                .and_then(|reply| pull_reply_data(ControlOpcode::GetPublicIps, &reply.data).ok());
            let Some(ControlReplyData::PublicIpList(list)) = parsed else {
                error!("control GET_PUBLIC_IPS failed on node {pnn}");
                self.credit(pnn);
                found_errors = true;
                continue;
            };
            debug!("Fetched public IPs from node {pnn}");
            if let Some(slot) = lists.get_mut(pnn as usize) {
                *slot = list
                    .ips
                    .iter()
                    .map(|ip| PublicIp {
                        pnn: ip.pnn,
                        addr: ip.addr.ip(),
                    })
                    .collect();
            }
        }
        if found_errors {
            return Ok(Err(libc::EIO));
        }
        Ok(Ok(lists))
    }

    /// `release_ip_send`: every connected node that knows an address but should not host it
    /// is told who should. The nodes of one address form one multi-node control; all are
    /// sent at once.
    fn release_ips(
        &mut self,
        connected: &[u32],
        all_ips: &[AllocatedIp],
    ) -> Result<Result<(), i32>, Disconnected> {
        let mut requests = Vec::new();
        // (address text, first request index, number of nodes)
        let mut groups: Vec<(String, usize, usize)> = Vec::new();
        for ip in all_ips {
            let releasing: Vec<u32> = connected
                .iter()
                .copied()
                .filter(|&pnn| ip.known_on.contains(pnn) && ip.pnn != pnn)
                .collect();
            if releasing.is_empty() {
                continue;
            }
            let data = ControlRequestData::PublicIp(WireIp {
                pnn: ip.pnn,
                addr: SockAddr::new(ip.addr, 0),
            });
            let request = Request::new(ControlOpcode::ReleaseIp, data);
            groups.push((ip_text(ip.addr), requests.len(), releasing.len()));
            requests.extend(releasing.into_iter().map(|pnn| (pnn, request.clone())));
        }
        if requests.is_empty() {
            return Ok(Ok(()));
        }
        self.use_deadline();
        let (outcomes, order) = self.transport.control_batch(&requests)?;
        let mut position = vec![0usize; requests.len()];
        for (arrival, &index) in order.iter().enumerate() {
            if let Some(slot) = position.get_mut(index) {
                *slot = arrival;
            }
        }
        // A group completes with its last reply; failures are reported in that order.
        let mut completion: Vec<(usize, usize)> = groups
            .iter()
            .enumerate()
            .map(|(g, &(_, start, count))| {
                let last = (start..start + count)
                    .map(|i| position.get(i).copied().unwrap_or(0))
                    .max()
                    .unwrap_or(0);
                (last, g)
            })
            .collect();
        completion.sort_unstable();
        let mut failure = None;
        for (_, g) in completion {
            let Some((text, start, count)) = groups.get(g).cloned() else {
                continue;
            };
            let members: Vec<Outcome> = outcomes
                .get(start..start + count)
                .map(<[Outcome]>::to_vec)
                .unwrap_or_default();
            let mut local_order: Vec<usize> = (0..count).collect();
            local_order.sort_by_key(|&i| position.get(start + i).copied().unwrap_or(0));
            let multi = MultiOutcome::from_arrivals(members, &local_order);
            match multi.error() {
                None => debug!("RELEASE_IP {text} succeeded on {count} nodes"),
                Some((ret, index)) => {
                    let pnn = requests.get(start + index).map_or(u32::MAX, |r| r.0);
                    error!("RELEASE_IP {text} failed on node {pnn}, ret={ret}");
                    self.credit(pnn);
                    failure = Some(ret);
                }
            }
        }
        Ok(failure.map_or(Ok(()), Err))
    }

    /// `take_ip_send`: each hosted address goes to its node, all at once.
    fn take_ips(&mut self, all_ips: &[AllocatedIp]) -> Result<Result<(), i32>, Disconnected> {
        let mut requests = Vec::new();
        let mut texts = Vec::new();
        for ip in all_ips.iter().filter(|ip| ip.pnn != ipalloc::UNKNOWN_PNN) {
            let data = ControlRequestData::PublicIp(WireIp {
                pnn: ip.pnn,
                addr: SockAddr::new(ip.addr, 0),
            });
            requests.push((ip.pnn, Request::new(ControlOpcode::TakeoverIp, data)));
            texts.push(ip_text(ip.addr));
        }
        if requests.is_empty() {
            return Ok(Ok(()));
        }
        self.use_deadline();
        let (outcomes, order) = self.transport.control_batch(&requests)?;
        let mut failure = None;
        for index in order {
            let (Some((pnn, _)), Some(outcome), Some(text)) =
                (requests.get(index), outcomes.get(index), texts.get(index))
            else {
                continue;
            };
            let pnn = *pnn;
            match outcome {
                Ok(reply) if reply.status == 0 => {
                    debug!("TAKEOVER_IP {text} succeeded on node {pnn}");
                    continue;
                }
                Ok(reply) => {
                    error!(
                        "TAKEOVER_IP {text} failed on node {pnn}, ret={}",
                        reply.status
                    );
                    failure = Some(reply.status);
                }
                Err(errno) => {
                    error!("TAKEOVER_IP {text} failed to node {pnn}, ret={errno}");
                    failure = Some(*errno);
                }
            }
            self.credit(pnn);
        }
        Ok(failure.map_or(Ok(()), Err))
    }

    /// `ipreallocated_send` to every connected node, then the end of the run.
    fn ipreallocated(&mut self, connected: &[u32]) -> Result<(), TakeoverError> {
        let request = Request::new(ControlOpcode::Ipreallocated, ControlRequestData::Empty);
        self.use_deadline();
        let multi = self.transport.control_multi(connected, &request)?;
        match multi.error() {
            None => {
                debug!("IPREALLOCATED succeeded on {} nodes", connected.len());
                Ok(())
            }
            Some((ret, index)) => {
                if let Some(&pnn) = connected.get(index) {
                    error!("IPREALLOCATED failed on node {pnn}, ret={ret}");
                    self.credit(pnn);
                }
                self.failed(ret)
            }
        }
    }

    /// `takeover_failed`: with bans enabled, the node with the most blame (the lowest pnn
    /// among equals) is reported to the local recovery daemon.
    fn failed(&mut self, ret: i32) -> Result<(), TakeoverError> {
        if self.tunables.enable_bans == 0 {
            return Err(TakeoverError::Failed(ret));
        }
        let mut culprit = None;
        let mut most = 0;
        for (pnn, &credits) in self.ban_credits.iter().enumerate() {
            if credits > most {
                most = credits;
                culprit = u32::try_from(pnn).ok();
            }
        }
        if let Some(culprit) = culprit {
            warn!("Assigning banning credits to node {culprit}");
            self.transport
                .message_multi(&[self.pnn], srvid::BANNING, &culprit.to_ne_bytes())?;
        }
        Err(TakeoverError::Failed(ret))
    }
}
