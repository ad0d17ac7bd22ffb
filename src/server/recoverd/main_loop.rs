//! The main loop, recoveries and takeover runs (mirrors `main_loop`, `do_recovery`,
//! `do_takeover_run`, `verify_local_ip_allocation`, `update_flags`, `verify_recmode` and
//! `process_ipreallocate_requests` of `ctdb_recoverd.c`).
//!
//! Stock's `main_loop` runs top to bottom once a second and blocks (in nested event loops) at
//! every control. Here one run is a [`Cycle`]; each blocking point is a [`Step`] that names the
//! batch of controls being waited for, and the reply handler continues where stock would. A new
//! cycle starts `RecoverInterval` after the previous one started, or at once if it took longer,
//! exactly like stock's "sleep for what is left of the interval". Messages, timers and
//! elections run in between, as they do in stock's nested loops.
//!
//! Step numbers below refer to the main-loop walk-through in the digest (§3.5).

use super::{
    Effect, HelperKind, LockWaiter, Outcome, Pnn, Purpose, Recoverd, RecoverdHost, CAP_LMASTER,
    RECOVERY_ACTIVE, RECOVERY_NORMAL, TAKEOVER_RUN_DISABLE_S,
};
use crate::common::clock::Instant;
use crate::protocol::control::{ControlReplyData, PUBLIC_IP_FLAGS_ONLY_AVAILABLE};
use crate::protocol::header::{BROADCAST_CONNECTED, UNKNOWN_PNN};
use crate::protocol::opcode::ControlOpcode;
use crate::protocol::srvid;
use crate::protocol::types::{
    node_flags, DisableMessage, NodeFlagChange, NodeMap, SrvidMessage, VnnMap,
};
use crate::protocol::Marshal;
use std::collections::VecDeque;
use std::time::Duration;

/// What the current cycle waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    Debug,
    Tunables,
    Runstate,
    Nodemap,
    Recmode,
    InactiveRecmode,
    InactiveFreeze,
    Capabilities,
    Ifaces,
    AvailableIps,
    KnownIps,
    RemoteNodemaps,
    UpdateFlags,
    Vnnmap,
    VerifyRecmode,
    RemoteVnnmaps,
    RecoveryCapabilities,
    RecoveryFlags,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FlagPush {
    change: NodeFlagChange,
    /// The node is INACTIVE: a failed push is only a warning during a recovery.
    inactive: bool,
}

