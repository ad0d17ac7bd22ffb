//! Mixed clusters of stock ctdbd and ctdb-rs: whichever implementation leads, the cluster
//! becomes OK, and a persistent database written through every node is identical everywhere
//! after a recovery.

use crate::cluster::{Flavour, LocalCluster};
use std::time::Duration;

/// A 3-node cluster whose nodes in `ours` run ctdb-rs (with our helpers) and the rest stock.
fn mixed(name: &str, prefix: &str, ours: &[u32]) -> LocalCluster {
    let c = LocalCluster::setup(name, Flavour::Stock, 3, prefix, &[]);
    c.run_ours_on(ours);
    c.start();
    c.wait_all_ok(Duration::from_secs(60));
    c
}

/// Takes the leader role away from every node but `leader` and waits until it leads a
/// healthy cluster.
fn force_leader(c: &LocalCluster, leader: u32) {
    for pnn in (0..3).filter(|&n| n != leader) {
        assert!(c.ctdb(pnn, &["setleaderrole", "off"]).status.success());
    }
    c.wait_for(
        &format!("node {leader} to lead"),
        Duration::from_secs(60),
        || (0..3).all(|n| c.ctdb_stdout(n, &["leader"]).trim() == leader.to_string()),
    );
    c.wait_all_ok(Duration::from_secs(60));
}

/// Writes one key through every node, recovers, and checks every node sees every key.
fn persistent_writes_survive_recovery(c: &LocalCluster) {
    assert!(c
        .ctdb(0, &["attach", "mixed.tdb", "persistent"])
        .status
        .success());
    for pnn in 0..3 {
        let out = c.ctdb(
            pnn,
            &[
                "pstore",
                "mixed.tdb",
                &format!("key{pnn}"),
                &format!("value{pnn}"),
            ],
        );
        assert!(
            out.status.success(),
            "pstore on node {pnn}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(c.ctdb(1, &["recover"]).status.success());
    c.wait_all_ok(Duration::from_secs(60));
    for reader in 0..3 {
        for writer in 0..3 {
            let value = c.ctdb_stdout(reader, &["pfetch", "mixed.tdb", &format!("key{writer}")]);
            assert_eq!(
                value.trim(),
                format!("value{writer}"),
                "node {reader} reading key{writer}"
            );
        }
    }
}

#[test]
fn two_stock_and_one_ctdb_rs_become_ok_with_either_leading() {
    let c = mixed("mixed-2s1r", "127.0.58", &[2]);
    force_leader(&c, 2);
    persistent_writes_survive_recovery(&c);
    assert!(c.ctdb(0, &["setleaderrole", "on"]).status.success());
    assert!(c.ctdb(2, &["setleaderrole", "off"]).status.success());
    c.wait_for("stock node 0 to lead", Duration::from_secs(60), || {
        (0..3).all(|n| c.ctdb_stdout(n, &["leader"]).trim() == "0")
    });
    c.wait_all_ok(Duration::from_secs(60));
}

#[test]
fn one_stock_and_two_ctdb_rs_become_ok_with_either_leading() {
    let c = mixed("mixed-1s2r", "127.0.59", &[1, 2]);
    force_leader(&c, 0);
    persistent_writes_survive_recovery(&c);
    assert!(c.ctdb(1, &["setleaderrole", "on"]).status.success());
    assert!(c.ctdb(0, &["setleaderrole", "off"]).status.success());
    c.wait_for("ctdb-rs node 1 to lead", Duration::from_secs(60), || {
        (0..3).all(|n| c.ctdb_stdout(n, &["leader"]).trim() == "1")
    });
    c.wait_all_ok(Duration::from_secs(60));
}
