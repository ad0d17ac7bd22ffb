//! Membership of real clusters: dead-node detection, reconnection, hung nodes, and mixed
//! clusters of stock ctdbd and ctdb-rs.

use crate::cluster::{our_ctdbd, our_eventd, Flavour, LocalCluster};
use nix::sys::signal::Signal;
use std::io::Write;
use std::time::Duration;

fn disconnected(cluster: &LocalCluster, observer: u32, pnn: u32) -> bool {
    cluster
        .node_flags(observer)
        .get(pnn as usize)
        .and_then(|r| r.first().copied())
        == Some(true)
}

#[test]
fn killed_node_is_disconnected_at_once_and_reconnects_after_restart() {
    let c = LocalCluster::setup("kill", Flavour::Ours, 3, "127.0.73", &[]);
    c.start();
    c.wait_connected(Duration::from_secs(30));

    c.signal(1, Signal::SIGKILL);
    let took = c.wait_for(
        "node 1 DISCONNECTED on 0 and 2",
        Duration::from_secs(5),
        || disconnected(&c, 0, 1) && disconnected(&c, 2, 1),
    );
    assert!(took < Duration::from_secs(1), "detection took {took:?}");

    // The killed daemon left its socket and pid file behind, as a crash would.
    c.wait_for(
        "the killed process to be reaped",
        Duration::from_secs(10),
        || c.pid(1).is_none(),
    );
    c.start_node(1);
    c.wait_connected(Duration::from_secs(15));
}

#[test]
fn hung_node_is_disconnected_within_the_keepalive_bound() {
    let c = LocalCluster::setup("stop", Flavour::Ours, 3, "127.0.74", &[]);
    c.start();
    c.wait_connected(Duration::from_secs(30));
    // KeepaliveInterval × (KeepaliveLimit + 1) = 1 s × 3.
    for pnn in 0..3 {
        for (name, value) in [("KeepaliveInterval", "1"), ("KeepaliveLimit", "2")] {
            let out = c.ctdb(pnn, &["setvar", name, value]);
            assert!(out.status.success());
        }
    }
    // Let the new interval take effect everywhere (the old timer may still be pending).
    std::thread::sleep(Duration::from_secs(6));
    c.signal(2, Signal::SIGSTOP);
    let took = c.wait_for("node 2 DISCONNECTED", Duration::from_secs(10), || {
        disconnected(&c, 0, 2) && disconnected(&c, 1, 2)
    });
    c.signal(2, Signal::SIGCONT);
    assert!(
        took <= Duration::from_millis(3200),
        "hung node detected after {took:?}"
    );
    c.wait_connected(Duration::from_secs(15));
}

#[test]
fn mixed_cluster_of_stock_and_ctdb_rs_stays_connected() {
    let c = LocalCluster::setup("mixed", Flavour::Stock, 3, "127.0.75", &[]);
    let env = format!(
        "NODE_CTDBD={}\nexport CTDB_EVENTD={}\n",
        our_ctdbd().display(),
        our_eventd().display()
    );
    std::fs::write(c.node_base(2).join("node.env"), env).unwrap();
    c.start();
    c.wait_connected(Duration::from_secs(30));
    // Keepalives (version 0x00040011 and uptime) are accepted in both directions for a
    // minute: no link drops and nobody shuts down.
    for _ in 0..12 {
        std::thread::sleep(Duration::from_secs(5));
        for pnn in 0..3 {
            assert!(c.pid(pnn).is_some(), "node {pnn} exited");
            for other in 0..3 {
                assert!(
                    !disconnected(&c, pnn, other),
                    "node {pnn} sees {other} disconnected"
                );
            }
        }
    }
}

#[test]
fn connections_from_unknown_addresses_and_garbage_never_hurt_the_daemon() {
    let c = LocalCluster::setup("garbage", Flavour::Ours, 2, "127.0.76", &[]);
    c.start();
    c.wait_connected(Duration::from_secs(30));
    let node0: std::net::SocketAddr = "127.0.76.1:4379".parse().unwrap();

    // A connection from an address that is not in the nodes file is closed straight away.
    let socket = std::net::TcpStream::connect(node0).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut buf = [0u8; 16];
    let n = std::io::Read::read(&mut &socket, &mut buf).unwrap_or(0);
    assert_eq!(n, 0, "a stranger's connection must be closed");

    // Garbage on the unix socket: random bytes, bad magic, short and huge lengths, a slow
    // partial frame. Each client may be dropped; the daemon keeps serving others.
    let sock = c.node_base(0).join("run/ctdbd.socket");
    let mut rng = ctdb::testing::Prng::new(76);
    let garbage: Vec<Vec<u8>> = vec![
        (0..4096).map(|_| rng.u8()).collect(),
        [64u32.to_ne_bytes(), 0xdead_beef_u32.to_ne_bytes()].concat(),
        [8u32.to_ne_bytes(), 0u32.to_ne_bytes()].concat(),
        u32::MAX.to_ne_bytes().to_vec(),
        0u32.to_ne_bytes().to_vec(),
    ];
    for bytes in &garbage {
        let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
        let _ = s.write_all(bytes);
    }
    let mut slow = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    slow.write_all(&64u32.to_ne_bytes()).unwrap();
    for pnn in 0..2 {
        let out = c.ctdb(pnn, &["pnn"]);
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), pnn.to_string());
    }
    drop(slow);
    assert!(c.pid(0).is_some() && c.pid(1).is_some());
}
#[test]
fn failing_monitor_event_marks_the_node_unhealthy() {
    // The monitor event runs only once the node is RUNNING, which needs a first recovery by a
    // leader; a stock node leads this cluster until ctdb-rs has its own recovery daemon.
    let c = LocalCluster::setup("monitor", Flavour::Stock, 2, "127.0.77", &[]);
    let env = format!(
        "NODE_CTDBD={}\nexport CTDB_EVENTD={}\n",
        our_ctdbd().display(),
        our_eventd().display()
    );
    std::fs::write(c.node_base(1).join("node.env"), env).unwrap();
    c.write_event_script(
        1,
        "01.health.script",
        "#!/bin/sh\n[ \"$1\" = monitor ] || exit 0\n[ -e \"$CTDB_BASE/sick\" ] && exit 1\nexit 0\n",
    );
    std::fs::write(c.node_base(1).join("sick"), b"").unwrap();
    c.start();
    c.wait_connected(Duration::from_secs(30));
    let unhealthy = |pnn: u32| c.node_flags(pnn).get(1).map(|r| r[4]) == Some(true);
    c.wait_for("node 1 RUNNING", Duration::from_secs(40), || {
        c.ctdb_stdout(1, &["runstate"]).trim() == "RUNNING"
    });
    c.wait_for("a failed monitor run", Duration::from_secs(30), || {
        let out = c.ctdb_stdout(1, &["event", "status", "legacy", "monitor"]);
        out.contains("01.health") && out.contains("ERROR")
    });
    assert!(unhealthy(1));
    std::fs::remove_file(c.node_base(1).join("sick")).unwrap();
    c.wait_for("node 1 healthy", Duration::from_secs(40), || !unhealthy(1));
    std::fs::write(c.node_base(1).join("sick"), b"").unwrap();
    c.wait_for("node 1 unhealthy again", Duration::from_secs(40), || {
        unhealthy(1)
    });
}