/// Who asked for a takeover run, i.e. how to continue when it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
enum TakeoverContext {
    Recovery,
    Requests(Vec<SrvidMessage>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct TakeoverRun {
    /// The nodes told to pause their own takeover runs, told again to resume.
    nodes: Vec<Pnn>,
    rebalance_version: u64,
    context: TakeoverContext,
}

/// One run of stock's `main_loop`.
#[derive(Debug)]
pub(crate) struct Cycle {
    pub(crate) id: u64,
    started: Instant,
    recmode: u32,
    need_ip_takeover: bool,
    remote_nodemaps: Vec<Option<NodeMap>>,
    flag_pushes: VecDeque<FlagPush>,
    vnnmap: Option<VnnMap>,
    takeover: Option<TakeoverRun>,
}

enum RecmodeVerdict {
    Ok,
    RecoveryNeeded,
    Failed,
}

fn single_reply(opcode: ControlOpcode, results: &[(Pnn, Outcome)]) -> Option<ControlReplyData> {
    results.first().and_then(|(_, o)| o.reply_data(opcode))
}

impl Recoverd {
    fn cycle_purpose(&self, step: Step) -> Purpose {
        Purpose::Cycle {
            cycle: self.cycle.as_ref().map_or(0, |c| c.id),
            step,
        }
    }

    fn cycle_local(&mut self, now: Instant, step: Step, opcode: ControlOpcode, data: Vec<u8>) {
        let purpose = self.cycle_purpose(step);
        self.send_local(now, purpose, opcode, data);
    }

    fn cycle_batch(
        &mut self,
        now: Instant,
        step: Step,
        opcode: ControlOpcode,
        nodes: &[Pnn],
        flags: u32,
        data: Vec<u8>,
    ) {
        let purpose = self.cycle_purpose(step);
        self.send_batch(now, purpose, opcode, nodes, flags, data);
    }

    fn cycle_mut(&mut self) -> Option<&mut Cycle> {
        self.cycle.as_mut()
    }

    /// Steps 1–4, then GET_DEBUG.
    pub(super) fn start_cycle(&mut self, now: Instant, host: &dyn RecoverdHost) {
        if !host.ctdbd_alive() {
            log::error!("CTDB daemon is no longer available. Shutting down recovery daemon");
            self.exit(-1);
            return;
        }
        let id = self.next_cycle_id;
        self.next_cycle_id += 1;
        self.stats.main_loops += 1;
        self.cycle = Some(Cycle {
            id,
            started: now,
            recmode: RECOVERY_ACTIVE,
            need_ip_takeover: false,
            remote_nodemaps: Vec::new(),
            flag_pushes: VecDeque::new(),
            vnnmap: None,
            takeover: None,
        });
        self.send_local(now, Purpose::Ignore, ControlOpcode::RecdPing, Vec::new());
        if self.election_in_progress {
            self.end_cycle(now);
            return;
        }
        if !self.leader_broadcast_loop_active() {
            self.arm_leader_broadcast_loop(now);
        }
        if !self.leader_broadcast_timeout_active() {
            self.arm_leader_broadcast_timeout(now);
        }
        self.cycle_local(now, Step::Debug, ControlOpcode::GetDebug, Vec::new());
    }

    /// The end of a `main_loop` run: the next one starts a `RecoverInterval` after this one
    /// started, or now if that is already past.
    pub(super) fn end_cycle(&mut self, now: Instant) {
        let Some(cycle) = self.cycle.take() else {
            return;
        };
        let interval = Duration::from_secs(u64::from(self.tunables.recover_interval()));
        self.next_cycle_at = if std::mem::take(&mut self.rerun_cycle) {
            Some(now)
        } else {
            Some(cycle.started.saturating_add(interval).max(now))
        };
    }

    pub(super) fn cycle_step_done(
        &mut self,
        now: Instant,
        step: Step,
        opcode: ControlOpcode,
        results: Vec<(Pnn, Outcome)>,
        host: &dyn RecoverdHost,
    ) {
        match step {
            Step::Debug => {
                let Some(ControlReplyData::DebugLevel(level)) = single_reply(opcode, &results)
                else {
                    log::error!("Failed to read debuglevel from parent");
                    return self.end_cycle(now);
                };
                if self.log_level != Some(level) {
                    self.effects.push_back(Effect::SetLogLevel { level });
                }
                self.log_level = Some(level);
                self.cycle_local(
                    now,
                    Step::Tunables,
                    ControlOpcode::GetAllTunables,
                    Vec::new(),
                );
            }
            Step::Tunables => {
                let Some(ControlReplyData::TunableList(list)) = single_reply(opcode, &results)
                else {
                    log::error!("Failed to get tunables - retrying");
                    return self.end_cycle(now);
                };
                self.store_tunables(list.to_array());
                self.cycle_local(now, Step::Runstate, ControlOpcode::GetRunstate, Vec::new());
            }
            Step::Runstate => {
                let Some(ControlReplyData::Runstate(runstate)) = single_reply(opcode, &results)
                else {
                    log::error!("Failed to get runstate - retrying");
                    return self.end_cycle(now);
                };
                self.runstate = runstate;
                let pnn = self.pnn;
                self.cycle_batch(
                    now,
                    Step::Nodemap,
                    ControlOpcode::GetNodemap,
                    &[pnn],
                    0,
                    vec![],
                );
            }
            Step::Nodemap => self.nodemap_done(now, opcode, &results),
            Step::Recmode => self.recmode_done(now, &results, host),
            Step::InactiveRecmode => {
                if results.iter().any(|(_, o)| !o.ok()) {
                    log::error!("Failed to activate recovery mode in STOPPED or BANNED state");
                    return self.end_cycle(now);
                }
                self.inactive_freeze(now);
            }
            Step::InactiveFreeze => {
                if results.iter().all(|(_, o)| o.ok()) {
                    self.frozen_on_inactive = true;
                } else {
                    log::error!("Failed to freeze node in STOPPED or BANNED state");
                }
                self.end_cycle(now);
            }
            Step::Capabilities => {
                if !self.apply_capabilities(opcode, &results) {
                    log::error!("Unable to update node capabilities.");
                    return self.end_cycle(now);
                }
                if self.cycle.as_ref().map(|c| c.recmode) == Some(RECOVERY_NORMAL) {
                    self.verify_local_ip_allocation(now);
                } else {
                    self.after_ip_check(now);
                }
            }
            Step::Ifaces => self.ifaces_done(now, opcode, &results),
            Step::AvailableIps => self.available_ips_done(now, opcode, &results),
            Step::KnownIps => self.known_ips_done(now, opcode, &results, host),
            Step::RemoteNodemaps => self.remote_nodemaps_done(now, opcode, &results, host),
            Step::UpdateFlags => {
                if results.iter().any(|(_, o)| !o.ok()) {
                    log::error!("Unable to update flags on remote nodes");
                    return self.end_cycle(now);
                }
                self.next_flag_push(now, host);
            }
            Step::Vnnmap => {
                let Some(ControlReplyData::VnnMap(vnnmap)) = single_reply(opcode, &results) else {
                    log::error!("Unable to get vnnmap from node {}", self.pnn);
                    return self.end_cycle(now);
                };
                if let Some(cycle) = self.cycle_mut() {
                    cycle.vnnmap = Some(vnnmap);
                }
                if self.need_recovery {
                    // A previous recovery did not finish.
                    return self.do_recovery(now);
                }
                let nodes = self.active_nodes(true);
                self.cycle_batch(
                    now,
                    Step::VerifyRecmode,
                    ControlOpcode::GetRecmode,
                    &nodes,
                    0,
                    vec![],
                );
            }
            Step::VerifyRecmode => match verify_recmode(&results) {
                RecmodeVerdict::RecoveryNeeded => self.do_recovery(now),
                RecmodeVerdict::Failed => self.end_cycle(now),
                RecmodeVerdict::Ok => self.consistency_checks(now),
            },
            Step::RemoteVnnmaps => self.remote_vnnmaps_done(now, opcode, &results),
            Step::RecoveryCapabilities => {
                if !self.apply_capabilities(opcode, &results) {
                    log::error!("Unable to update node capabilities.");
                    return self.recovery_failed(now);
                }
                self.start_recovery_flag_pushes(now);
            }
            Step::RecoveryFlags => {
                let failed = results.iter().any(|(_, o)| !o.ok());
                let inactive = self
                    .cycle
                    .as_ref()
                    .and_then(|c| c.flag_pushes.front())
                    .is_some_and(|p| p.inactive);
                if let Some(cycle) = self.cycle_mut() {
                    cycle.flag_pushes.pop_front();
                }
                if failed {
                    if inactive {
                        log::warn!("Unable to update flags on inactive node");
                    } else {
                        log::error!("Unable to update flags on all nodes");
                        return self.recovery_failed(now);
                    }
                }
                self.next_recovery_flag_push(now);
            }
        }
    }

    /// Step 8 (and 9): the local node map, then the leader check of our extension, then bans.
    fn nodemap_done(&mut self, now: Instant, opcode: ControlOpcode, results: &[(Pnn, Outcome)]) {
        let Some(ControlReplyData::NodeMap(nodemap)) = single_reply(opcode, results) else {
            log::error!("Unable to get nodemap from node {}", self.pnn);
            return self.end_cycle(now);
        };
        // Stock indexes the map by our PNN; every real node map lists nodes in PNN order.
        let own = nodemap
            .nodes
            .get(self.pnn as usize)
            .filter(|n| n.pnn == self.pnn)
            .or_else(|| nodemap.nodes.iter().find(|n| n.pnn == self.pnn))
            .map(|n| n.flags);
        self.nodemap = Some(nodemap);
        if let Some(flags) = own {
            self.node_flags = flags;
        }

        // Only a node that can lead starts the early election: one that cannot would only
        // broadcast "leader unknown" every loop and keep stock nodes from timing out.
        if self.config.extensions.election_on_leader_disconnect
            && self.can_be_leader()
            && self.leader != UNKNOWN_PNN
            && self.leader != self.pnn
            && !self.election_in_progress
            && self.node_flags & node_flags::INACTIVE == 0
            && self
                .flags_of(self.leader)
                .is_some_and(|f| f & node_flags::DISCONNECTED != 0)
        {
            log::error!(
                "Leader {} is disconnected, starting an election now",
                self.leader
            );
            self.leader_broadcast_timeout_at = None;
            self.force_election(now);
            return self.end_cycle(now);
        }

        if self.startup_probe_pending && self.startup_probe_due() {
            self.startup_probe_pending = false;
            log::info!("All nodes connected and no leader known: trying the cluster lock now");
            self.start_lock_take(LockWaiter::StartupProbe);
        }

        if self.ban_misbehaving_nodes(now) {
            log::info!("This node was banned, restart main_loop");
            return self.end_cycle(now);
        }
        self.cycle_local(now, Step::Recmode, ControlOpcode::GetRecmode, Vec::new());
    }

    /// Steps 10–12.
    fn recmode_done(&mut self, now: Instant, results: &[(Pnn, Outcome)], host: &dyn RecoverdHost) {
        let recmode = match results.first() {
            Some((_, Outcome::Reply { status, .. })) => status.cast_unsigned(),
            _ => {
                log::error!("Failed to read recmode from local node");
                return self.end_cycle(now);
            }
        };
        if let Some(cycle) = self.cycle_mut() {
            cycle.recmode = recmode;
        }
        if self.node_flags & node_flags::INACTIVE != 0 {
            // Make an inactive node less likely to take the leader role when it comes back.
            self.priority_time = host.wall_clock();
            if recmode == RECOVERY_NORMAL {
                log::error!(
                    "Node is stopped or banned but recovery mode is not active. Activate \
                     recovery mode and lock databases"
                );
                self.cycle_local(
                    now,
                    Step::InactiveRecmode,
                    ControlOpcode::SetRecmode,
                    RECOVERY_ACTIVE.to_ne_bytes().to_vec(),
                );
                return;
            }
            return self.inactive_freeze(now);
        }
        self.frozen_on_inactive = false;
        let nodes = self.active_nodes(true);
        self.cycle_batch(
            now,
            Step::Capabilities,
            ControlOpcode::GetCapabilities,
            &nodes,
            0,
            vec![],
        );
    }

    fn inactive_freeze(&mut self, now: Instant) {
        if self.frozen_on_inactive {
            return self.end_cycle(now);
        }
        self.cycle_local(now, Step::InactiveFreeze, ControlOpcode::Freeze, Vec::new());
    }

    /// `update_capabilities`: every active node must answer, ourselves included.
    fn apply_capabilities(&mut self, opcode: ControlOpcode, results: &[(Pnn, Outcome)]) -> bool {
        if results.iter().any(|(_, o)| !o.ok()) {
            log::error!("Failed to get node capabilities");
            return false;
        }
        let mut caps = vec![None; self.nodemap_nodes().len()];
        for (pnn, outcome) in results {
            if let Some(ControlReplyData::Capabilities(c)) = outcome.reply_data(opcode) {
                if let Some(slot) = caps.get_mut(*pnn as usize) {
                    *slot = Some(c);
                }
            }
        }
        let Some(own) = caps.get(self.pnn as usize).copied().flatten() else {
            log::error!("Capabilities don't include current node.");
            return false;
        };
        self.capabilities = own;
        self.caps = caps;
        true
    }

    // ------------------------------------------------------------------------------------
    // Step 13: verify_local_ip_allocation

    fn verify_local_ip_allocation(&mut self, now: Instant) {
        if !self.is_leader() {
            // Only the leader serves these; a new leader must not see stale ones later.
            self.reallocate_requests.clear();
            self.force_rebalance = None;
        }
        if self.config.failover_disabled || self.takeover_run.is_disabled() {
            return self.after_ip_check(now);
        }
        self.cycle_local(now, Step::Ifaces, ControlOpcode::GetIfaces, Vec::new());
    }

    fn ifaces_done(&mut self, now: Instant, opcode: ControlOpcode, results: &[(Pnn, Outcome)]) {
        let changed = match single_reply(opcode, results) {
            Some(ControlReplyData::IfaceList(ifaces)) => {
                let changed = match &self.ifaces {
                    None => {
                        log::info!("Initial interface fetched");
                        true
                    }
                    Some(old) if old.ifaces.len() != ifaces.ifaces.len() => {
                        log::info!(
                            "Interface count changed from {} to {}",
                            old.ifaces.len(),
                            ifaces.ifaces.len()
                        );
                        true
                    }
                    Some(old) => old
                        .ifaces
                        .iter()
                        .zip(&ifaces.ifaces)
                        .any(|(a, b)| a.name != b.name || a.link_state != b.link_state),
                };
                self.ifaces = Some(ifaces);
                changed
            }
            _ => {
                log::error!("Unable to get interfaces from local node {}", self.pnn);
                true
            }
        };
        if let Some(cycle) = self.cycle_mut() {
            cycle.need_ip_takeover |= changed;
        }
        let purpose = self.cycle_purpose(Step::AvailableIps);
        self.send_batch(
            now,
            purpose,
            ControlOpcode::GetPublicIps,
            &[crate::protocol::header::CURRENT_NODE],
            PUBLIC_IP_FLAGS_ONLY_AVAILABLE,
            Vec::new(),
        );
    }

    fn available_ips_done(
        &mut self,
        now: Instant,
        opcode: ControlOpcode,
        results: &[(Pnn, Outcome)],
    ) {
        let Some(ControlReplyData::PublicIpList(ips)) = single_reply(opcode, results) else {
            log::error!("Unable to retrieve available public IPs");
            return self.after_ip_check(now);
        };
        let healthy = self.flags_of(self.pnn) == Some(0);
        if healthy && ips.ips.iter().any(|ip| ip.pnn == UNKNOWN_PNN) {
            log::warn!("Unassigned IP can be served by this node");
            if let Some(cycle) = self.cycle_mut() {
                cycle.need_ip_takeover = true;
            }
        }
        if !self.config.check_public_ips {
            return self.ip_check_done(now);
        }
        let purpose = self.cycle_purpose(Step::KnownIps);
        self.send_batch(
            now,
            purpose,
            ControlOpcode::GetPublicIps,
            &[crate::protocol::header::CURRENT_NODE],
            0,
            Vec::new(),
        );
    }

    fn known_ips_done(
        &mut self,
        now: Instant,
        opcode: ControlOpcode,
        results: &[(Pnn, Outcome)],
        host: &dyn RecoverdHost,
    ) {
        let Some(ControlReplyData::PublicIpList(ips)) = single_reply(opcode, results) else {
            log::error!("Unable to retrieve known public IPs");
            return self.after_ip_check(now);
        };
        let mut need = false;
        for ip in &ips.ips {
            let present = host.have_ip(&ip.addr);
            if ip.pnn == self.pnn && !present {
                log::error!("Assigned IP not on an interface");
                need = true;
            } else if ip.pnn != self.pnn && present {
                log::error!("IP incorrectly on an interface");
                need = true;
            }
        }
        if let Some(cycle) = self.cycle_mut() {
            cycle.need_ip_takeover |= need;
        }
        self.ip_check_done(now);
    }

    fn ip_check_done(&mut self, now: Instant) {
        if self.cycle.as_ref().is_some_and(|c| c.need_ip_takeover) {
            log::info!("Trigger takeoverrun");
            let request = SrvidMessage {
                pnn: self.pnn,
                srvid: 0,
            };
            self.effects.push_back(Effect::SendMessage {
                destnode: BROADCAST_CONNECTED,
                srvid: srvid::TAKEOVER_RUN,
                data: request.to_bytes(),
            });
        }
        self.after_ip_check(now);
    }

    /// Only the leader goes on past step 13.
    fn after_ip_check(&mut self, now: Instant) {
        if !self.is_leader() {
            return self.end_cycle(now);
        }
        let nodes = self.connected_nodes(false);
        self.cycle_batch(
            now,
            Step::RemoteNodemaps,
            ControlOpcode::GetNodemap,
            &nodes,
            0,
            vec![],
        );
    }

    // ------------------------------------------------------------------------------------
    // Steps 14–16: remote node maps and flags

    fn remote_nodemaps_done(
        &mut self,
        now: Instant,
        opcode: ControlOpcode,
        results: &[(Pnn, Outcome)],
        host: &dyn RecoverdHost,
    ) {
        let positions: Vec<Pnn> = self.nodemap_nodes().iter().map(|n| n.pnn).collect();
        let mut remote = vec![None; positions.len()];
        let mut failed = false;
        for (pnn, outcome) in results {
            match outcome.reply_data(opcode) {
                Some(ControlReplyData::NodeMap(map)) => {
                    if let Some(i) = positions.iter().position(|p| p == pnn) {
                        remote[i] = Some(map);
                    }
                }
                _ => {
                    log::error!("Failed to retrieve nodemap from node {pnn}");
                    self.set_culprit(now, *pnn);
                    failed = true;
                }
            }
        }
        if failed {
            log::error!("Failed to read remote nodemaps");
            return self.end_cycle(now);
        }
        let pushes = self.compute_flag_pushes(&remote);
        if let Some(cycle) = self.cycle_mut() {
            cycle.remote_nodemaps = remote;
            cycle.flag_pushes = pushes;
        }
        self.next_flag_push(now, host);
    }

    /// `update_flags`: adopt each connected node's own view of its flags, then push every
    /// node's flags that some connected node sees differently. Computed up front: each
    /// push only depends on its own node's entry.
    fn compute_flag_pushes(&mut self, remote: &[Option<NodeMap>]) -> VecDeque<FlagPush> {
        let me = self.pnn;
        let mut pushes = VecDeque::new();
        let Some(map) = self.nodemap.as_mut() else {
            return pushes;
        };
        let remote_flags = |i: usize, j: usize| -> Option<u32> {
            remote
                .get(i)
                .and_then(Option::as_ref)
                .and_then(|m| m.nodes.get(j))
                .map(|n| n.flags)
        };
        let n = map.nodes.len();
        for j in 0..n {
            let mut local_flags = map.nodes[j].flags;
            let remote_pnn = map.nodes[j].pnn;
            if local_flags & node_flags::DISCONNECTED != 0 {
                continue;
            }
            let mut push = false;
            if remote_pnn != me {
                if let Some(theirs) = remote_flags(j, j) {
                    if theirs != local_flags {
                        log::info!(
                            "Remote node {remote_pnn} had flags 0x{theirs:x}, local had \
                             0x{local_flags:x} - updating local"
                        );
                        map.nodes[j].flags = theirs;
                        local_flags = theirs;
                        push = true;
                    }
                }
            }
            if !push {
                push = (0..n).any(|i| {
                    i != j
                        && map.nodes[i].flags & node_flags::DISCONNECTED == 0
                        && map.nodes[i].pnn != me
                        && remote_flags(i, j).is_some_and(|f| f != local_flags)
                });
            }
            if push {
                log::info!("Pushing updated flags for node {remote_pnn} (0x{local_flags:x})");
                pushes.push_back(FlagPush {
                    change: NodeFlagChange {
                        pnn: remote_pnn,
                        new_flags: local_flags,
                        old_flags: map.nodes[j].flags,
                    },
                    inactive: false,
                });
            }
        }
        pushes
    }

    fn next_flag_push(&mut self, now: Instant, host: &dyn RecoverdHost) {
        let Some(push) = self.cycle_mut().and_then(|c| c.flag_pushes.pop_front()) else {
            return self.after_update_flags(now, host);
        };
        let nodes = self.connected_nodes(true);
        self.cycle_batch(
            now,
            Step::UpdateFlags,
            ControlOpcode::ModifyFlags,
            &nodes,
            0,
            push.change.to_bytes(),
        );
    }

    /// Steps 16–17.
    fn after_update_flags(&mut self, now: Instant, host: &dyn RecoverdHost) {
        let entries = self.nodemap_nodes().len();
        if self.num_nodes as usize != entries {
            log::error!(
                "ctdb->num_nodes ({}) != nodemap->num ({entries}) reloading nodes file",
                self.num_nodes
            );
            self.reload_nodes_file(host);
            return self.end_cycle(now);
        }
        let pnn = self.pnn;
        self.cycle_batch(
            now,
            Step::Vnnmap,
            ControlOpcode::Getvnnmap,
            &[pnn],
            0,
            vec![],
        );
    }

    // ------------------------------------------------------------------------------------
    // Steps 20–25: consistency checks

    fn consistency_checks(&mut self, now: Instant) {
        if self.cluster_lock_enabled() && self.lock == super::LockState::None {
            log::error!("Failed cluster lock sanity check");
            let pnn = self.pnn;
            self.set_culprit(now, pnn);
            return self.do_recovery(now);
        }
        if self.recovery.is_disabled() {
            return self.takeover_run_checks(now);
        }
        let nodes: Vec<_> = self.nodemap_nodes().to_vec();
        let n = nodes.len();
        let remote = self
            .cycle
            .as_ref()
            .map(|c| c.remote_nodemaps.clone())
            .unwrap_or_default();
        for (j, node) in nodes.iter().enumerate() {
            if node.pnn == self.pnn || node.flags & node_flags::INACTIVE != 0 {
                continue;
            }
            let Some(theirs) = remote.get(j).and_then(Option::as_ref) else {
                continue;
            };
            if theirs.nodes.len() != n {
                log::error!(
                    "Remote node:{} has different node count. {} vs {} of the local node",
                    node.pnn,
                    theirs.nodes.len(),
                    n
                );
                self.set_culprit(now, node.pnn);
                return self.do_recovery(now);
            }
            if let Some(i) = (0..n).find(|&i| theirs.nodes[i].pnn != nodes[i].pnn) {
                log::error!(
                    "Remote node:{} has different nodemap pnn for {} ({} vs {}).",
                    node.pnn,
                    i,
                    theirs.nodes[i].pnn,
                    nodes[i].pnn
                );
                self.set_culprit(now, node.pnn);
                return self.do_recovery(now);
            }
        }

        let vnnmap = self
            .cycle
            .as_ref()
            .and_then(|c| c.vnnmap.clone())
            .unwrap_or_default();
        let num_lmasters = nodes
            .iter()
            .filter(|n| {
                n.flags & node_flags::INACTIVE == 0 && self.has_capability(n.pnn, CAP_LMASTER)
            })
            .count();
        if vnnmap.map.len() != num_lmasters {
            log::error!(
                "The vnnmap count is different from the number of active lmaster nodes: {} vs {}",
                vnnmap.map.len(),
                num_lmasters
            );
            let pnn = self.pnn;
            self.set_culprit(now, pnn);
            return self.do_recovery(now);
        }
        for node in &nodes {
            if node.flags & node_flags::INACTIVE != 0
                || !self.has_capability(node.pnn, CAP_LMASTER)
                || node.pnn == self.pnn
            {
                continue;
            }
            if !vnnmap.map.contains(&node.pnn) {
                log::error!("Active LMASTER node {} is not in the vnnmap", node.pnn);
                self.set_culprit(now, node.pnn);
                return self.do_recovery(now);
            }
        }
        let others = self.active_nodes(false);
        self.cycle_batch(
            now,
            Step::RemoteVnnmaps,
            ControlOpcode::Getvnnmap,
            &others,
            0,
            vec![],
        );
    }

    /// Step 25, evaluated in node-map order as stock's sequential loop would.
    fn remote_vnnmaps_done(
        &mut self,
        now: Instant,
        opcode: ControlOpcode,
        results: &[(Pnn, Outcome)],
    ) {
        let ours = self
            .cycle
            .as_ref()
            .and_then(|c| c.vnnmap.clone())
            .unwrap_or_default();
        for pnn in self.active_nodes(false) {
            let theirs = results
                .iter()
                .find(|(p, _)| *p == pnn)
                .and_then(|(_, o)| o.reply_data(opcode));
            let Some(ControlReplyData::VnnMap(theirs)) = theirs else {
                log::error!("Unable to get vnnmap from remote node {pnn}");
                return self.end_cycle(now);
            };
            let problem = if theirs.generation != ours.generation {
                Some("generation")
            } else if theirs.map.len() != ours.map.len() {
                Some("size")
            } else if theirs.map != ours.map {
                Some("map")
            } else {
                None
            };
            if let Some(what) = problem {
                log::error!("Remote node {pnn} has different {what} of vnnmap");
                self.set_culprit(now, pnn);
                return self.do_recovery(now);
            }
        }
        self.takeover_run_checks(now);
    }

    /// Step 26.
    fn takeover_run_checks(&mut self, now: Instant) {
        if !self.takeover_run.is_disabled()
            && (!self.reallocate_requests.is_empty() || self.need_takeover_run)
        {
            // Requests arriving during the run are left for the next one: they may answer
            // flag changes the run does not see.
            let current = std::mem::take(&mut self.reallocate_requests);
            return self.start_takeover_run(now, TakeoverContext::Requests(current));
        }
        self.end_cycle(now)
    }

    // ------------------------------------------------------------------------------------
    // do_recovery

    fn do_recovery(&mut self, now: Instant) {
        log::info!("Starting do_recovery");
        if !self.is_leader() {
            log::info!("Leader changed to {}, aborting recovery", self.leader);
            return self.end_cycle(now);
        }
        self.need_recovery = true;
        if !self.recovery.begin() {
            return self.end_cycle(now);
        }
        if self.election_in_progress {
            log::error!("do_recovery called while election in progress - try again later");
            return self.recovery_failed(now);
        }
        if self.ban_misbehaving_nodes(now) {
            log::info!("This node was banned, aborting recovery");
            return self.recovery_failed(now);
        }
        if self.cluster_lock_enabled() && self.lock == super::LockState::None {
            if !self.is_leader() {
                log::info!("Leader changed to {}, aborting recovery", self.leader);
                self.need_recovery = false;
                return self.recovery_failed(now);
            }
            log::error!("Cluster lock not held - abort recovery, ban node");
            let pnn = self.pnn;
            self.ban_node(now, pnn);
            return self.recovery_failed(now);
        }
        log::info!(
            "Recovery initiated due to problem with node {}",
            self.last_culprit_node
        );
        self.stats.recoveries_started += 1;
        let nodes = self.active_nodes(true);
        self.cycle_batch(
            now,
            Step::RecoveryCapabilities,
            ControlOpcode::GetCapabilities,
            &nodes,
            0,
            vec![],
        );
    }

    fn recovery_failed(&mut self, now: Instant) {
        self.stats.recoveries_failed += 1;
        self.recovery.end();
        self.end_cycle(now);
    }

    /// Every connected node's flags, as we see them, pushed to all connected nodes.
    fn start_recovery_flag_pushes(&mut self, now: Instant) {
        let pushes: VecDeque<FlagPush> = self
            .nodemap_nodes()
            .iter()
            .filter(|n| n.flags & node_flags::DISCONNECTED == 0)
            .map(|n| FlagPush {
                change: NodeFlagChange {
                    pnn: n.pnn,
                    new_flags: n.flags,
                    old_flags: n.flags,
                },
                inactive: n.flags & node_flags::INACTIVE != 0,
            })
            .collect();
        if let Some(cycle) = self.cycle_mut() {
            cycle.flag_pushes = pushes;
        }
        self.next_recovery_flag_push(now);
    }

    fn next_recovery_flag_push(&mut self, now: Instant) {
        let Some(push) = self
            .cycle
            .as_ref()
            .and_then(|c| c.flag_pushes.front().cloned())
        else {
            log::info!("Recovery - updated flags");
            return self.start_recovery_helper();
        };
        let nodes = self.connected_nodes(true);
        self.cycle_batch(
            now,
            Step::RecoveryFlags,
            ControlOpcode::ModifyFlags,
            &nodes,
            0,
            push.change.to_bytes(),
        );
    }

    fn start_recovery_helper(&mut self) {
        let generation = self.new_generation();
        self.helper = Some(HelperKind::Recovery);
        self.effects
            .push_back(Effect::StartRecoveryHelper { generation });
    }

    pub(super) fn helper_finished(
        &mut self,
        now: Instant,
        kind: HelperKind,
        result: i32,
        _host: &dyn RecoverdHost,
    ) {
        if self.cycle.is_none() {
            return;
        }
        match kind {
            HelperKind::Recovery => {
                if result != 0 {
                    log::error!("Recovery helper failed with {result}");
                    return self.recovery_failed(now);
                }
                self.start_takeover_run(now, TakeoverContext::Recovery);
            }
            HelperKind::Takeover => self.takeover_helper_done(now, result == 0),
        }
    }

    fn recovery_succeeded(&mut self, now: Instant) {
        self.effects.push_back(Effect::SendMessage {
            destnode: BROADCAST_CONNECTED,
            srvid: srvid::RECONFIGURE,
            data: Vec::new(),
        });
        log::info!("Recovery complete");
        self.need_recovery = false;
        self.recovery.end();
        log::info!("Resetting ban count to 0 for all nodes");
        self.ban_credits.reset();
        self.stats.recoveries_completed += 1;
        let rerecovery = self.tunables.rerecovery_timeout();
        log::info!(
            "Just finished a recovery. New recoveries will now be suppressed for the \
             rerecovery timeout ({rerecovery} seconds)"
        );
        let _ = self.recovery.disable(now, rerecovery);
        self.end_cycle(now);
    }

    // ------------------------------------------------------------------------------------
    // do_takeover_run

    fn start_takeover_run(&mut self, now: Instant, context: TakeoverContext) {
        log::info!("Takeover run starting");
        if self.takeover_run.is_in_progress() {
            log::error!("takeover run already in progress");
            return self.takeover_finished(now, false, context);
        }
        if !self.takeover_run.begin() {
            return self.takeover_finished(now, false, context);
        }
        let nodes = self.connected_nodes(false);
        // Stop the other nodes from asking for takeover runs while IPs move (no replies).
        self.send_disable_takeover_runs(&nodes, TAKEOVER_RUN_DISABLE_S);
        let rebalance = self.force_rebalance.clone().unwrap_or_default();
        if let Some(cycle) = self.cycle_mut() {
            cycle.takeover = Some(TakeoverRun {
                nodes,
                rebalance_version: 0,
                context,
            });
        }
        let version = self.force_rebalance_version;
        if let Some(run) = self.cycle_mut().and_then(|c| c.takeover.as_mut()) {
            run.rebalance_version = version;
        }
        self.stats.takeover_runs += 1;
        self.helper = Some(HelperKind::Takeover);
        self.effects.push_back(Effect::StartTakeoverHelper {
            force_rebalance: rebalance,
        });
    }

    fn send_disable_takeover_runs(&mut self, nodes: &[Pnn], timeout: u32) {
        let message = DisableMessage {
            pnn: UNKNOWN_PNN,
            srvid: 0,
            timeout,
        };
        for &pnn in nodes {
            self.effects.push_back(Effect::SendMessage {
                destnode: pnn,
                srvid: srvid::DISABLE_TAKEOVER_RUNS,
                data: message.to_bytes(),
            });
        }
    }

    fn takeover_helper_done(&mut self, now: Instant, ok: bool) {
        let Some(run) = self.cycle_mut().and_then(|c| c.takeover.take()) else {
            return;
        };
        self.send_disable_takeover_runs(&run.nodes, 0);
        if ok {
            if run.rebalance_version == self.force_rebalance_version {
                self.force_rebalance = None;
            } else {
                log::warn!("Rebalance target nodes changed during takeover run - not clearing");
            }
        } else {
            log::error!("ctdb_takeover_run() failed");
        }
        self.takeover_finished(now, ok, run.context);
    }

    fn takeover_finished(&mut self, now: Instant, ok: bool, context: TakeoverContext) {
        self.need_takeover_run = !ok;
        self.takeover_run.end();
        log::info!(
            "Takeover run {}",
            if ok {
                "completed successfully"
            } else {
                "unsuccessful"
            }
        );
        match context {
            TakeoverContext::Recovery => self.recovery_succeeded(now),
            TakeoverContext::Requests(requests) => {
                let result = if ok { self.pnn.cast_signed() } else { -1 };
                for request in requests {
                    self.srvid_reply(request.pnn, request.srvid, result);
                }
                self.end_cycle(now);
            }
        }
    }
}

/// `verify_recmode`: any node not in NORMAL mode (a reply with any other status) calls for a
/// recovery, whatever else failed; otherwise any failure makes the loop retry.
fn verify_recmode(results: &[(Pnn, Outcome)]) -> RecmodeVerdict {
    let mut verdict = RecmodeVerdict::Ok;
    for (pnn, outcome) in results {
        match outcome {
            Outcome::Reply { status, .. } if status.cast_unsigned() != RECOVERY_NORMAL => {
                log::info!("Node:{pnn} was in recovery mode. Start recovery process");
                return RecmodeVerdict::RecoveryNeeded;
            }
            Outcome::Reply { .. } => {}
            Outcome::Failed => verdict = RecmodeVerdict::Failed,
        }
    }
    verdict
}
