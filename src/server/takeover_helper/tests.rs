//! The takeover run against a simulated cluster: what it asks, what it changes, and how it
//! fails.

use super::fake::{FakeCluster, Fault};
use super::takeover::{takeover, TakeoverError, TakeoverParams};
use crate::common::clock::Instant;
use crate::protocol::control::PUBLIC_IP_FLAGS_ONLY_AVAILABLE;
use crate::protocol::opcode::ControlOpcode as Op;
use crate::protocol::srvid;
use crate::protocol::types::{node_flags, UNKNOWN_PNN};
use crate::server::ipalloc::{self, Algorithm, NoLog, Options, PublicIp};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

const ADDRESSES: &[&str] = &[
    "10.0.0.101",
    "10.0.0.102",
    "10.0.0.103",
    "10.0.0.104",
    "10.0.0.105",
    "10.0.0.106",
];

/// Runs one takeover with a clock that advances a millisecond per reading.
fn run(cluster: &mut FakeCluster, params: &TakeoverParams) -> Result<(), TakeoverError> {
    let mut tick = 0u64;
    let mut now = || {
        tick += 1;
        Instant::from_millis(tick)
    };
    takeover(cluster, &mut now, params)
}

fn per_node(hosts: &BTreeMap<IpAddr, u32>, nodes: u32) -> Vec<usize> {
    (0..nodes)
        .map(|n| hosts.values().filter(|&&p| p == n).count())
        .collect()
}

/// The allocation stock's `ipalloc` computes for the cluster as it is now.
fn expected(cluster: &FakeCluster, options: &Options) -> BTreeMap<IpAddr, u32> {
    let known: Vec<Vec<PublicIp>> = cluster
        .nodes
        .iter()
        .map(|n| {
            if n.flags & node_flags::DISCONNECTED != 0 {
                return Vec::new();
            }
            n.ips
                .iter()
                .map(|(addr, &pnn)| PublicIp { pnn, addr: *addr })
                .collect()
        })
        .collect();
    let available: Vec<Vec<PublicIp>> = cluster
        .nodes
        .iter()
        .zip(&known)
        .map(|(n, k)| {
            if n.flags & node_flags::INACTIVE != 0 || !n.can_host {
                Vec::new()
            } else {
                k.clone()
            }
        })
        .collect();
    ipalloc::ipalloc(&known, &available, options, &mut NoLog)
        .into_iter()
        .filter(|ip| ip.pnn != UNKNOWN_PNN)
        .map(|ip| (ip.addr, ip.pnn))
        .collect()
}

fn lcp2() -> Options {
    Options {
        algorithm: Algorithm::Lcp2,
        ..Options::default()
    }
}

#[test]
fn a_fresh_cluster_gets_every_address_hosted_once_in_stock_order_of_stages() {
    let mut c = FakeCluster::new(3, ADDRESSES);
    let want = expected(&c, &lcp2());
    assert_eq!(run(&mut c, &TakeoverParams::default()), Ok(()));
    let hosts = c.hosts().unwrap();
    assert_eq!(hosts, want);
    assert_eq!(hosts.len(), ADDRESSES.len());
    assert_eq!(per_node(&hosts, 3), vec![2, 2, 2]);
    // Every node now agrees on who hosts each address (the releases told the others).
    for node in &c.nodes {
        assert_eq!(
            node.ips
                .iter()
                .map(|(a, p)| (*a, *p))
                .collect::<BTreeMap<_, _>>(),
            hosts
        );
    }

    let ops = c.opcodes();
    assert_eq!(ops[..2], [(0, Op::GetAllTunables), (0, Op::GetNodemap)]);
    let known: Vec<_> = c.seen[2..5]
        .iter()
        .map(|s| (s.pnn, s.opcode, s.flags))
        .collect();
    assert_eq!(
        known,
        (0..3).map(|p| (p, Op::GetPublicIps, 0)).collect::<Vec<_>>()
    );
    let avail: Vec<_> = c.seen[5..8].iter().map(|s| (s.pnn, s.flags)).collect();
    assert_eq!(
        avail,
        (0..3)
            .map(|p| (p, PUBLIC_IP_FLAGS_ONLY_AVAILABLE))
            .collect::<Vec<_>>()
    );
    // Then releases (each address to the two nodes not getting it), takeovers, and
    // IPREALLOCATED everywhere.
    let rest: Vec<Op> = ops[8..].iter().map(|o| o.1).collect();
    let releases = rest.iter().take_while(|&&o| o == Op::ReleaseIp).count();
    assert_eq!(releases, 2 * ADDRESSES.len());
    let takes = rest[releases..]
        .iter()
        .take_while(|&&o| o == Op::TakeoverIp)
        .count();
    assert_eq!(takes, ADDRESSES.len());
    assert_eq!(
        ops[8 + releases + takes..],
        [
            (0, Op::Ipreallocated),
            (1, Op::Ipreallocated),
            (2, Op::Ipreallocated)
        ]
    );
    for seen in &c.seen {
        if seen.opcode == Op::TakeoverIp {
            let ip = seen.ip.unwrap();
            assert_eq!(ip.pnn, seen.pnn);
            assert_eq!(hosts[&ip.addr.ip()], seen.pnn);
        }
        if seen.opcode == Op::ReleaseIp {
            let ip = seen.ip.unwrap();
            assert_ne!(ip.pnn, seen.pnn);
            assert_eq!(hosts[&ip.addr.ip()], ip.pnn);
        }
    }
    assert!(c.messages.is_empty());
}

