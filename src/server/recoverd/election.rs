//! Leader election, leader broadcasts and the cluster lock (mirrors `force_election`,
//! `election_handler`, `ctdb_election_win`, `cluster_lock_election`, `leader_handler`,
//! `leader_broadcast_loop_handler` and the `cluster_lock_*` functions of `ctdb_recoverd.c`).
//!
//! Two election modes. With a cluster lock configured, whoever holds the lock leads and no
//! ELECTION messages are sent: LEADER(unknown) is the only election notification. Without a
//! lock, candidates broadcast ELECTION messages and the election ends when `ElectionTimeout`
//! passes with no further message; the winner is decided by [`Recoverd::election_win`].

use super::{
    leading_u32, ClusterLockEvent, Effect, LockState, LockWaiter, Outcome, Pnn, Purpose, Recoverd,
    RecoverdHost, CLUSTER_LOCK_TAKE_TIMEOUT, ELECTION_RESEND_DELAY, FAST_START_ELECTION_TIMEOUT,
    LEADER_BROADCAST_INTERVAL, RECOVERY_ACTIVE,
};
use crate::common::clock::Instant;
use crate::protocol::header::{BROADCAST_ALL, UNKNOWN_PNN};
use crate::protocol::opcode::ControlOpcode;
use crate::protocol::srvid;
use crate::protocol::types::{node_flags, ElectionMessage};
use crate::protocol::{Marshal, Timeval};
use std::cmp::Ordering;
use std::time::Duration;

/// `timeval_compare`.
fn compare_timeval(a: &Timeval, b: &Timeval) -> Ordering {
    (a.tv_sec, a.tv_usec).cmp(&(b.tv_sec, b.tv_usec))
}

impl Recoverd {
    fn election_timeout_duration(&self) -> Duration {
        if self.fast_start {
            FAST_START_ELECTION_TIMEOUT
        } else {
            Duration::from_secs(u64::from(self.tunables.election_timeout()))
        }
    }

    fn arm_election_timeout(&mut self, now: Instant) {
        self.election_timeout = Some(now.saturating_add(self.election_timeout_duration()));
    }

    pub(super) fn arm_leader_broadcast_timeout(&mut self, now: Instant) {
        let timeout = Duration::from_secs(u64::from(self.config.leader_timeout_s));
        self.leader_broadcast_timeout_at = Some(now.saturating_add(timeout));
    }

    pub(super) fn arm_leader_broadcast_loop(&mut self, now: Instant) {
        self.leader_broadcast_at = Some(now.saturating_add(LEADER_BROADCAST_INTERVAL));
    }

    pub(super) fn leader_broadcast_loop_active(&self) -> bool {
        self.leader_broadcast_at.is_some()
    }

    pub(super) fn leader_broadcast_timeout_active(&self) -> bool {
        self.leader_broadcast_timeout_at.is_some()
    }

    /// The 1 s leader broadcast loop: a node that cannot lead gives up leadership and the
    /// lock; the leader announces itself unless an election runs.
    pub(super) fn leader_broadcast_tick(&mut self, now: Instant) {
        if !self.can_be_leader() {
            if self.is_leader() {
                self.leader = UNKNOWN_PNN;
            }
            if self.cluster_lock_enabled() && self.lock != LockState::None {
                self.cluster_lock_release(now);
            }
        } else if self.is_leader() && !self.election_in_progress {
            let leader = self.leader;
            self.broadcast_leader(leader);
        }
        self.arm_leader_broadcast_loop(now);
    }

    /// `force_election`: put every active node into recovery mode, announce "leader unknown"
    /// and run the election of the configured mode.
    pub(super) fn force_election(&mut self, now: Instant) {
        if self.force_election_pending {
            log::info!("Election already being started");
            return;
        }
        log::error!("Start election");
        self.stats.elections_started += 1;
        self.force_election_pending = true;
        let nodes = self.active_nodes(true);
        self.send_batch(
            now,
            Purpose::ForceElection,
            ControlOpcode::SetRecmode,
            &nodes,
            0,
            RECOVERY_ACTIVE.to_ne_bytes().to_vec(),
        );
    }

