//! Leadership on real ctdb-rs clusters: exactly one leader after the leader is stopped,
//! banned, loses its leader role, is killed or hangs, and after the cluster lock file vanishes.

use crate::cluster::{Flavour, LocalCluster};
use nix::sys::signal::Signal;
use std::time::Duration;

/// The leader as node `pnn` reports it (`ctdb leader`), if it answers with a number.
fn leader_seen_by(c: &LocalCluster, pnn: u32) -> Option<u32> {
    c.ctdb_stdout(pnn, &["leader"]).trim().parse().ok()
}

fn generation(c: &LocalCluster, pnn: u32) -> Option<String> {
    c.ctdb_stdout(pnn, &["status"])
        .lines()
        .find_map(|l| l.strip_prefix("Generation:").map(str::to_string))
}

/// Every running node in `nodes` names the same leader, which is one of `nodes`, and the
/// cluster is healthy as far as those nodes are concerned.
fn one_leader_among(c: &LocalCluster, nodes: &[u32]) -> Option<u32> {
    let seen: Vec<Option<u32>> = nodes.iter().map(|&n| leader_seen_by(c, n)).collect();
    let first = seen.first().copied().flatten()?;
    let agreed = seen.iter().all(|&s| s == Some(first)) && nodes.contains(&first);
    let normal = nodes.iter().all(|&n| {
        c.ctdb_stdout(n, &["status"])
            .contains("Recovery mode:NORMAL")
    });
    (agreed && normal).then_some(first)
}

fn started(name: &str, prefix: &str) -> (LocalCluster, u32) {
    let c = LocalCluster::setup(name, Flavour::Ours, 3, prefix, &[]);
    c.start();
    c.wait_all_ok(Duration::from_secs(60));
    let leader = leader_seen_by(&c, 0).expect("a leader");
    (c, leader)
}

fn others(leader: u32) -> Vec<u32> {
    (0..3).filter(|&n| n != leader).collect()
}

#[test]
fn stopping_or_banning_the_leader_or_taking_its_role_elects_exactly_one_other_leader() {
    let (c, mut leader) = started("leader-admin", "127.0.68");
    for (action, undo) in [
        (&["stop"][..], &["continue"][..]),
        (&["ban", "300"][..], &["unban"][..]),
        (&["setleaderrole", "off"][..], &["setleaderrole", "on"][..]),
    ] {
        let out = c.ctdb(leader, action);
        assert!(
            out.status.success(),
            "ctdb {action:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rest = others(leader);
        let mut new_leader = None;
        c.wait_for(
            &format!("one new leader after {action:?}"),
            Duration::from_secs(60),
            || {
                new_leader = one_leader_among(&c, &rest);
                new_leader.is_some()
            },
        );
        let new_leader = new_leader.unwrap();
        assert_ne!(new_leader, leader, "after {action:?}");
        let out = c.ctdb(leader, undo);
        assert!(out.status.success(), "ctdb {undo:?} failed");
        c.wait_all_ok(Duration::from_secs(90));
        leader = leader_seen_by(&c, 0).expect("a leader");
    }
}

#[test]
fn killing_or_hanging_the_leader_gives_one_new_leader_and_a_new_generation() {
    let (c, leader) = started("leader-kill", "127.0.69");
    let rest = others(leader);
    let before = generation(&c, rest[0]);
    c.signal(leader, Signal::SIGKILL);
    let mut new_leader = None;
    c.wait_for(
        "one new leader after SIGKILL",
        Duration::from_secs(30),
        || {
            new_leader = one_leader_among(&c, &rest);
            new_leader.is_some()
        },
    );
    assert_ne!(new_leader, Some(leader));
    assert_ne!(generation(&c, rest[0]), before, "a recovery ran");
    c.wait_for(
        "the killed process to be reaped",
        Duration::from_secs(10),
        || c.pid(leader).is_none(),
    );
    c.start_node(leader);
    c.wait_all_ok(Duration::from_secs(60));

    // SIGSTOP of the leader for twice the leader timeout (5 s).
    let leader = leader_seen_by(&c, 0).expect("a leader");
    let rest = others(leader);
    let before = generation(&c, rest[0]);
    c.signal(leader, Signal::SIGSTOP);
    std::thread::sleep(Duration::from_secs(10));
    c.signal(leader, Signal::SIGCONT);
    c.wait_all_ok(Duration::from_secs(90));
    let after: Vec<Option<String>> = (0..3).map(|n| generation(&c, n)).collect();
    assert!(
        after.iter().all(|g| g == &after[0]),
        "one generation: {after:?}"
    );
    assert_ne!(after[0], before, "a new generation after the hang");
}

#[test]
fn removing_the_cluster_lock_file_makes_the_leader_give_up_and_a_new_election_happen() {
    let (c, leader) = started("leader-lock", "127.0.70");
    let lock = c.dir().join("shared/cluster.lock");
    assert!(lock.exists(), "the cluster lock file");
    let before = generation(&c, leader);
    std::fs::remove_file(&lock).unwrap();
    // The lock helper rechecks the file every 5 s; the leader then releases and re-elects,
    // and whoever wins takes the new lock file and recovers.
    c.wait_for(
        "a new generation after the lock file vanished",
        Duration::from_secs(60),
        || generation(&c, 0).is_some_and(|g| Some(g) != before),
    );
    c.wait_all_ok(Duration::from_secs(60));
    assert!(lock.exists(), "the new leader holds a new lock file");
    assert!(one_leader_among(&c, &[0, 1, 2]).is_some());
}
