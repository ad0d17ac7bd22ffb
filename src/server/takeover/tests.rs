//! Unit tests of the failover state machine, driven through its controls with table-backed
//! system hooks.

use super::*;
use crate::protocol::types::node_flags;
use crate::testing::{seeds, Prng};
use std::cell::RefCell;

thread_local! {
    /// Addresses "configured on an interface" for the current test thread.
    static KERNEL: RefCell<Vec<SockAddr>> = const { RefCell::new(Vec::new()) };
}

fn kernel_has(addr: &SockAddr) -> bool {
    KERNEL.with(|k| k.borrow().iter().any(|a| same_ip(a, addr)))
}

fn kernel_set(addrs: &[&str]) {
    KERNEL.with(|k| *k.borrow_mut() = addrs.iter().map(|a| ip(a)).collect());
}

fn ip(s: &str) -> SockAddr {
    SockAddr::new(s.parse().unwrap(), 0)
}

fn pa(addr: &str, bits: u32, ifaces: &[&str]) -> PublicAddress {
    PublicAddress {
        addr: ip(addr),
        mask_bits: bits,
        ifaces: ifaces.iter().map(|s| s.to_string()).collect(),
    }
}

fn test_mode() -> FailoverConfig {
    FailoverConfig {
        have_ip: kernel_has,
        iface_exists: |name| name != "nosuch",
        ..FailoverConfig::detached()
    }
}

fn production() -> FailoverConfig {
    FailoverConfig {
        check_public_ips: true,
        ..test_mode()
    }
}

const T0: Instant = Instant::ZERO;

struct Fixture {
    tk: Takeover,
    node: NodeView,
    next_token: u64,
}

impl Fixture {
    fn new(addresses: &[PublicAddress], config: FailoverConfig) -> Self {
        kernel_set(&[]);
        Fixture {
            tk: Takeover::new(addresses, config),
            node: NodeView {
                pnn: 1,
                running: true,
                flags: 0,
                recovery_active: false,
                tickle_update_interval: 20,
                recovery_drop_all_ips: 120,
            },
            next_token: 100,
        }
    }

    /// The usual three addresses: `10.0.0.1 eth0`, `10.0.0.2 eth1,eth0`, `10.0.0.3 eth2`.
    fn three(config: FailoverConfig) -> Self {
        Fixture::new(
            &[
                pa("10.0.0.1", 24, &["eth0"]),
                pa("10.0.0.2", 24, &["eth1", "eth0"]),
                pa("10.0.0.3", 16, &["eth2"]),
            ],
            config,
        )
    }

    fn ctl_at(
        &mut self,
        now: Instant,
        op: ControlOpcode,
        flags: u32,
        data: &[u8],
        client: Option<ClientId>,
    ) -> (Outcome, Vec<Action>, u64) {
        let token = self.next_token;
        self.next_token += 1;
        let mut actions = Vec::new();
        let outcome = self.tk.control(
            now,
            &self.node,
            op,
            flags,
            data,
            client,
            token,
            &mut actions,
        );
        (outcome, actions, token)
    }

    fn ctl(&mut self, op: ControlOpcode, data: &[u8]) -> (Outcome, Vec<Action>, u64) {
        self.ctl_at(T0, op, 0, data, None)
    }

    fn status(&mut self, op: ControlOpcode, data: &[u8]) -> i32 {
        match self.ctl(op, data).0 {
            Outcome::Done { status, .. } => status,
            other => panic!("{op:?}: expected an immediate answer, got {other:?}"),
        }
    }

    fn done(&mut self, op: u64, result: i32) -> Vec<Action> {
        self.done_at(T0, op, result)
    }

    fn done_at(&mut self, now: Instant, op: u64, result: i32) -> Vec<Action> {
        let mut actions = Vec::new();
        self.tk
            .event_done(now, &self.node, op, result, &mut actions);
        actions
    }

    /// TAKEOVER_IP to completion with a successful event; returns the event arguments.
    fn take(&mut self, addr: &str) -> Vec<String> {
        let (outcome, actions, token) = self.ctl(ControlOpcode::TakeoverIp, &pip(1, addr));
        assert_eq!(outcome, Outcome::Pending, "take {addr}");
        let (op, event, args) = only_event(&actions);
        assert_eq!(event, "takeip");
        let after = self.done(op, 0);
        assert!(after.contains(&Action::Finish { token, status: 0 }));
        args
    }

    fn ips(&mut self, flags: u32) -> Vec<(String, u32)> {
        let (outcome, _, _) = self.ctl_at(T0, ControlOpcode::GetPublicIps, flags, &[], None);
        let Outcome::Done { status: 0, data } = outcome else {
            panic!("GET_PUBLIC_IPS failed: {outcome:?}");
        };
        PublicIpList::from_bytes_exact(&data)
            .unwrap()
            .ips
            .iter()
            .map(|i| (i.addr.to_string(), i.pnn))
            .collect()
    }

    fn ifaces(&mut self) -> Vec<(String, u16, u32)> {
        let (outcome, _, _) = self.ctl(ControlOpcode::GetIfaces, &[]);
        let Outcome::Done { status: 0, data } = outcome else {
            panic!("GET_IFACES failed");
        };
        IfaceList::from_bytes_exact(&data)
            .unwrap()
            .ifaces
            .into_iter()
            .map(|i| (i.name, i.link_state, i.references))
            .collect()
    }