#[test]
fn timeouts_follow_takeover_timeout_and_the_last_stages_share_three_of_them() {
    let mut c = FakeCluster::new(2, ADDRESSES);
    c.tunables.takeover_timeout = 5;
    run(&mut c, &TakeoverParams::default()).unwrap();
    assert_eq!(
        c.seen[0].timeout,
        Duration::from_secs(9),
        "before the tunables"
    );
    assert_eq!(c.seen[1].timeout, Duration::from_secs(5));
    for seen in &c.seen[2..] {
        match seen.opcode {
            Op::GetPublicIps => assert_eq!(seen.timeout, Duration::from_secs(5)),
            _ => {
                assert!(seen.timeout <= Duration::from_secs(15), "{seen:?}");
                assert!(seen.timeout > Duration::from_secs(14), "{seen:?}");
            }
        }
    }
}

#[test]
fn inactive_and_disconnected_nodes_lose_their_addresses() {
    let mut c = FakeCluster::new(3, ADDRESSES);
    run(&mut c, &TakeoverParams::default()).unwrap();
    // Node 2 stops: still asked what it knows (and told to release), never what it can host.
    c.nodes[2].flags = node_flags::STOPPED;
    c.nodes[2].can_host = false;
    c.seen.clear();
    run(&mut c, &TakeoverParams::default()).unwrap();
    let hosts = c.hosts().unwrap();
    assert_eq!(per_node(&hosts, 3), vec![3, 3, 0]);
    assert!(c
        .seen
        .iter()
        .any(|s| s.pnn == 2 && s.opcode == Op::GetPublicIps && s.flags == 0));
    assert!(!c
        .seen
        .iter()
        .any(|s| s.pnn == 2 && s.flags == PUBLIC_IP_FLAGS_ONLY_AVAILABLE));
    assert!(c
        .seen
        .iter()
        .any(|s| s.pnn == 2 && s.opcode == Op::ReleaseIp));

    // Node 1 disconnects: nothing at all goes to it.
    c.nodes[1].flags = node_flags::DISCONNECTED;
    c.seen.clear();
    run(&mut c, &TakeoverParams::default()).unwrap();
    assert!(c.seen.iter().all(|s| s.pnn != 1), "{:?}", c.opcodes());
    let on_zero = c.nodes[0].ips.values().filter(|&&p| p == 0).count();
    assert_eq!(on_zero, ADDRESSES.len());
}

