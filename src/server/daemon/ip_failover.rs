//! Wiring between the daemon core and the public IP failover state
//! ([`crate::server::takeover::Takeover`]): builds the view of the node it decides on, and
//! carries out the actions it asks for with the daemon's own machinery (event runs, deferred
//! replies, messages, broadcasts).

use super::{ControlResult, Daemon, EventPurpose, ReplyRoute, RECOVERY_ACTIVE};
use crate::common::clock::Instant;
use crate::protocol::header::BROADCAST_CONNECTED;
use crate::protocol::packet::{ReqControl, ReqMessage, CTRL_FLAG_NOREPLY};
use crate::protocol::srvid;
use crate::protocol::types::node_flags::UNHEALTHY as NODE_FLAGS_UNHEALTHY;
use crate::protocol::types::{BanState, NodeFlagChange, SrvidMessage};
use crate::protocol::Marshal;
use crate::server::effect::{ClientId, Effect};
use crate::server::takeover::{Action, NodeView, Outcome, Takeover};

impl Daemon {
    pub(super) fn failover_view(&self) -> NodeView {
        NodeView {
            pnn: self.pnn,
            running: self.runstate == super::Runstate::Running,
            flags: self.own_flags(),
            recovery_active: self.recovery_mode == RECOVERY_ACTIVE,
            tickle_update_interval: self.tunables.tickle_update_interval().max(1),
            recovery_drop_all_ips: self.tunables.recovery_drop_all_ips(),
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
                    time: self.tunables.recovery_ban_period(),
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

    /// The end of `ctdb_health_callback`: after a health change the local recovery daemon
    /// pushes the new flags to every node, and the leader is asked for a takeover run so that
    /// addresses move off an unhealthy node or onto a healthy one.
    pub(super) fn health_changed(&mut self, old_flags: u32) {
        let new_flags = self.own_flags();
        let change = NodeFlagChange {
            pnn: self.pnn,
            new_flags,
            old_flags,
        };
        self.deliver_to_clients(&ReqMessage {
            srvid: srvid::PUSH_NODE_FLAGS,
            data: change.to_bytes(),
        });
        let state = if new_flags & NODE_FLAGS_UNHEALTHY != 0 {
            "UNHEALTHY"
        } else {
            "HEALTHY"
        };
        log::error!("Node became {state}. Ask recovery master to reallocate IPs");
        let request = ReqMessage {
            srvid: srvid::TAKEOVER_RUN,
            data: SrvidMessage {
                pnn: self.pnn,
                srvid: 0,
            }
            .to_bytes(),
        };
        for pnn in self.broadcast_targets(BROADCAST_CONNECTED) {
            if pnn == self.pnn {
                self.deliver_to_clients(&request);
            } else {
                self.send_node_message(pnn, &request);
            }
        }
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
                    for pnn in self.broadcast_targets(BROADCAST_CONNECTED) {
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

#[cfg(test)]
mod tests {
    use super::super::*;
    use crate::protocol::types::{PublicIp, PublicIpList, UNKNOWN_PNN};

    struct NoHost;

    impl Host for NoHost {
        fn process_exists(&self, _pid: i32) -> bool {
            true
        }
        fn wall_clock(&self) -> Timeval {
            Timeval::default()
        }
        fn read_nodes_file(&self) -> Result<Vec<NodeAndFlags>, String> {
            Err("none".into())
        }
    }

    fn addr(s: &str) -> SockAddr {
        SockAddr::new(s.parse().unwrap(), 0)
    }

    /// Node 1 of three, init and setup done, recovery mode NORMAL, no cluster lock.
    fn daemon() -> Daemon {
        let nodes = (0..3)
            .map(|pnn| NodeAndFlags {
                pnn,
                flags: 0,
                addr: SockAddr::new(format!("127.0.0.{}", pnn + 1).parse().unwrap(), 4379),
            })
            .collect();
        let config = DaemonConfig {
            pnn: 1,
            nodes,
            public_addresses: vec![
                PublicAddress {
                    addr: addr("10.0.0.1"),
                    mask_bits: 24,
                    ifaces: vec!["eth0".into()],
                },
                PublicAddress {
                    addr: addr("10.0.0.2"),
                    mask_bits: 24,
                    ifaces: vec!["eth0".into()],
                },
            ],
            tunables: Tunables::default(),
            cluster_lock: None,
            capabilities: CAP_DEFAULT,
            log_level: 3,
            pid: 1,
            start_time: Timeval::default(),
            start_as_stopped: false,
            start_as_disabled: false,
            test_mode: true,
            failover: FailoverConfig::detached(),
        };
        let dbs = DatabaseSet::new(
            crate::server::database::DbConfig {
                pnn: 1,
                volatile_dir: "/v".into(),
                persistent_dir: "/p".into(),
                state_dir: "/s".into(),
                tdb_mutexes: false,
            },
            Box::new(crate::server::database::MemoryBackend::new()),
        )
        .unwrap();
        let mut d = Daemon::new(config, dbs, Instant::ZERO, &NoHost).unwrap();
        for _ in 0..2 {
            let id = drain(&mut d)
                .into_iter()
                .find_map(|e| match e {
                    Effect::RunEvent { id, .. } => Some(id),
                    _ => None,
                })
                .unwrap();
            d.on_event_done(Instant::ZERO, EventOutcome { id, result: 0 });
        }
        d.on_client_connected(Instant::ZERO, 9, 900);
        control(
            &mut d,
            9,
            ControlOpcode::SetRecmode,
            0u32.to_ne_bytes().to_vec(),
        );
        drain(&mut d);
        d
    }

    fn drain(d: &mut Daemon) -> Vec<Effect> {
        std::iter::from_fn(|| d.poll_effect()).collect()
    }

    fn control(d: &mut Daemon, client: ClientId, opcode: ControlOpcode, data: Vec<u8>) {
        let frame = Packet {
            generation: 0,
            destnode: CURRENT_NODE,
            srcnode: 0,
            reqid: 77,
            body: Body::ReqControl(ReqControl {
                opcode,
                srvid: 0,
                client_id: 0,
                flags: 0,
                data,
            }),
        }
        .encode(Padding::Exact);
        d.on_client_frame(Instant::ZERO, client, &frame, &NoHost);
    }

    fn owners(d: &mut Daemon) -> Vec<u32> {
        control(d, 9, ControlOpcode::GetPublicIps, vec![]);
        let reply = drain(d)
            .into_iter()
            .find_map(|e| match e {
                Effect::SendClient { frame, .. } => match Packet::pull(&frame).unwrap().body {
                    Body::ReplyControl(r) => Some(r),
                    _ => None,
                },
                _ => None,
            })
            .unwrap();
        PublicIpList::from_bytes_exact(&reply.data)
            .unwrap()
            .ips
            .iter()
            .map(|i| i.pnn)
            .collect()
    }

    #[test]
    fn takeover_from_the_leader_replies_after_takeip_and_tells_clients() {
        let mut d = daemon();
        d.on_node_connected(Instant::ZERO, 0);
        let register = Packet {
            generation: 0,
            destnode: CURRENT_NODE,
            srcnode: 0,
            reqid: 5,
            body: Body::ReqControl(ReqControl {
                opcode: ControlOpcode::RegisterSrvid,
                srvid: crate::protocol::srvid::TAKE_IP,
                client_id: 0,
                flags: 0,
                data: vec![],
            }),
        };
        d.on_client_frame(Instant::ZERO, 9, &register.encode(Padding::Exact), &NoHost);
        drain(&mut d);
        let take = Packet {
            generation: 0,
            destnode: 1,
            srcnode: 0,
            reqid: 4242,
            body: Body::ReqControl(ReqControl {
                opcode: ControlOpcode::TakeoverIp,
                srvid: 0,
                client_id: 0,
                flags: 0,
                data: PublicIp {
                    pnn: 1,
                    addr: addr("10.0.0.2"),
                }
                .to_bytes(),
            }),
        };
        d.on_node_frame(Instant::ZERO, 0, &take.encode(Padding::Daemon), &NoHost);
        let effects = drain(&mut d);
        let [Effect::RunEvent {
            id, event, args, ..
        }] = &effects[..]
        else {
            panic!("one event run: {effects:?}");
        };
        assert_eq!(event, "takeip");
        assert_eq!(args, &["eth0", "10.0.0.2", "24"]);
        d.on_event_done(Instant::ZERO, EventOutcome { id: *id, result: 0 });
        let effects = drain(&mut d);
        let Effect::SendClient { client: 9, frame } = &effects[0] else {
            panic!("message first: {effects:?}");
        };
        let Body::ReqMessage(m) = Packet::pull(frame).unwrap().body else {
            panic!()
        };
        assert_eq!(m.data, b"10.0.0.2\0");
        let Effect::SendNode { pnn: 0, frame } = &effects[1] else {
            panic!("then the reply: {effects:?}");
        };
        let reply = Packet::pull(frame).unwrap();
        assert_eq!(reply.reqid, 4242);
        let Body::ReplyControl(r) = reply.body else {
            panic!()
        };
        assert_eq!(r.status, 0);
        assert_eq!(owners(&mut d), vec![1, UNKNOWN_PNN]);
    }

    #[test]
    fn stopping_and_long_recoveries_drop_the_addresses() {
        let mut d = daemon();
        for a in ["10.0.0.1", "10.0.0.2"] {
            let data = PublicIp {
                pnn: 1,
                addr: addr(a),
            }
            .to_bytes();
            control(&mut d, 9, ControlOpcode::TakeoverIp, data);
            let id = drain(&mut d)
                .into_iter()
                .find_map(|e| match e {
                    Effect::RunEvent { id, .. } => Some(id),
                    _ => None,
                })
                .unwrap();
            d.on_event_done(Instant::ZERO, EventOutcome { id, result: 0 });
        }
        drain(&mut d);
        assert_eq!(owners(&mut d), vec![1, 1]);
        control(
            &mut d,
            9,
            ControlOpcode::SetRecmode,
            1u32.to_ne_bytes().to_vec(),
        );
        drain(&mut d);
        let due = Instant::from_secs(120);
        assert!(d.poll_timeout().is_some_and(|t| t <= due));
        d.handle_timeout(Instant::from_secs(119));
        assert_eq!(owners(&mut d), vec![1, 1]);
        d.handle_timeout(due);
        assert_eq!(owners(&mut d), vec![UNKNOWN_PNN, UNKNOWN_PNN]);

        let mut d = daemon();
        let data = PublicIp {
            pnn: 2,
            addr: addr("10.0.0.1"),
        }
        .to_bytes();
        control(&mut d, 9, ControlOpcode::ReleaseIp, data);
        drain(&mut d);
        control(&mut d, 9, ControlOpcode::StopNode, vec![]);
        drain(&mut d);
        assert_eq!(
            owners(&mut d),
            vec![UNKNOWN_PNN, 2],
            "others' addresses stay known"
        );
    }
}
