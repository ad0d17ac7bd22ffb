//! Record calls between ctdb-rs nodes: the stock CLI's fetch-lock commands migrate volatile
//! records between nodes (REQ_CALL, REQ_DMASTER, REPLY_DMASTER).

use crate::cluster::{our_ctdbd, our_eventd, Flavour, LocalCluster};
use std::time::Duration;

#[test]
fn volatile_record_migrates_between_nodes() {
    let c = LocalCluster::setup("calls", Flavour::Ours, 3, "127.0.95", &[]);
    c.start();
    c.wait_connected(Duration::from_secs(30));
    c.wait_all_ok(Duration::from_secs(60));
    c.ctdb_ok(0, &["attach", "test.tdb"]);
    c.wait_for(
        "test.tdb attached everywhere",
        Duration::from_secs(30),
        || (0..c.nodes).all(|n| c.ctdb_stdout(n, &["getdbmap"]).contains("test.tdb")),
    );
    c.wait_recovered(Duration::from_secs(60));

    c.ctdb_ok(1, &["writekey", "test.tdb", "k", "v1"]);
    let read = c.ctdb_ok(1, &["readkey", "test.tdb", "k"]);
    assert!(
        read.contains("Data: size:2 ptr:[v1]"),
        "node 1 read {read:?}"
    );
    for pnn in [0, 2] {
        let read = c.ctdb_ok(pnn, &["readkey", "test.tdb", "k"]);
        assert!(
            read.contains("Data: size:2 ptr:[v1]"),
            "node {pnn} read {read:?}"
        );
    }
    // Writing on another node migrates the record there and later readers see the new value.
    c.ctdb_ok(2, &["writekey", "test.tdb", "k", "v22"]);
    for pnn in [1, 0, 2] {
        let read = c.ctdb_ok(pnn, &["readkey", "test.tdb", "k"]);
        assert!(
            read.contains("Data: size:3 ptr:[v22]"),
            "node {pnn} read {read:?}"
        );
    }
    c.ctdb_ok(0, &["deletekey", "test.tdb", "k"]);
    let read = c.ctdb_ok(1, &["readkey", "test.tdb", "k"]);
    assert!(
        read.contains("Data: size:0"),
        "node 1 read {read:?} after delete"
    );
}

#[test]
fn persistent_transactions_reach_every_node() {
    let c = LocalCluster::setup("trans3", Flavour::Ours, 3, "127.0.97", &[]);
    c.start();
    c.wait_connected(Duration::from_secs(30));
    c.wait_all_ok(Duration::from_secs(60));
    c.ctdb_ok(0, &["attach", "p.tdb", "persistent"]);
    c.wait_for("p.tdb attached everywhere", Duration::from_secs(30), || {
        (0..c.nodes).all(|n| c.ctdb_stdout(n, &["getdbmap"]).contains("p.tdb"))
    });
    c.wait_recovered(Duration::from_secs(60));

    c.ctdb_ok(1, &["pstore", "p.tdb", "k", "v"]);
    for pnn in 0..3 {
        assert_eq!(c.ctdb_ok(pnn, &["pfetch", "p.tdb", "k"]).trim(), "v");
    }
    c.ctdb_ok(2, &["pstore", "p.tdb", "k", "v2"]);
    for pnn in 0..3 {
        assert_eq!(c.ctdb_ok(pnn, &["pfetch", "p.tdb", "k"]).trim(), "v2");
    }
    c.ctdb_ok(0, &["pdelete", "p.tdb", "k"]);
    for pnn in 0..3 {
        assert_eq!(c.ctdb_ok(pnn, &["pfetch", "p.tdb", "k"]).trim(), "");
    }
}

#[test]
fn records_move_between_stock_and_ctdb_rs_nodes() {
    let c = LocalCluster::setup("calls-mixed", Flavour::Stock, 3, "127.0.99", &[]);
    let env = format!(
        "NODE_CTDBD={}\nexport CTDB_EVENTD={}\n",
        our_ctdbd().display(),
        our_eventd().display()
    );
    std::fs::write(c.node_base(2).join("node.env"), env).unwrap();
    c.start();
    c.wait_connected(Duration::from_secs(30));
    c.wait_all_ok(Duration::from_secs(60));
    c.ctdb_ok(0, &["attach", "test.tdb"]);
    c.ctdb_ok(0, &["attach", "p.tdb", "persistent"]);
    c.wait_for(
        "databases attached everywhere",
        Duration::from_secs(30),
        || {
            (0..c.nodes).all(|n| {
                let map = c.ctdb_stdout(n, &["getdbmap"]);
                map.contains("test.tdb") && map.contains("p.tdb")
            })
        },
    );
    c.wait_recovered(Duration::from_secs(60));

    // Several keys so that every node is lmaster of some of them.
    let keys = ["a", "b", "c", "d", "e", "f"];
    for (writer, prefix) in [(1, "s"), (2, "o")] {
        for k in keys {
            c.ctdb_ok(
                writer,
                &["writekey", "test.tdb", k, &format!("{prefix}{k}")],
            );
        }
        for pnn in [2, 0, 1, 2] {
            for k in keys {
                let read = c.ctdb_ok(pnn, &["readkey", "test.tdb", k]);
                let want = format!("Data: size:2 ptr:[{prefix}{k}]");
                assert!(read.contains(&want), "node {pnn} key {k} read {read:?}");
            }
        }
    }
    for (writer, value) in [(2, "fromours"), (0, "fromstock")] {
        c.ctdb_ok(writer, &["pstore", "p.tdb", "k", value]);
        for pnn in 0..3 {
            assert_eq!(c.ctdb_ok(pnn, &["pfetch", "p.tdb", "k"]).trim(), value);
        }
    }
}