    pub(super) fn force_election_recmode_done(
        &mut self,
        now: Instant,
        results: &[(Pnn, Outcome)],
        host: &dyn RecoverdHost,
    ) {
        self.force_election_pending = false;
        if results.iter().any(|(_, o)| !o.ok()) {
            log::error!("Unable to set recovery mode to active on cluster");
            return;
        }
        self.election_in_progress = true;
        self.broadcast_leader(UNKNOWN_PNN);
        if self.cluster_lock_enabled() {
            self.cluster_lock_election(now);
            return;
        }
        self.arm_election_timeout(now);
        self.send_election_request(host);
        // Stock waits here (`ctdb_wait_election`) until the election ends.
        self.force_election_waiting = true;
    }

    /// `cluster_lock_election`: keep a held lock, otherwise try to take it.
    pub(super) fn cluster_lock_election(&mut self, now: Instant) {
        if !self.can_be_leader() {
            if self.lock != LockState::None {
                self.cluster_lock_release(now);
            }
            self.election_in_progress = false;
            return;
        }
        if self.lock != LockState::None {
            if self.config.extensions.lock_holder_leads && self.holds_cluster_lock() {
                self.leader = self.pnn;
            }
            self.election_in_progress = false;
            return;
        }
        self.leader = UNKNOWN_PNN;
        log::info!(
            "Attempting to take cluster lock ({})",
            self.config.cluster_lock.as_deref().unwrap_or("")
        );
        self.start_lock_take(LockWaiter::Election);
    }

    /// `ctdb_election_data`.
    pub(super) fn election_data(&mut self, host: &dyn RecoverdHost) -> ElectionMessage {
        if let Some(flags) = self.flags_of(self.pnn) {
            self.node_flags = flags;
        }
        let num_connected = self
            .nodemap_nodes()
            .iter()
            .filter(|n| n.flags & node_flags::DISCONNECTED == 0)
            .count();
        let mut em = ElectionMessage {
            num_connected: u32::try_from(num_connected).unwrap_or(u32::MAX),
            priority_time: self.priority_time,
            pnn: self.pnn,
            node_flags: self.node_flags,
        };
        if !self.can_be_leader() {
            // Try to lose.
            em.num_connected = 0;
            em.priority_time = host.wall_clock();
        }
        em
    }

    /// `ctdb_election_win`: whether we beat `other`. Exactly stock's rules: a node that
    /// cannot lead loses; an INACTIVE opponent loses; the older priority time wins; on a tie
    /// the higher PNN wins. `num_connected` is not looked at.
    pub(super) fn election_win(
        &mut self,
        other: &ElectionMessage,
        host: &dyn RecoverdHost,
    ) -> bool {
        let mine = self.election_data(host);
        if !self.can_be_leader() {
            return false;
        }
        if other.node_flags & node_flags::INACTIVE != 0 {
            return true;
        }
        match compare_timeval(&other.priority_time, &mine.priority_time) {
            Ordering::Greater => true,
            Ordering::Less => false,
            Ordering::Equal => mine.pnn.cast_signed().wrapping_sub(other.pnn.cast_signed()) > 0,
        }
    }

    /// `send_election_request`: assume we win, and tell everyone.
    pub(super) fn send_election_request(&mut self, host: &dyn RecoverdHost) {
        let em = self.election_data(host);
        self.leader = self.pnn;
        self.effects.push_back(Effect::SendMessage {
            destnode: BROADCAST_ALL,
            srvid: srvid::ELECTION,
            data: em.to_bytes(),
        });
    }

