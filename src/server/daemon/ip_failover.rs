//! Wiring between the daemon core and the public IP failover state
//! ([`crate::server::takeover::Takeover`]): builds the view of the node it decides on, and
//! carries out the actions it asks for with the daemon's own machinery (event runs, deferred
//! replies, messages, broadcasts).

use super::{ControlResult, Daemon, EventPurpose, ReplyRoute, RECOVERY_ACTIVE};
use crate::common::clock::Instant;
use crate::protocol::packet::{ReqControl, ReqMessage, CTRL_FLAG_NOREPLY};
use crate::protocol::types::BanState;
use crate::server::effect::{ClientId, Effect};
use crate::server::takeover::{Action, NodeView, Outcome, Takeover};

impl Daemon {
    pub(super) fn failover_view(&self) -> NodeView {
        NodeView {
            pnn: self.pnn,
            running: self.runstate == super::Runstate::Running,
            flags: self.own_flags(),
            recovery_active: self.recovery_mode == RECOVERY_ACTIVE,
            tickle_update_interval: self.tunable("TickleUpdateInterval").max(1),
            recovery_drop_all_ips: self.tunable("RecoveryDropAllIPs"),
        }
    }

    /// A control [`Takeover::handles`]; `None` when the reply comes later.
    pub(super) fn failover_control(
        &mut self,
        now: Instant,
        c: &ReqControl,
        srcnode: u32,
        route: ReplyRoute,
    ) -> Option<ControlResult> {
        let client = self.local_client(c.client_id, srcnode);
        let view = self.failover_view();
        let token = self.defer(route);
        let mut actions = Vec::new();
        let outcome = self.takeover.control(
            now,
            &view,
            c.opcode,
            c.flags,
            &c.data,
            client,
            token,
            &mut actions,
        );
        self.apply_failover_actions(now, actions);
        let result = match outcome {
            Outcome::Pending => return None,
            Outcome::Done { status, data } => ControlResult {
                status,
                data,
                error: String::new(),
            },
            Outcome::BanSelf => {
                let ban = BanState {
                    pnn: self.pnn,
                    time: self.tunable("RecoveryBanPeriod"),
                };
                self.set_ban_state(now, ban);
                ControlResult::status(-1)
            }
        };
        // Synchronous answers still went through the deferred table, so that an answer for
        // a route is sent exactly once.
        self.deferred.remove(&token);
        Some(result)
    }

    pub(super) fn failover_event_done(&mut self, now: Instant, op: u64, result: i32) {
        let view = self.failover_view();
        let mut actions = Vec::new();
        self.takeover
            .event_done(now, &view, op, result, &mut actions);
        self.apply_failover_actions(now, actions);
    }

    /// `ctdb_release_all_ips`.
    pub(super) fn failover_release_all(&mut self, now: Instant) {
        log::info!("Dropping all public IP addresses");
        let view = self.failover_view();
        let mut actions = Vec::new();
        self.takeover.release_all(&view, &mut actions);
        self.apply_failover_actions(now, actions);
    }

    pub(super) fn failover_client_closed(&mut self, client: ClientId) {
        let view = self.failover_view();
        self.takeover.client_closed(&view, client);
    }

    /// SET_RECMODE is changing the recovery mode to ACTIVE (`active`) or NORMAL.
    pub(super) fn failover_recovery_mode(&mut self, now: Instant, active: bool) {
        let view = self.failover_view();
        self.takeover.recovery_mode_changed(now, &view, active);
    }

    pub(super) fn failover_timeout(&mut self, now: Instant) {
        if self.takeover.next_deadline().is_none_or(|due| now < due) {
            return;
        }
        let view = self.failover_view();
        let mut actions = Vec::new();
        self.takeover.handle_timeout(now, &view, &mut actions);
        self.apply_failover_actions(now, actions);
    }

    fn apply_failover_actions(&mut self, now: Instant, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::RunEvent { op, event, args } => {
                    if !self.run_event(EventPurpose::Failover { op }, event, args) {
                        self.failover_event_done(now, op, -1);
                    }
                }
                Action::LocalMessage { srvid, data } => {
                    self.deliver_to_clients(&ReqMessage { srvid, data });
                }
                Action::BroadcastMessage { srvid, data } => {
                    let m = ReqMessage { srvid, data };
                    for pnn in self.broadcast_targets(crate::protocol::header::BROADCAST_CONNECTED)
                    {
                        if pnn == self.pnn {
                            self.deliver_to_clients(&m);
                        } else {
                            self.send_node_message(pnn, &m);
                        }
                    }
                }
                Action::BroadcastControl {
                    destnode,
                    opcode,
                    data,
                } => {
                    let c = ReqControl {
                        opcode,
                        srvid: 0,
                        client_id: 0,
                        flags: CTRL_FLAG_NOREPLY,
                        data,
                    };
                    for pnn in self.broadcast_targets(destnode) {
                        if pnn != self.pnn {
                            self.send_node_control(pnn, 0, &c);
                        }
                    }
                }
                Action::Finish { token, status } => {
                    self.finish_deferred(token, ControlResult::status(status));
                }
                Action::SendArp { addr, iface } => {
                    self.effects.push_back(Effect::SendArp { addr, iface });
                }
                Action::SendTickleAck { src, dst } => {
                    self.effects.push_back(Effect::SendTickleAck { src, dst });
                }
            }
        }
    }
}

/// Whether the failover module answers `op`.
pub(super) fn handles(op: crate::protocol::opcode::ControlOpcode) -> bool {
    Takeover::handles(op)
}
