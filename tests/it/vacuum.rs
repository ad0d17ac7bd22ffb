//! Vacuuming on real clusters: records written and deleted through different nodes leave
//! every node's file, records with data stay, and nothing deleted comes back through a
//! recovery — on ctdb-rs nodes and on a mixed cluster (stock and ours exchanging VACUUM_FETCH
//! and TRY_DELETE_RECORDS).

use crate::cluster::{Flavour, LocalCluster};
use std::time::Duration;

const DB: &str = "vacuum-test.tdb";
const KEYS: u32 = 24;

/// Keys of the test present in a node's own file (deleted ones included while they wait as
/// bare headers), from `ctdb cattdb`, which reads the local TDB.
fn keys_in_file(c: &LocalCluster, pnn: u32) -> Vec<String> {
    let out = c.ctdb_ok(pnn, &["cattdb", DB]);
    let mut keys: Vec<String> = out
        .lines()
        .filter_map(|l| l.trim().strip_prefix("key(").map(str::to_owned))
        .filter_map(|l| l.split('"').nth(1).map(str::to_owned))
        .collect();
    keys.sort();
    keys
}

/// Keys the cluster returns through a traverse (`ctdb catdb`).
fn keys_in_cluster(c: &LocalCluster, pnn: u32) -> Vec<String> {
    let out = c.ctdb_ok(pnn, &["catdb", DB]);
    let mut keys: Vec<String> = out
        .lines()
        .filter_map(|l| l.trim().strip_prefix("key(").map(str::to_owned))
        .filter_map(|l| l.split('"').nth(1).map(str::to_owned))
        .collect();
    keys.sort();
    keys
}

fn deletes_are_vacuumed_and_stay_deleted(c: &LocalCluster) {
    for pnn in 0..c.nodes {
        c.ctdb_ok(pnn, &["setvar", "VacuumInterval", "1"]);
        c.ctdb_ok(pnn, &["setvar", "VacuumFastPathCount", "3"]);
    }
    c.ctdb_ok(0, &["attach", DB]);
    c.wait_for("the database everywhere", Duration::from_secs(30), || {
        (0..c.nodes).all(|n| c.ctdb_stdout(n, &["getdbmap"]).contains(DB))
    });
    c.wait_recovered(Duration::from_secs(90));

    // Every key is written through one node and deleted through the next, so deleted records
    // sit on all kinds of dmaster/lmaster combinations, most of them migrated with data.
    let n = c.nodes;
    for i in 0..KEYS {
        let key = format!("gone-{i:02}");
        c.ctdb_ok(i % n, &["writekey", DB, &key, &format!("value-{i}")]);
        c.ctdb_ok((i + 1) % n, &["deletekey", DB, &key]);
    }
    c.ctdb_ok(1, &["writekey", DB, "kept", "still-here"]);

    c.wait_for(
        "vacuuming to remove every deleted record from every node's file",
        Duration::from_secs(120),
        || (0..n).all(|pnn| keys_in_file(c, pnn).iter().all(|k| !k.starts_with("gone-"))),
    );
    for pnn in 0..n {
        assert_eq!(keys_in_cluster(c, pnn), vec!["kept".to_owned()]);
    }

    // A recovery (and a node restart before it) brings none of them back.
    c.ctdb_ok(0, &["recover"]);
    c.wait_recovered(Duration::from_secs(90));
    for pnn in 0..n {
        assert_eq!(
            keys_in_cluster(c, pnn),
            vec!["kept".to_owned()],
            "catdb on node {pnn} after the recovery"
        );
        let read = c.ctdb_ok(pnn, &["readkey", DB, "gone-05"]);
        assert!(read.contains("size:0"), "node {pnn} read {read:?}");
        let read = c.ctdb_ok(pnn, &["readkey", DB, "kept"]);
        assert!(read.contains("still-here"), "node {pnn} read {read:?}");
    }
}

#[test]
fn vacuuming_on_ctdb_rs_nodes() {
    let c = LocalCluster::setup("vacuum-ours", Flavour::Ours, 3, "127.0.133", &[]);
    c.start();
    c.wait_all_ok(Duration::from_secs(60));
    deletes_are_vacuumed_and_stay_deleted(&c);
}

#[test]
fn vacuuming_on_a_mixed_cluster() {
    // Nodes 1 and 2 run ctdb-rs, node 0 stock.
    let c = LocalCluster::setup("vacuum-mixed", Flavour::Stock, 3, "127.0.134", &[]);
    c.run_ours_on(&[1, 2]);
    c.start();
    c.wait_all_ok(Duration::from_secs(60));
    deletes_are_vacuumed_and_stay_deleted(&c);
}
