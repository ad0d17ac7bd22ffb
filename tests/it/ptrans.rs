//! Persistent transactions from every node at once (the stock CLI's `ptrans`: g_lock, then
//! TRANS3_COMMIT): each node's writer counts up its own counter, in a transaction that also
//! records who wrote last, while readers on every node check that no counter ever goes
//! backwards; at the end every node agrees on every counter. On ctdb-rs nodes and on a mixed
//! cluster.

use crate::cluster::{Flavour, LocalCluster};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const DB: &str = "counters.tdb";
const ROUNDS: u32 = 12;

/// The value of `counter-<writer>` as node `pnn` reads it (0 before the first write).
fn counter(c: &LocalCluster, pnn: u32, writer: u32) -> Option<u32> {
    let out = c.ctdb(pnn, &["pfetch", DB, &format!("counter-{writer}")]);
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let text = text.trim();
    if text.is_empty() {
        Some(0)
    } else {
        text.parse().ok()
    }
}

fn counters_never_go_backwards(c: &LocalCluster) {
    c.ctdb_ok(0, &["attach", DB, "persistent"]);
    c.wait_for("the database everywhere", Duration::from_secs(30), || {
        (0..c.nodes).all(|n| c.ctdb_stdout(n, &["getdbmap"]).contains(DB))
    });
    c.wait_for("recovery mode NORMAL", Duration::from_secs(90), || {
        (0..c.nodes).all(|n| {
            c.ctdb_stdout(n, &["status"])
                .contains("Recovery mode:NORMAL")
        })
    });

    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let mut readers = Vec::new();
        for reader in 0..c.nodes {
            let done = &done;
            #[allow(clippy::disallowed_methods)] // Test threads: one reader per node.
            readers.push(scope.spawn(move || {
                let mut seen: BTreeMap<u32, u32> = BTreeMap::new();
                let mut reads = 0u32;
                while !done.load(Ordering::Relaxed) {
                    for writer in 0..c.nodes {
                        let Some(value) = counter(c, reader, writer) else {
                            continue;
                        };
                        let last = seen.entry(writer).or_default();
                        assert!(
                            value >= *last,
                            "node {reader} saw counter-{writer} go back from {last} to {value}"
                        );
                        *last = value;
                        reads += 1;
                    }
                }
                reads
            }));
        }
        let mut writers = Vec::new();
        for writer in 0..c.nodes {
            #[allow(clippy::disallowed_methods)] // Test threads: one writer per node.
            writers.push(scope.spawn(move || {
                for n in 1..=ROUNDS {
                    let file = c.dir().join(format!("ptrans-{writer}-{n}"));
                    std::fs::write(
                        &file,
                        format!("\"counter-{writer}\" \"{n}\"\n\"last-writer\" \"{writer}\"\n"),
                    )
                    .unwrap();
                    let out = c.ctdb(writer, &["-T", "60", "ptrans", DB, file.to_str().unwrap()]);
                    assert!(
                        out.status.success(),
                        "ptrans {n} through node {writer}: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                    // Once acknowledged, the writer's own node already has it.
                    assert_eq!(counter(c, writer, writer), Some(n));
                }
            }));
        }
        for w in writers {
            w.join().unwrap();
        }
        done.store(true, Ordering::Relaxed);
        for r in readers {
            assert!(r.join().unwrap() > 0, "a reader never read");
        }
    });

    for pnn in 0..c.nodes {
        for writer in 0..c.nodes {
            assert_eq!(
                counter(c, pnn, writer),
                Some(ROUNDS),
                "node {pnn}, counter-{writer}"
            );
        }
        let last = c.ctdb_ok(pnn, &["pfetch", DB, "last-writer"]);
        assert!(
            (0..c.nodes).any(|w| last.trim() == w.to_string()),
            "node {pnn}: last-writer {last:?}"
        );
    }
    // The same after a recovery.
    c.ctdb_ok(0, &["recover"]);
    for pnn in 0..c.nodes {
        for writer in 0..c.nodes {
            assert_eq!(counter(c, pnn, writer), Some(ROUNDS), "after recovery");
        }
    }
}

#[test]
fn persistent_transactions_from_every_ctdb_rs_node() {
    let c = LocalCluster::setup("ptrans-ours", Flavour::Ours, 3, "127.0.143", &[]);
    c.start();
    c.wait_all_ok(Duration::from_secs(60));
    counters_never_go_backwards(&c);
}

#[test]
fn persistent_transactions_from_every_node_of_a_mixed_cluster() {
    // Node 1 runs stock, nodes 0 and 2 ctdb-rs.
    let c = LocalCluster::setup("ptrans-mixed", Flavour::Stock, 3, "127.0.144", &[]);
    c.run_ours_on(&[0, 2]);
    c.start();
    c.wait_all_ok(Duration::from_secs(60));
    counters_never_go_backwards(&c);
}