    /// An ELECTION message.
    pub(super) fn election_message(&mut self, now: Instant, data: &[u8], host: &dyn RecoverdHost) {
        let Ok((em, _)) = ElectionMessage::pull(data) else {
            log::error!("Short election message ignored");
            return;
        };
        if em.pnn == self.pnn {
            return;
        }
        self.arm_election_timeout(now);
        self.election_in_progress = true;
        if self.election_win(&em, host) {
            if self.send_election_at.is_none() {
                self.send_election_at = Some(now.saturating_add(ELECTION_RESEND_DELAY));
            }
            return;
        }
        self.send_election_at = None;
        if self.lock != LockState::None {
            self.cluster_lock_release(now);
        }
        self.leader = em.pnn;
    }

    /// `ctdb_election_timeout`: the election is over; a winner with a cluster lock configured
    /// must now take it, or ban itself.
    pub(super) fn on_election_timeout(&mut self, now: Instant) {
        self.election_in_progress = false;
        self.force_election_waiting = false;
        self.fast_start = false;
        if self
            .config
            .extensions
            .leader_timeout_restarts_after_election
            && self.leader_broadcast_timeout_active()
        {
            self.arm_leader_broadcast_timeout(now);
        }
        log::warn!("Election period ended, leader={}", self.leader);
        if !self.is_leader() {
            return;
        }
        self.cluster_lock_take(LockWaiter::ElectionTimeout);
    }

    /// A LEADER broadcast.
    pub(super) fn leader_message(&mut self, now: Instant, data: &[u8]) {
        let Some(pnn) = leading_u32(data) else {
            log::warn!("Unable to parse leader broadcast");
            return;
        };
        self.leader_broadcast_timeout_at = None;
        if pnn == self.leader {
            self.arm_leader_broadcast_timeout(now);
            return;
        }
        if pnn == UNKNOWN_PNN {
            let was_election_in_progress = self.election_in_progress;
            // The leader timeout stays cancelled: the main loop re-arms it after the election.
            self.election_in_progress = true;
            if self.cluster_lock_enabled() {
                if !was_election_in_progress {
                    self.cluster_lock_election(now);
                }
            } else if self.config.extensions.bounded_unknown_leader_election
                && self.election_timeout.is_none()
            {
                self.arm_election_timeout(now);
            }
            return;
        }
        if self.config.extensions.lock_holder_leads
            && self.holds_cluster_lock()
            && self.cluster_lock_enabled()
        {
            log::warn!("Ignoring leader broadcast from {pnn}: this node holds the cluster lock");
            self.leader = self.pnn;
            self.arm_leader_broadcast_timeout(now);
            return;
        }
        log::info!("Received leader broadcast, leader={pnn}");
        self.leader = pnn;
        self.arm_leader_broadcast_timeout(now);
    }

    // ------------------------------------------------------------------------------------
    // Cluster lock

    /// `cluster_lock_take` as used at the end of an ELECTION-message election.
    fn cluster_lock_take(&mut self, waiter: LockWaiter) {
        if !self.cluster_lock_enabled() {
            return;
        }
        if self.lock != LockState::None {
            log::info!("Already holding cluster lock");
            return;
        }
        self.start_lock_take(waiter);
    }

    /// Whether the [`Extensions::startup_lock_probe`] may run now: nobody is known to lead, no
    /// election or lock take runs, this node can lead, and every node of the map is connected
    /// (an election with nodes still joining would be followed by another recovery, which the
    /// rerecovery timeout holds off for seconds).
    pub(super) fn startup_probe_due(&self) -> bool {
        self.cluster_lock_enabled()
            && self.leader == UNKNOWN_PNN
            && !self.election_in_progress
            && !self.force_election_pending
            && self.lock == LockState::None
            && self.can_be_leader()
            && !self.nodemap_nodes().is_empty()
            && self.nodemap_nodes().iter().all(|n| {
                n.flags & node_flags::DELETED != 0 || n.flags & node_flags::DISCONNECTED == 0
            })
    }