#[test]
fn no_ip_failback_keeps_addresses_where_they_are_and_lcp2_rebalances_otherwise() {
    for no_failback in [false, true] {
        let mut c = FakeCluster::new(3, ADDRESSES);
        c.tunables.no_ip_failback = u32::from(no_failback);
        c.nodes[1].can_host = false;
        run(&mut c, &TakeoverParams::default()).unwrap();
        assert_eq!(per_node(&c.hosts().unwrap(), 3), vec![3, 0, 3]);
        c.nodes[1].can_host = true;
        run(&mut c, &TakeoverParams::default()).unwrap();
        let counts = per_node(&c.hosts().unwrap(), 3);
        if no_failback {
            assert_eq!(counts, vec![3, 0, 3]);
        } else {
            assert_eq!(counts, vec![2, 2, 2]);
        }
    }
}

#[test]
fn no_ip_takeover_and_force_rebalance_reach_the_allocation() {
    // NoIPTakeover: hosted addresses stay put even where LCP2 would move them.
    let mut c = FakeCluster::new(2, ADDRESSES);
    c.nodes[1].can_host = false;
    run(&mut c, &TakeoverParams::default()).unwrap();
    c.nodes[1].can_host = true;
    c.tunables.no_ip_takeover = 1;
    let want = expected(
        &c,
        &Options {
            no_ip_takeover: true,
            ..lcp2()
        },
    );
    run(&mut c, &TakeoverParams::default()).unwrap();
    assert_eq!(c.hosts().unwrap(), want);
    assert_eq!(per_node(&want, 2), vec![6, 0]);

    // Force rebalance: a node that already hosts an address is no rebalance target unless
    // named.
    let mut c = FakeCluster::new(3, ADDRESSES);
    let owners = [0, 0, 0, 1, 1, 2];
    for node in &mut c.nodes {
        for (host, owner) in node.ips.values_mut().zip(owners) {
            *host = owner;
        }
    }
    let unforced = expected(&c, &lcp2());
    assert_eq!(per_node(&unforced, 3)[2], 1);
    let params = TakeoverParams {
        force_rebalance: vec![2],
        failover_disabled: false,
    };
    let want = expected(
        &c,
        &Options {
            force_rebalance_nodes: vec![2],
            ..lcp2()
        },
    );
    run(&mut c, &params).unwrap();
    assert_eq!(c.hosts().unwrap(), want);
    assert_eq!(per_node(&want, 3), vec![2, 2, 2]);
}

#[test]
fn disabled_failover_and_unhostable_addresses_only_send_ipreallocated() {
    let mut c = FakeCluster::new(3, ADDRESSES);
    let params = TakeoverParams {
        failover_disabled: true,
        ..TakeoverParams::default()
    };
    run(&mut c, &params).unwrap();
    assert_eq!(
        c.opcodes(),
        vec![
            (0, Op::GetAllTunables),
            (0, Op::GetNodemap),
            (0, Op::Ipreallocated),
            (1, Op::Ipreallocated),
            (2, Op::Ipreallocated)
        ]
    );

    let mut c = FakeCluster::new(2, ADDRESSES);
    for n in &mut c.nodes {
        n.can_host = false;
    }
    run(&mut c, &TakeoverParams::default()).unwrap();
    let ops: Vec<Op> = c.opcodes().into_iter().map(|o| o.1).collect();
    assert!(!ops.contains(&Op::TakeoverIp) && !ops.contains(&Op::ReleaseIp));
    assert_eq!(ops.last(), Some(&Op::Ipreallocated));

    // Nobody has addresses: nobody is asked for available ones.
    let mut c = FakeCluster::new(2, &[]);
    run(&mut c, &TakeoverParams::default()).unwrap();
    let asked: Vec<u32> = c
        .seen
        .iter()
        .filter(|s| s.opcode == Op::GetPublicIps)
        .map(|s| s.flags)
        .collect();
    assert_eq!(asked, vec![0, 0]);
}

#[test]
fn a_failing_takeover_blames_the_node_through_the_recovery_daemon() {
    let mut c = FakeCluster::new(3, ADDRESSES);
    c.me = 1;
    c.faults.insert((2, Op::TakeoverIp), Fault::Status(-1));
    assert_eq!(
        run(&mut c, &TakeoverParams::default()),
        Err(TakeoverError::Failed(-1))
    );
    // Two addresses failed on node 2: node 2 is named once, to the local node.
    assert_eq!(
        c.messages,
        vec![(1, srvid::BANNING, 2u32.to_ne_bytes().to_vec())]
    );
    // The run stopped before IPREALLOCATED.
    assert!(!c.opcodes().iter().any(|o| o.1 == Op::Ipreallocated));

    // Bans disabled: same failure, no message.
    let mut c = FakeCluster::new(3, ADDRESSES);
    c.tunables.enable_bans = 0;
    c.faults
        .insert((2, Op::TakeoverIp), Fault::Errno(libc::ETIMEDOUT));
    assert_eq!(
        run(&mut c, &TakeoverParams::default()),
        Err(TakeoverError::Failed(libc::ETIMEDOUT))
    );
    assert!(c.messages.is_empty());
}