    fn info(&mut self, addr: &str) -> PublicIpInfo {
        let (outcome, _, _) = self.ctl(ControlOpcode::GetPublicIpInfo, &ip(addr).to_bytes());
        let Outcome::Done { status: 0, data } = outcome else {
            panic!("GET_PUBLIC_IP_INFO failed: {outcome:?}");
        };
        PublicIpInfo::from_bytes_exact(&data).unwrap()
    }
}

fn pip(pnn: u32, addr: &str) -> Vec<u8> {
    PublicIp {
        pnn,
        addr: ip(addr),
    }
    .to_bytes()
}

fn only_event(actions: &[Action]) -> (u64, &'static str, Vec<String>) {
    let events: Vec<_> = actions
        .iter()
        .filter_map(|a| match a {
            Action::RunEvent { op, event, args } => Some((*op, *event, args.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(events.len(), 1, "exactly one event in {actions:?}");
    events.into_iter().next().unwrap()
}

fn events(actions: &[Action]) -> Vec<(u64, &'static str, Vec<String>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::RunEvent { op, event, args } => Some((*op, *event, args.clone())),
            _ => None,
        })
        .collect()
}

fn words(s: &str) -> Vec<String> {
    s.split(' ').map(str::to_string).collect()
}

fn msg(srvid: u64, addr: &str) -> Action {
    let mut data = addr.as_bytes().to_vec();
    data.push(0);
    Action::LocalMessage { srvid, data }
}

fn iface_wire(name: &str, link_state: u16, references: u32) -> Vec<u8> {
    Iface {
        name: name.into(),
        link_state,
        references,
    }
    .to_bytes()
}

fn addr_info(addr: &str, mask: u32, iface: &str) -> Vec<u8> {
    crate::protocol::types::AddrInfo {
        addr: ip(addr),
        mask,
        iface: Some(iface.to_string()),
    }
    .to_bytes()
}

fn conn(src: &str, sport: u16, dst: &str, dport: u16) -> Connection {
    Connection {
        src: ip(src).with_port(sport),
        dst: ip(dst).with_port(dport),
    }
}

#[test]
fn lists_keep_stock_order() {
    let mut f = Fixture::three(test_mode());
    assert_eq!(
        f.ips(0),
        vec![
            ("10.0.0.3".into(), UNKNOWN_PNN),
            ("10.0.0.2".into(), UNKNOWN_PNN),
            ("10.0.0.1".into(), UNKNOWN_PNN)
        ],
        "reverse file order"
    );
    assert_eq!(
        f.ifaces(),
        vec![
            ("eth2".into(), 1, 0),
            ("eth1".into(), 1, 0),
            ("eth0".into(), 1, 0)
        ],
        "newest interface first"
    );
    let info = f.info("10.0.0.2");
    assert_eq!(info.ip.pnn, UNKNOWN_PNN);
    assert_eq!(info.active_idx, u32::MAX);
    let names: Vec<&str> = info.ifaces.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, vec!["eth1", "eth0"], "configured order");
    assert_eq!(
        f.status(ControlOpcode::GetPublicIpInfo, &ip("10.9.9.9").to_bytes()),
        -1
    );
    assert_eq!(f.status(ControlOpcode::GetPublicIpInfo, &[0; 27]), -1);
    assert_eq!(f.status(ControlOpcode::GetPublicIps, &[0]), -1);
    assert_eq!(f.status(ControlOpcode::GetIfaces, &[0]), -1);
}

#[test]
fn takeover_runs_takeip_then_tells_local_clients() {
    let mut f = Fixture::three(test_mode());
    let (outcome, actions, token) = f.ctl(ControlOpcode::TakeoverIp, &pip(1, "10.0.0.3"));
    assert_eq!(outcome, Outcome::Pending);
    let (op, event, args) = only_event(&actions);
    assert_eq!((event, args), ("takeip", words("eth2 10.0.0.3 16")));
    // The address is claimed as soon as the interface is assigned.
    assert_eq!(f.info("10.0.0.3").ip.pnn, 1);
    assert_eq!(f.info("10.0.0.3").active_idx, 0);
    // One update at a time.
    let (again, _, _) = f.ctl(ControlOpcode::TakeoverIp, &pip(1, "10.0.0.3"));
    assert_eq!(
        again,
        Outcome::Done {
            status: -1,
            data: vec![]
        }
    );
    let after = f.done(op, 0);
    assert_eq!(
        after,
        vec![
            msg(srvid::TAKE_IP, "10.0.0.3"),
            Action::Finish { token, status: 0 }
        ],
        "test mode sends no ARPs"
    );
    assert_eq!(f.ifaces()[0], ("eth2".into(), 1, 1));
    assert!(f.ips(0).contains(&("10.0.0.3".into(), 1)));
    // Without a kernel check every takeover run runs takeip again, as stock does.
    assert_eq!(f.take("10.0.0.3"), words("eth2 10.0.0.3 16"));
    assert_eq!(f.ifaces()[0], ("eth2".into(), 1, 1), "no second reference");
}

#[test]
fn takeover_rejects_other_pnns_and_ignores_unknown_addresses() {
    let mut f = Fixture::three(test_mode());
    assert_eq!(f.status(ControlOpcode::TakeoverIp, &pip(2, "10.0.0.1")), -1);
    assert_eq!(f.status(ControlOpcode::TakeoverIp, &pip(1, "10.9.9.9")), 0);
    assert_eq!(
        f.status(ControlOpcode::TakeoverIp, &pip(1, "10.0.0.1")[..31]),
        -1
    );
    assert_eq!(f.status(ControlOpcode::ReleaseIp, &pip(1, "10.9.9.9")), 0);
    assert_eq!(f.status(ControlOpcode::ReleaseIp, &[0; 33]), -1);
    // An address whose family stock cannot compare matches nothing.
    let mut odd = pip(1, "10.0.0.1");
    odd[4] = 99;
    assert_eq!(f.status(ControlOpcode::TakeoverIp, &odd), 0);
}

#[test]
fn failed_takeip_reports_its_status_and_leaves_the_address_assigned() {
    let mut f = Fixture::three(test_mode());
    let (_, actions, token) = f.ctl(ControlOpcode::TakeoverIp, &pip(1, "10.0.0.1"));
    let (op, _, _) = only_event(&actions);
    assert_eq!(f.done(op, 1), vec![Action::Finish { token, status: 1 }]);
    assert_eq!(f.info("10.0.0.1").ip.pnn, 1, "stock keeps the claim");
    // A hung script counts as success.
    let (_, actions, token) = f.ctl(ControlOpcode::TakeoverIp, &pip(1, "10.0.0.1"));
    let (op, _, _) = only_event(&actions);
    assert!(f
        .done(op, ETIMEDOUT)
        .contains(&Action::Finish { token, status: 0 }));
}

#[test]
fn takeip_is_refused_during_recovery() {
    let mut f = Fixture::three(test_mode());
    f.node.recovery_active = true;
    let (outcome, actions, _) = f.ctl(ControlOpcode::TakeoverIp, &pip(1, "10.0.0.1"));
    assert_eq!(outcome, Outcome::status(-1));
    assert!(actions.is_empty());
    // Stock assigned the interface before trying the event.
    assert_eq!(f.info("10.0.0.1").ip.pnn, 1);
    f.node.recovery_active = false;
    f.take("10.0.0.1");
}

#[test]
fn best_interface_is_the_least_used_link_up_one() {
    let mut f = Fixture::new(
        &[
            pa("10.0.0.1", 24, &["eth0", "eth1"]),
            pa("10.0.0.2", 24, &["eth0", "eth1"]),
            pa("10.0.0.3", 24, &["eth0", "eth1"]),
        ],
        test_mode(),
    );
    assert_eq!(f.take("10.0.0.1")[0], "eth0", "first on ties");
    assert_eq!(f.take("10.0.0.2")[0], "eth1", "fewer references");
    assert_eq!(
        f.status(ControlOpcode::SetIfaceLinkState, &iface_wire("eth0", 0, 0)),
        0
    );
    assert_eq!(f.take("10.0.0.3")[0], "eth1", "link down is skipped");
    assert_eq!(
        f.ifaces(),
        vec![("eth1".into(), 1, 2), ("eth0".into(), 0, 1)]
    );
    let info = f.info("10.0.0.3");
    assert_eq!(info.active_idx, 1);
    assert_eq!(info.ifaces[0].link_state, 0);
    // Every link down: nothing is available and TAKEOVER_IP fails.
    f.status(ControlOpcode::SetIfaceLinkState, &iface_wire("eth1", 0, 0));
    assert!(f.ips(PUBLIC_IP_FLAGS_ONLY_AVAILABLE).is_empty());
    assert_eq!(f.status(ControlOpcode::TakeoverIp, &pip(1, "10.0.0.1")), -1);
}

#[test]
fn set_iface_link_state_checks_its_argument() {
    let mut f = Fixture::three(test_mode());
    let st = |f: &mut Fixture, d: Vec<u8>| f.status(ControlOpcode::SetIfaceLinkState, &d);
    assert_eq!(
        st(&mut f, iface_wire("eth9", 0, 0)),
        -1,
        "unknown interface"
    );
    assert_eq!(st(&mut f, iface_wire("eth0", 2, 0)), -1, "link state");
    assert_eq!(st(&mut f, iface_wire("eth0", 1, 1)), -1, "references");
    assert_eq!(st(&mut f, iface_wire("eth0", 1, 0)[..23].to_vec()), -1);
    let mut unterminated = iface_wire("eth0", 1, 0);
    unterminated[16] = b'x';
    assert_eq!(st(&mut f, unterminated), -1);
    assert_eq!(st(&mut f, iface_wire("eth0", 1, 0)), 0, "no change");
    assert_eq!(st(&mut f, iface_wire("eth0", 0, 0)), 0);
    assert_eq!(f.ifaces()[2], ("eth0".into(), 0, 0));
}

#[test]
fn only_available_follows_runstate_flags_and_links() {
    let mut f = Fixture::three(test_mode());
    assert_eq!(f.ips(PUBLIC_IP_FLAGS_ONLY_AVAILABLE).len(), 3);
    for flags in [
        node_flags::UNHEALTHY,
        node_flags::PERMANENTLY_DISABLED,
        node_flags::BANNED,
        node_flags::STOPPED,
    ] {
        f.node.flags = flags;
        assert!(
            f.ips(PUBLIC_IP_FLAGS_ONLY_AVAILABLE).is_empty(),
            "{flags:#x}"
        );
        assert_eq!(f.ips(0).len(), 3);
    }
    f.node.flags = 0;
    f.node.running = false;
    assert!(f.ips(PUBLIC_IP_FLAGS_ONLY_AVAILABLE).is_empty());
    f.node.running = true;
    f.status(ControlOpcode::SetIfaceLinkState, &iface_wire("eth0", 0, 0));
    let names: Vec<String> = f
        .ips(PUBLIC_IP_FLAGS_ONLY_AVAILABLE)
        .into_iter()
        .map(|(a, _)| a)
        .collect();
    assert_eq!(
        names,
        vec!["10.0.0.3", "10.0.0.2"],
        "10.0.0.2 still has eth1"
    );
}

#[test]
fn release_of_a_held_address_runs_releaseip_and_records_the_new_owner() {
    let mut f = Fixture::three(test_mode());
    f.take("10.0.0.2");
    let (outcome, actions, token) = f.ctl(ControlOpcode::ReleaseIp, &pip(2, "10.0.0.2"));
    assert_eq!(outcome, Outcome::Pending);
    let (op, event, args) = only_event(&actions);
    assert_eq!((event, args), ("releaseip", words("eth1 10.0.0.2 24")));
    assert_eq!(f.status(ControlOpcode::ReleaseIp, &pip(2, "10.0.0.2")), -1);
    assert_eq!(
        f.done(op, 1),
        vec![
            msg(srvid::RELEASE_IP, "10.0.0.2"),
            Action::Finish { token, status: 0 }
        ],
        "a failing releaseip does not fail the release"
    );
    assert!(f.ips(0).contains(&("10.0.0.2".into(), 2)));
    assert_eq!(f.info("10.0.0.2").active_idx, u32::MAX);
    assert!(f.ifaces().iter().all(|i| i.2 == 0));
}

#[test]
fn redundant_releases_only_remember_the_owner() {
    let mut f = Fixture::three(test_mode());
    let (outcome, actions, _) = f.ctl(ControlOpcode::ReleaseIp, &pip(0, "10.0.0.1"));
    assert_eq!(outcome, Outcome::status(0));
    assert!(actions.is_empty());
    assert!(f.ips(0).contains(&("10.0.0.1".into(), 0)));
    f.status(ControlOpcode::ReleaseIp, &pip(UNKNOWN_PNN, "10.0.0.1"));
    assert!(f.ips(0).contains(&("10.0.0.1".into(), UNKNOWN_PNN)));
}

#[test]
fn with_kernel_checks_the_kernel_decides() {
    let mut f = Fixture::three(production());
    // Not on an interface: redundant release, even though an interface was assigned.
    f.take("10.0.0.1");
    assert_eq!(f.status(ControlOpcode::ReleaseIp, &pip(0, "10.0.0.1")), 0);
    assert_eq!(f.info("10.0.0.1").ip.pnn, 0);
    assert_eq!(f.info("10.0.0.1").active_idx, u32::MAX);
    // On an interface while another node owns it: ban.
    kernel_set(&["10.0.0.1"]);
    let (outcome, _, _) = f.ctl(ControlOpcode::TakeoverIp, &pip(1, "10.0.0.1"));
    assert_eq!(outcome, Outcome::BanSelf);
    // Held by nobody and already on an interface: updateip from no interface.
    kernel_set(&[]);
    f.status(ControlOpcode::ReleaseIp, &pip(UNKNOWN_PNN, "10.0.0.1"));
    kernel_set(&["10.0.0.1"]);
    let (outcome, actions, token) = f.ctl(ControlOpcode::TakeoverIp, &pip(1, "10.0.0.1"));
    assert_eq!(outcome, Outcome::Pending);
    let (op, event, args) = only_event(&actions);
    assert_eq!(
        (event, args),
        ("updateip", words("__none__ eth0 10.0.0.1 24"))
    );
    assert_eq!(f.done(op, 0), vec![Action::Finish { token, status: 0 }]);
    // Held and on the best interface: nothing to do.
    let (outcome, actions, _) = f.ctl(ControlOpcode::TakeoverIp, &pip(1, "10.0.0.1"));
    assert_eq!(outcome, Outcome::status(0));
    assert!(actions.is_empty());
    // Still on an interface after releaseip: the release fails.
    let (_, actions, token) = f.ctl(ControlOpcode::ReleaseIp, &pip(2, "10.0.0.1"));
    let (op, _, _) = only_event(&actions);
    assert_eq!(f.done(op, 0), vec![Action::Finish { token, status: -1 }]);
    assert_eq!(f.info("10.0.0.1").ip.pnn, 1);
}

#[test]
fn updateip_moves_off_a_dead_link_and_reverts_on_failure() {
    let mut f = Fixture::new(&[pa("10.0.0.1", 24, &["eth0", "eth1"])], production());
    f.take("10.0.0.1");
    kernel_set(&["10.0.0.1"]);
    f.status(ControlOpcode::SetIfaceLinkState, &iface_wire("eth0", 0, 0));
    let (_, actions, token) = f.ctl(ControlOpcode::TakeoverIp, &pip(1, "10.0.0.1"));
    let (op, event, args) = only_event(&actions);
    assert_eq!((event, args), ("updateip", words("eth0 eth1 10.0.0.1 24")));
    assert_eq!(f.info("10.0.0.1").active_idx, 1);
    // A hung updateip is a failure (only takeip/releaseip timeouts are forgiven).
    assert_eq!(
        f.done(op, ETIMEDOUT),
        vec![Action::Finish {
            token,
            status: ETIMEDOUT
        }]
    );
    assert_eq!(
        f.info("10.0.0.1").active_idx,
        0,
        "back on the old interface"
    );
    assert_eq!(
        f.ifaces(),
        vec![("eth1".into(), 1, 0), ("eth0".into(), 0, 1)]
    );
}

#[test]
fn takeover_announces_with_arps_and_tickles_outside_test_mode() {
    let mut f = Fixture::new(&[pa("10.0.0.1", 24, &["eth0"])], production());
    f.tk.start(T0, &f.node);
    let known = conn("192.168.1.5", 40000, "10.0.0.1", 445);
    assert_eq!(
        f.status(ControlOpcode::TcpAddDelayedUpdate, &known.to_bytes()),
        0
    );
    let (_, actions, token) = f.ctl(ControlOpcode::TakeoverIp, &pip(1, "10.0.0.1"));
    let (op, _, _) = only_event(&actions);
    let t1 = Instant::from_secs(10);
    let after = f.done_at(t1, op, 0);
    assert_eq!(
        after,
        vec![
            msg(srvid::TAKE_IP, "10.0.0.1"),
            Action::Finish { token, status: 0 }
        ]
    );
    assert_eq!(f.tk.next_deadline(), Some(t1));
    let mut sent = Vec::new();
    let mut now = t1;
    while let Some(due) = f.tk.next_deadline().filter(|&d| d < Instant::from_secs(20)) {
        now = due;
        let mut actions = Vec::new();
        f.tk.handle_timeout(now, &f.node, &mut actions);
        sent.push((now, actions));
    }
    let times: Vec<Instant> = sent.iter().map(|(t, _)| *t).collect();
    assert_eq!(
        times,
        vec![
            t1,
            t1.saturating_add(Duration::from_millis(1100)),
            t1.saturating_add(Duration::from_millis(2200))
        ]
    );
    for (_, actions) in &sent {
        assert_eq!(
            actions,
            &vec![
                Action::SendArp {
                    addr: ip("10.0.0.1"),
                    iface: "eth0".into()
                },
                Action::SendTickleAck {
                    src: known.dst,
                    dst: known.src
                }
            ]
        );
    }
    let _ = now;
    // The connections went with the announcement; the emptied list is sent on the next
    // tickle update.
    let (outcome, _, _) = f.ctl(ControlOpcode::GetTcpTickleList, &ip("10.0.0.1").to_bytes());
    let Outcome::Done { data, .. } = outcome else {
        panic!()
    };
    assert!(TickleList::from_bytes_exact(&data)
        .unwrap()
        .connections
        .is_empty());
    let mut actions = Vec::new();
    f.tk.handle_timeout(Instant::from_secs(20), &f.node, &mut actions);
    assert!(matches!(
        &actions[..],
        [Action::BroadcastControl {
            opcode: ControlOpcode::SetTcpTickleList,
            ..
        }]
    ));
}

#[test]
fn a_release_cancels_the_announcement() {
    let mut f = Fixture::new(&[pa("10.0.0.1", 24, &["eth0"])], production());
    let (_, actions, _) = f.ctl(ControlOpcode::TakeoverIp, &pip(1, "10.0.0.1"));
    let (op, _, _) = only_event(&actions);
    f.done(op, 0);
    let mut actions = Vec::new();
    f.tk.handle_timeout(T0, &f.node, &mut actions);
    assert_eq!(actions.len(), 1);
    f.status(ControlOpcode::ReleaseIp, &pip(2, "10.0.0.1"));
    assert_eq!(f.tk.next_deadline(), None);
}

#[test]
fn gratuitous_arp_control_sends_three_rounds_a_second_apart() {
    let mut f = Fixture::three(test_mode());
    let (outcome, actions, _) = f.ctl(
        ControlOpcode::SendGratuitousArp,
        &addr_info("10.0.0.7", 24, "eth5"),
    );
    assert_eq!(outcome, Outcome::status(0));
    let arp = Action::SendArp {
        addr: ip("10.0.0.7"),
        iface: "eth5".into(),
    };
    assert_eq!(actions, vec![arp.clone()]);
    for s in [1, 2] {
        assert_eq!(f.tk.next_deadline(), Some(Instant::from_secs(s)));
        let mut actions = Vec::new();
        f.tk.handle_timeout(Instant::from_secs(s), &f.node, &mut actions);
        assert_eq!(actions, vec![arp.clone()]);
    }
    assert_eq!(f.tk.next_deadline(), None);
    let mut bad = addr_info("10.0.0.7", 24, "eth5");
    bad.push(0);
    assert_eq!(f.status(ControlOpcode::SendGratuitousArp, &bad), -1);
}

#[test]
fn add_and_delete_public_addresses() {
    let mut f = Fixture::three(test_mode());
    assert_eq!(
        f.status(
            ControlOpcode::AddPublicIp,
            &addr_info("10.0.0.4", 8, "eth3,eth0")
        ),
        0
    );
    assert_eq!(f.ips(0)[0].0, "10.0.0.4", "new addresses go first");
    assert_eq!(f.ifaces()[0].0, "eth3");
    assert_eq!(
        f.status(
            ControlOpcode::AddPublicIp,
            &addr_info("10.0.0.4", 8, "eth0")
        ),
        -1,
        "duplicate"
    );
    // A missing interface fails the add, but interfaces named before it stay (as in stock).
    assert_eq!(
        f.status(
            ControlOpcode::AddPublicIp,
            &addr_info("10.0.0.5", 8, "eth4,nosuch")
        ),
        -1
    );
    assert_eq!(f.ifaces()[0].0, "eth4");
    assert_eq!(f.ips(0).len(), 4);
    assert_eq!(
        f.status(
            ControlOpcode::AddPublicIp,
            &addr_info("10.0.0.6", 8, "a_very_long_interface_name")
        ),
        -1
    );
    // Deleting a non-hosted address removes it and the interfaces only it used.
    assert_eq!(
        f.status(ControlOpcode::DelPublicIp, &addr_info("10.0.0.4", 0, "")),
        0
    );
    let names: Vec<String> = f.ifaces().into_iter().map(|i| i.0).collect();
    assert_eq!(names, vec!["eth4", "eth2", "eth1", "eth0"]);
    assert_eq!(
        f.status(ControlOpcode::DelPublicIp, &addr_info("10.0.0.4", 0, "")),
        -1
    );
    // A hosted address waits for its release.
    f.take("10.0.0.3");
    assert_eq!(
        f.status(ControlOpcode::DelPublicIp, &addr_info("10.0.0.3", 0, "")),
        0
    );
    assert!(!f
        .ips(PUBLIC_IP_FLAGS_ONLY_AVAILABLE)
        .iter()
        .any(|(a, _)| a == "10.0.0.3"));
    assert_eq!(f.ips(0).len(), 3);
    let (_, actions, token) = f.ctl(ControlOpcode::ReleaseIp, &pip(0, "10.0.0.3"));
    let (op, _, _) = only_event(&actions);
    assert!(f.done(op, 0).contains(&Action::Finish { token, status: 0 }));
    assert_eq!(f.ips(0).len(), 2);
    assert!(!f.ifaces().iter().any(|i| i.0 == "eth2"));
}

#[test]
fn reload_adds_in_the_order_stock_does_and_asks_for_a_rebalance() {
    let mut f = Fixture::new(
        &[
            pa("10.0.0.1", 24, &["eth0"]),
            pa("10.0.0.2", 24, &["eth0"]),
            pa("10.0.0.3", 24, &["eth0"]),
        ],
        FailoverConfig {
            public_addresses_file: Some(PathBuf::from("/x/public_addresses")),
            read_public_addresses: |_| {
                Ok(vec![
                    pa("10.0.0.1", 24, &["eth0"]),
                    pa("10.0.0.3", 24, &["eth0"]),
                    pa("10.0.0.4", 24, &["eth0"]),
                    pa("10.0.0.5", 24, &["eth1"]),
                ])
            },
            ..test_mode()
        },
    );
    let (outcome, actions, _) = f.ctl(ControlOpcode::ReloadPublicIps, &[]);
    assert_eq!(outcome, Outcome::status(0));
    assert_eq!(
        actions,
        vec![Action::BroadcastMessage {
            srvid: srvid::REBALANCE_NODE,
            data: 1u32.to_ne_bytes().to_vec()
        }]
    );
    let names: Vec<String> = f.ips(0).into_iter().map(|(a, _)| a).collect();
    assert_eq!(names, vec!["10.0.0.4", "10.0.0.5", "10.0.0.3", "10.0.0.1"]);
    // Nothing new: no rebalance request.
    let (_, actions, _) = f.ctl(ControlOpcode::ReloadPublicIps, &[]);
    assert!(actions.is_empty());
    let mut g = Fixture::three(test_mode());
    assert_eq!(g.status(ControlOpcode::ReloadPublicIps, &[]), 1);
    assert_eq!(g.status(ControlOpcode::ReloadPublicIps, &[0]), -1);
}

#[test]
fn tcp_clients_are_tracked_on_the_hosting_node_and_shared() {
    let mut f = Fixture::three(test_mode());
    let c1 = conn("192.168.1.5", 40000, "10.0.0.1", 445);
    let (outcome, _, _) = f.ctl_at(T0, ControlOpcode::TcpClient, 0, &c1.to_bytes(), Some(7));
    assert_eq!(outcome, Outcome::status(-1), "not hosted here");
    f.take("10.0.0.1");
    let (outcome, actions, _) = f.ctl_at(T0, ControlOpcode::TcpClient, 0, &c1.to_bytes(), Some(7));
    assert_eq!(outcome, Outcome::status(0));
    assert_eq!(
        actions,
        vec![Action::BroadcastControl {
            destnode: crate::protocol::header::BROADCAST_CONNECTED,
            opcode: ControlOpcode::TcpAdd,
            data: c1.to_bytes()
        }]
    );
    // Loopback and unknown destinations are ignored.
    let lo = conn("127.0.0.1", 1, "127.0.0.1", 445);
    let (outcome, _, _) = f.ctl_at(T0, ControlOpcode::TcpClient, 0, &lo.to_bytes(), Some(7));
    assert_eq!(outcome, Outcome::status(0));
    let c2 = conn("192.168.1.6", 40001, "10.0.0.1", 139);
    let c3 = conn("192.168.1.7", 40002, "10.0.0.1", 445);
    f.ctl_at(T0, ControlOpcode::TcpClient, 0, &c2.to_bytes(), Some(8));
    assert_eq!(f.status(ControlOpcode::TcpAdd, &c3.to_bytes()), 0);
    assert_eq!(
        f.status(ControlOpcode::TcpAdd, &c3.to_bytes()),
        0,
        "duplicate"
    );
    assert_eq!(
        f.status(
            ControlOpcode::TcpAdd,
            &conn("1.1.1.1", 1, "10.9.9.9", 1).to_bytes()
        ),
        -1
    );
    let tickles = |f: &mut Fixture, port: u16| -> Vec<Connection> {
        let (o, _, _) = f.ctl(
            ControlOpcode::GetTcpTickleList,
            &ip("10.0.0.1").with_port(port).to_bytes(),
        );
        let Outcome::Done { status: 0, data } = o else {
            panic!("{o:?}")
        };
        TickleList::from_bytes_exact(&data).unwrap().connections
    };
    assert_eq!(tickles(&mut f, 0), vec![c1, c2, c3]);
    assert_eq!(tickles(&mut f, 445), vec![c1, c3]);
    assert_eq!(
        f.status(ControlOpcode::GetTcpTickleList, &ip("10.9.9.9").to_bytes()),
        1
    );
    // Removing swaps the last entry into the hole.
    f.tk.client_closed(&f.node, 7);
    assert_eq!(tickles(&mut f, 0), vec![c3, c2]);
    assert_eq!(f.status(ControlOpcode::TcpRemove, &c3.to_bytes()), 0);
    assert_eq!(tickles(&mut f, 0), vec![c2]);
    // The removals are sent with the next periodic update, and only then.
    f.tk.start(T0, &f.node);
    let mut actions = Vec::new();
    f.tk.handle_timeout(Instant::from_secs(20), &f.node, &mut actions);
    assert_eq!(
        actions,
        vec![Action::BroadcastControl {
            destnode: crate::protocol::header::BROADCAST_ALL,
            opcode: ControlOpcode::SetTcpTickleList,
            data: TickleList {
                addr: ip("10.0.0.1"),
                connections: vec![c2]
            }
            .to_bytes()
        }]
    );
    let mut actions = Vec::new();
    f.tk.handle_timeout(Instant::from_secs(40), &f.node, &mut actions);
    assert!(actions.is_empty());
    // STARTUP from another node forces a resend.
    let (_, actions, _) = f.ctl(ControlOpcode::Startup, &[]);
    assert_eq!(actions.len(), 1);
}

#[test]
fn tickle_lists_from_the_hosting_node_replace_ours() {
    let mut f = Fixture::three(test_mode());
    let c = conn("192.168.1.5", 40000, "10.0.0.2", 445);
    let list = TickleList {
        addr: ip("10.0.0.2"),
        connections: vec![c, c],
    }
    .to_bytes();
    assert_eq!(f.status(ControlOpcode::SetTcpTickleList, &list), 0);
    let (o, _, _) = f.ctl(ControlOpcode::GetTcpTickleList, &ip("10.0.0.2").to_bytes());
    let Outcome::Done { data, .. } = o else {
        panic!()
    };
    assert_eq!(
        TickleList::from_bytes_exact(&data)
            .unwrap()
            .connections
            .len(),
        2
    );
    assert_eq!(
        f.status(ControlOpcode::SetTcpTickleList, &list[..list.len() - 1]),
        -1
    );
    assert_eq!(f.status(ControlOpcode::SetTcpTickleList, &list[..31]), -1);
    let mut longer = list.clone();
    longer.extend_from_slice(&[0; 8]);
    assert_eq!(
        f.status(ControlOpcode::SetTcpTickleList, &longer),
        0,
        "extra bytes are fine"
    );
    let other = TickleList {
        addr: ip("10.9.9.9"),
        connections: vec![],
    };
    assert_eq!(
        f.status(ControlOpcode::SetTcpTickleList, &other.to_bytes()),
        1
    );
    // The hosting node ignores lists about its own addresses.
    f.take("10.0.0.2");
    let empty = TickleList {
        addr: ip("10.0.0.2"),
        connections: vec![],
    };
    assert_eq!(
        f.status(ControlOpcode::SetTcpTickleList, &empty.to_bytes()),
        0
    );
    let (o, _, _) = f.ctl(ControlOpcode::GetTcpTickleList, &ip("10.0.0.2").to_bytes());
    let Outcome::Done { data, .. } = o else {
        panic!()
    };
    assert_eq!(
        TickleList::from_bytes_exact(&data)
            .unwrap()
            .connections
            .len(),
        2
    );
}

#[test]
fn release_all_only_releases_what_the_kernel_has() {
    // Test mode addresses are never on an interface: everything is just forgotten.
    let mut f = Fixture::three(test_mode());
    f.take("10.0.0.1");
    f.take("10.0.0.3");
    let mut actions = Vec::new();
    f.tk.release_all(&f.node, &mut actions);
    assert!(actions.is_empty());
    assert!(f.ips(0).iter().all(|(_, pnn)| *pnn == UNKNOWN_PNN));
    assert!(f.ifaces().iter().all(|i| i.2 == 0));

    let mut f = Fixture::three(production());
    f.take("10.0.0.1");
    f.take("10.0.0.3");
    kernel_set(&["10.0.0.1", "10.0.0.3"]);
    let mut actions = Vec::new();
    f.tk.release_all(&f.node, &mut actions);
    let evs = events(&actions);
    let args: Vec<Vec<String>> = evs.iter().map(|e| e.2.clone()).collect();
    assert_eq!(
        args,
        vec![words("eth2 10.0.0.3 16"), words("eth0 10.0.0.1 24")]
    );
    kernel_set(&["10.0.0.1"]);
    let after = f.done(evs[0].0, 0);
    assert_eq!(after, vec![msg(srvid::RELEASE_IP, "10.0.0.3")]);
    assert!(f.done(evs[1].0, 0).is_empty(), "still on the interface");
    assert_eq!(f.info("10.0.0.3").ip.pnn, UNKNOWN_PNN);
    assert_eq!(f.info("10.0.0.1").ip.pnn, 1);

    let mut f = Fixture::three(FailoverConfig {
        disabled: true,
        ..production()
    });
    f.take("10.0.0.1");
    let mut actions = Vec::new();
    f.tk.release_all(&f.node, &mut actions);
    assert!(actions.is_empty());
    assert_eq!(
        f.info("10.0.0.1").ip.pnn,
        1,
        "failover disabled keeps everything"
    );
}

#[test]
fn staying_in_recovery_too_long_drops_all_addresses() {
    let mut f = Fixture::three(test_mode());
    f.take("10.0.0.1");
    f.tk.recovery_mode_changed(T0, &f.node, true);
    assert_eq!(f.tk.next_deadline(), Some(Instant::from_secs(120)));
    f.tk.recovery_mode_changed(Instant::from_secs(60), &f.node, true);
    assert_eq!(
        f.tk.next_deadline(),
        Some(Instant::from_secs(180)),
        "re-armed"
    );
    f.tk.recovery_mode_changed(Instant::from_secs(61), &f.node, false);
    assert_eq!(f.tk.next_deadline(), None);
    f.tk.recovery_mode_changed(Instant::from_secs(70), &f.node, true);
    let mut actions = Vec::new();
    f.tk.handle_timeout(Instant::from_secs(190), &f.node, &mut actions);
    assert_eq!(f.info("10.0.0.1").ip.pnn, UNKNOWN_PNN);
    assert_eq!(f.tk.next_deadline(), None);
}

#[test]
fn ipv6_and_mapped_addresses_compare_like_stock() {
    let mut f = Fixture::new(
        &[pa("fd00::1", 64, &["eth0"]), pa("10.0.0.1", 24, &["eth0"])],
        test_mode(),
    );
    assert_eq!(f.take("fd00::1"), words("eth0 fd00::1 64"));
    assert_eq!(f.take("::ffff:10.0.0.1"), words("eth0 10.0.0.1 24"));
    let mapped = SockAddr::V6 {
        ip: "::ffff:10.0.0.1".parse().unwrap(),
        port: 0,
        flowinfo: 0,
        scope_id: 0,
    };
    assert!(same_ip(&mapped, &ip("10.0.0.1")));
    let c = Connection {
        src: SockAddr::V6 {
            ip: "::ffff:192.168.1.1".parse().unwrap(),
            port: 5,
            flowinfo: 0,
            scope_id: 0,
        },
        dst: mapped.with_port(445),
    };
    let (outcome, actions, _) = f.ctl_at(T0, ControlOpcode::TcpClient, 0, &c.to_bytes(), Some(1));
    assert_eq!(outcome, Outcome::status(0));
    // The registration is canonicalised to IPv4 before it is shared.
    assert_eq!(
        actions,
        vec![Action::BroadcastControl {
            destnode: crate::protocol::header::BROADCAST_CONNECTED,
            opcode: ControlOpcode::TcpAdd,
            data: conn("192.168.1.1", 5, "10.0.0.1", 445).to_bytes()
        }]
    );
}

#[test]
fn arbitrary_control_payloads_never_panic() {
    let ops = [
        ControlOpcode::TakeoverIp,
        ControlOpcode::ReleaseIp,
        ControlOpcode::GetPublicIps,
        ControlOpcode::GetPublicIpInfo,
        ControlOpcode::GetIfaces,
        ControlOpcode::SetIfaceLinkState,
        ControlOpcode::AddPublicIp,
        ControlOpcode::DelPublicIp,
        ControlOpcode::ReloadPublicIps,
        ControlOpcode::SendGratuitousArp,
        ControlOpcode::TcpClient,
        ControlOpcode::TcpAdd,
        ControlOpcode::TcpAddDelayedUpdate,
        ControlOpcode::TcpRemove,
        ControlOpcode::GetTcpTickleList,
        ControlOpcode::SetTcpTickleList,
        ControlOpcode::Startup,
    ];
    for seed in seeds(200) {
        let mut rng = Prng::new(seed);
        let mut f = Fixture::three(if rng.bool() {
            production()
        } else {
            test_mode()
        });
        for _ in 0..50 {
            let op = ops[rng.below(ops.len() as u64) as usize];
            let mut data = match rng.below(4) {
                0 => rng.bytes(200),
                1 => pip(rng.below(3) as u32, "10.0.0.2"),
                2 => {
                    let mut d = rng.bytes(60);
                    d.resize(Connection::WIRE_LEN, 0);
                    d
                }
                _ => {
                    let mut d = ip("10.0.0.1").to_bytes();
                    d.extend_from_slice(&rng.u32().to_ne_bytes());
                    d.extend(rng.bytes(80));
                    d
                }
            };
            if rng.bool() && !data.is_empty() {
                let i = rng.below(data.len() as u64) as usize;
                data[i] = rng.u8();
            }
            let client = rng.bool().then_some(rng.below(3));
            let (_, actions, _) = f.ctl_at(T0, op, rng.u32(), &data, client);
            for (op, _, _) in events(&actions) {
                let result = [0, 1, ETIMEDOUT][rng.below(3) as usize];
                f.done(op, result);
            }
            if rng.below(10) == 0 {
                let mut actions = Vec::new();
                f.tk.release_all(&f.node, &mut actions);
            }
        }
        let refs: u32 = f.ifaces().iter().map(|i| i.2).sum();
        let assigned = (0..f.tk.vnns.len())
            .filter(|&i| f.tk.vnns[i].iface.is_some())
            .count() as u32;
        assert_eq!(refs, assigned, "seed {seed}: references match assignments");
    }
}