    pub(super) fn start_lock_take(&mut self, waiter: LockWaiter) {
        let id = self.next_lock_id;
        self.next_lock_id += 1;
        self.lock = LockState::Taking { id, waiter };
        self.effects.push_back(Effect::TakeClusterLock {
            id,
            timeout: CLUSTER_LOCK_TAKE_TIMEOUT,
        });
    }

    /// `cluster_lock_release`. A take still in progress is cancelled and its waiter sees a
    /// failure, as stock's "leave the handle in place to allow taking of the lock to fail".
    pub(super) fn cluster_lock_release(&mut self, now: Instant) {
        match self.lock {
            LockState::None => {}
            LockState::Taking { id, waiter } => {
                log::info!("Cancelling cluster lock");
                self.lock = LockState::None;
                self.effects.push_back(Effect::ReleaseClusterLock { id });
                self.lock_take_finished(now, waiter, false);
            }
            LockState::Held { id } => {
                log::info!("Releasing cluster lock");
                self.lock = LockState::None;
                self.effects.push_back(Effect::ReleaseClusterLock { id });
            }
        }
    }

    pub(super) fn cluster_lock_event(&mut self, now: Instant, id: u64, event: ClusterLockEvent) {
        match (self.lock, event) {
            (LockState::Taking { id: taking, waiter }, event) if taking == id => match event {
                ClusterLockEvent::Taken { latency } => {
                    self.lock = LockState::Held { id };
                    log::info!("Cluster lock taken successfully");
                    self.send_batch(
                        now,
                        Purpose::Ignore,
                        ControlOpcode::RecdReclockLatency,
                        &[crate::protocol::header::CURRENT_NODE],
                        0,
                        latency.to_ne_bytes().to_vec(),
                    );
                    self.lock_take_finished(now, waiter, true);
                }
                ClusterLockEvent::Lost => {
                    // A helper that dies before answering reads as an error.
                    self.lock = LockState::None;
                    self.lock_take_finished(now, waiter, false);
                }
                other => {
                    match other {
                        ClusterLockEvent::Contention => {
                            log::error!("Unable to take cluster lock - contention");
                        }
                        ClusterLockEvent::Timeout => {
                            log::error!("Unable to take cluster lock - timeout");
                        }
                        _ => log::error!("Unable to take cluster lock - unknown error"),
                    }
                    self.lock = LockState::None;
                    self.effects.push_back(Effect::ReleaseClusterLock { id });
                    self.lock_take_finished(now, waiter, false);
                }
            },
            (LockState::Held { id: held }, ClusterLockEvent::Lost) if held == id => {
                log::error!("Cluster lock helper terminated");
                self.lock = LockState::None;
                if self.can_be_leader() {
                    self.force_election(now);
                }
            }
            _ => log::info!("Stale cluster lock event {event:?} for take {id} ignored"),
        }
    }

    fn lock_take_finished(&mut self, now: Instant, waiter: LockWaiter, locked: bool) {
        match waiter {
            LockWaiter::Election => {
                if locked {
                    self.leader = self.pnn;
                    log::warn!("Took cluster lock, leader={}", self.leader);
                }
                self.election_in_progress = false;
            }
            LockWaiter::StartupProbe => {
                if !locked {
                    log::info!("Cluster lock is held elsewhere: waiting for the leader");
                    return;
                }
                if self.leader != UNKNOWN_PNN && self.leader != self.pnn {
                    // Announced while the take ran, yet the lock was free: that node does not
                    // hold it, and only the holder can lead.
                    log::warn!(
                        "Took the cluster lock although node {} was announced leader",
                        self.leader
                    );
                }
                // Run the election the holder is bound to win now.
                self.leader_broadcast_timeout_at = None;
                self.force_election(now);
            }
            LockWaiter::ElectionTimeout => {
                if !locked {
                    log::error!("Unable to get cluster lock, banning node");
                    let pnn = self.pnn;
                    self.ban_node(now, pnn);
                }
            }
        }
    }
}