#[test]
fn a_multi_node_failure_blames_only_the_first_failing_node() {
    let mut c = FakeCluster::new(3, ADDRESSES);
    c.faults
        .insert((1, Op::GetPublicIps), Fault::Errno(libc::ETIMEDOUT));
    c.faults.insert((2, Op::GetPublicIps), Fault::Status(-1));
    assert_eq!(
        run(&mut c, &TakeoverParams::default()),
        Err(TakeoverError::Failed(libc::ETIMEDOUT))
    );
    assert_eq!(
        c.messages,
        vec![(0, srvid::BANNING, 1u32.to_ne_bytes().to_vec())]
    );

    // IPREALLOCATED failing on a node, with ties: the lowest pnn with the most credits.
    let mut c = FakeCluster::new(3, ADDRESSES);
    c.faults.insert((2, Op::Ipreallocated), Fault::Status(-5));
    assert_eq!(
        run(&mut c, &TakeoverParams::default()),
        Err(TakeoverError::Failed(-5))
    );
    assert_eq!(
        c.messages,
        vec![(0, srvid::BANNING, 2u32.to_ne_bytes().to_vec())]
    );
}

#[test]
fn early_failures_end_the_run_without_blame() {
    for op in [Op::GetAllTunables, Op::GetNodemap] {
        let mut c = FakeCluster::new(2, ADDRESSES);
        c.faults.insert((0, op), Fault::Status(-1));
        assert_eq!(
            run(&mut c, &TakeoverParams::default()),
            Err(TakeoverError::Failed(-1))
        );
        assert!(c.messages.is_empty());
        assert_eq!(c.seen.last().map(|s| s.opcode), Some(op));
    }
    // A failed release stops the run before any takeover and blames the releasing node.
    let mut c = FakeCluster::new(3, ADDRESSES);
    run(&mut c, &TakeoverParams::default()).unwrap();
    c.nodes[1].can_host = false;
    c.faults.insert((1, Op::ReleaseIp), Fault::Status(-1));
    c.seen.clear();
    assert_eq!(
        run(&mut c, &TakeoverParams::default()),
        Err(TakeoverError::Failed(-1))
    );
    assert!(!c.opcodes().iter().any(|o| o.1 == Op::TakeoverIp));
    assert_eq!(
        c.messages,
        vec![(0, srvid::BANNING, 1u32.to_ne_bytes().to_vec())]
    );
}

#[test]
fn a_failed_release_blames_the_first_node_to_fail_for_each_address() {
    for reverse in [false, true] {
        let mut c = FakeCluster::new(3, ADDRESSES);
        run(&mut c, &TakeoverParams::default()).unwrap();
        // Every address is released on the two nodes not hosting it; both nodes 1 and 2 fail.
        c.faults
            .insert((1, Op::ReleaseIp), Fault::Errno(libc::ETIMEDOUT));
        c.faults.insert((2, Op::ReleaseIp), Fault::Status(-9));
        c.reverse_arrivals = reverse;
        let result = run(&mut c, &TakeoverParams::default());
        assert!(
            matches!(result, Err(TakeoverError::Failed(ret)) if ret == -9 || ret == libc::ETIMEDOUT),
            "{result:?}"
        );
        // The addresses node 0 hosts blame whichever of 1 and 2 failed first; the others
        // blame the one failing node they involve. So the first to fail has the most blame.
        let culprit: u32 = if reverse { 2 } else { 1 };
        assert_eq!(
            c.messages,
            vec![(0, srvid::BANNING, culprit.to_ne_bytes().to_vec())],
            "reverse={reverse}"
        );
    }
}
