//! The cluster lock on real clusters: an unreachable lock directory leaves the cluster without
//! a leader and without recoveries until it returns (stock and ours behave alike), and in a
//! mixed cluster of ctdb-rs and stock nodes no two nodes ever hold the lock at once while the
//! leader keeps changing.

// A sampler thread watches /proc/locks while the test drives the cluster.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use crate::cluster::{Flavour, LocalCluster};
use nix::sys::signal::Signal;
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The leader node `pnn` names, `None` for UNKNOWN (`-t 2`: without a leader the CLI waits
/// for a broadcast until its timeout).
fn leader_seen_by(c: &LocalCluster, pnn: u32) -> Option<u32> {
    c.ctdb_stdout(pnn, &["-t", "2", "leader"])
        .trim()
        .parse()
        .ok()
}

/// `(recovering, num_recoveries)` from `ctdb -X statistics` on `pnn`: whether the node is in
/// recovery mode and how many recoveries it has completed.
fn recovery_stats(c: &LocalCluster, pnn: u32) -> Option<(bool, u64)> {
    let text = c.ctdb_stdout(pnn, &["-X", "statistics"]);
    let mut lines = text.lines();
    let names: Vec<&str> = lines.next()?.split('|').collect();
    let values: Vec<&str> = lines.next()?.split('|').collect();
    let field = |name: &str| {
        let at = names.iter().position(|&n| n == name)?;
        values.get(at)?.parse::<u64>().ok()
    };
    Some((field("recovering")? == 1, field("num_recoveries")?))
}

/// Pids holding a POSIX write lock that starts at byte 0 of any of `inodes` (the cluster lock
/// helpers' lock; their periodic test lock on byte 1 is not counted).
fn lock_holders(inodes: &BTreeSet<u64>) -> BTreeSet<i32> {
    let text = std::fs::read_to_string("/proc/locks").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // Blocked waiters are listed with "->" and hold nothing.
            if fields.get(1) == Some(&"->") || fields.get(1) != Some(&"POSIX") {
                return None;
            }
            let pid: i32 = fields.get(4)?.parse().ok()?;
            let inode: u64 = fields.get(5)?.rsplit(':').next()?.parse().ok()?;
            (fields.get(6) == Some(&"0") && inodes.contains(&inode)).then_some(pid)
        })
        .collect()
}

fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; the fields after its closing parenthesis do not.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// The node whose daemon `pid` descends from (helper → recovery daemon → ctdbd).
fn node_of(pid: i32, daemons: &BTreeMap<i32, u32>) -> Option<u32> {
    let mut at = pid;
    for _ in 0..6 {
        if let Some(&pnn) = daemons.get(&at) {
            return Some(pnn);
        }
        at = parent_of(at)?;
    }
    None
}

/// Every process whose parent chain leads to `pid`.
fn descendants(pid: i32) -> BTreeSet<i32> {
    let parents: Vec<(i32, i32)> = std::fs::read_dir("/proc")
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
                .filter_map(|p| Some((p, parent_of(p)?)))
                .collect()
        })
        .unwrap_or_default();
    let mut found = BTreeSet::from([pid]);
    loop {
        let before = found.len();
        for &(child, parent) in &parents {
            if found.contains(&parent) {
                found.insert(child);
            }
        }
        if found.len() == before {
            break;
        }
    }
    found.remove(&pid);
    found
}

/// SIGKILLs node `pnn` and waits until the daemon and every process it had started (event
/// daemon, recovery daemon, lock helper) are gone: stock's event daemon notices its parent's
/// death only at its next check, and a new ctdbd started before then cannot start its own.
pub(crate) fn kill_node(c: &LocalCluster, pnn: u32) {
    let pid = c.pid(pnn).expect("node is running");
    let children = descendants(pid);
    c.signal(pnn, Signal::SIGKILL);
    c.wait_for(
        &format!("node {pnn} and its children {children:?} to go"),
        Duration::from_secs(60),
        || {
            c.pid(pnn).is_none()
                && children.iter().all(|&child| {
                    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child), None).is_err()
                })
        },
    );
}

fn daemon_pids(c: &LocalCluster) -> BTreeMap<i32, u32> {
    (0..c.nodes)
        .filter_map(|pnn| c.pid(pnn).map(|pid| (pid, pnn)))
        .collect()
}

fn inode_of(path: &Path) -> u64 {
    std::fs::metadata(path)
        .expect("the cluster lock file")
        .ino()
}

/// One leader named by every node, every node in normal mode, and a helper holding the lock.
fn settled(c: &LocalCluster, inodes: &BTreeSet<u64>) -> Option<u32> {
    let leader = leader_seen_by(c, 0)?;
    let agreed = (1..c.nodes).all(|n| leader_seen_by(c, n) == Some(leader));
    let normal = (0..c.nodes).all(|n| recovery_stats(c, n).is_some_and(|(rec, _)| !rec));
    let held = lock_holders(inodes).len() == 1;
    (agreed && normal && held && c.ctdb(0, &["nodestatus", "all"]).status.success())
        .then_some(leader)
}

/// Stock 4.17 with the lock directory gone: the holder's helper finds the file missing at its
/// next check (every 5 s) and exits; the leader starts an election, which sets recovery mode
/// ACTIVE everywhere; from then on every node tries to take the lock at each leader-broadcast
/// timeout (5 s) and fails ("unknown error": the helper cannot open the file). Nobody leads,
/// nobody is banned (the ban on a failed take belongs to the election path without a cluster
/// lock), no recovery runs, and the generation stays. Once the directory is back the next
/// attempt takes the lock, that node leads and recovers, and the cluster is normal again.
fn unreachable_lock_directory(name: &str, flavour: Flavour, prefix: &str) {
    let c = LocalCluster::setup(name, flavour, 3, prefix, &[]);
    c.start();
    c.wait_all_ok(Duration::from_secs(90));
    let shared = c.dir().join("shared");
    let lock = shared.join("cluster.lock");
    let inodes = BTreeSet::from([inode_of(&lock)]);
    c.wait_for("a settled leader", Duration::from_secs(60), || {
        settled(&c, &inodes).is_some()
    });
    let completed: Vec<u64> = (0..3).map(|n| recovery_stats(&c, n).unwrap().1).collect();

    // A lost shared filesystem makes the path fail (ENOENT, ESTALE, EIO) while a process
    // that already has the file open keeps its descriptor and its lock. Renaming the
    // directory does exactly that: the holder keeps its open file, every open of the
    // configured path fails. (Unmounting would leave an empty mount point in which the lock
    // file could simply be created again, and chmod does not stop root.)
    let away = c.dir().join("shared.unreachable");
    std::fs::rename(&shared, &away).unwrap();

    c.wait_for(
        "no leader, no lock holder, recovery mode everywhere",
        Duration::from_secs(60),
        || {
            lock_holders(&inodes).is_empty()
                && (0..3).all(|n| {
                    recovery_stats(&c, n).is_some_and(|(rec, _)| rec)
                        && leader_seen_by(&c, n).is_none()
                })
        },
    );
    // Several election attempts (one per 5 s leader-broadcast timeout on every node) must
    // all fail: nobody leads, nobody is banned, no recovery completes.
    for _ in 0..4 {
        std::thread::sleep(Duration::from_secs(5));
        assert!(lock_holders(&inodes).is_empty(), "nobody holds the lock");
        for pnn in 0..3 {
            assert_eq!(leader_seen_by(&c, pnn), None, "node {pnn} names no leader");
            let (recovering, done) = recovery_stats(&c, pnn).unwrap();
            assert!(recovering, "node {pnn} stays in recovery mode");
            assert_eq!(done, completed[pnn as usize], "no recovery on node {pnn}");
            let flags = c.node_flags(pnn);
            assert!(
                flags.iter().all(|row| row.get(2) == Some(&false)),
                "node {pnn} sees no banned node: {flags:?}"
            );
        }
    }

    std::fs::rename(&away, &shared).unwrap();
    let mut leader = None;
    c.wait_for(
        "a leader holding the lock after the directory returned",
        Duration::from_secs(90),
        || {
            leader = settled(&c, &inodes);
            leader.is_some()
        },
    );
    let holder = *lock_holders(&inodes).iter().next().unwrap();
    assert_eq!(
        node_of(holder, &daemon_pids(&c)),
        leader,
        "the leader's helper holds the lock"
    );
    for pnn in 0..3 {
        let (_, done) = recovery_stats(&c, pnn).unwrap();
        assert!(
            done > completed[pnn as usize],
            "node {pnn} completed a recovery"
        );
    }
    c.wait_all_ok(Duration::from_secs(60));
}

#[test]
fn stock_unreachable_lock_directory_means_no_leader_and_no_recovery_until_it_returns() {
    unreachable_lock_directory("reclock-gone-stock", Flavour::Stock, "127.0.115");
}

#[test]
fn unreachable_lock_directory_means_no_leader_and_no_recovery_until_it_returns() {
    unreachable_lock_directory("reclock-gone-ours", Flavour::Ours, "127.0.116");
}

/// Samples /proc/locks in a thread and records every moment at which two processes held the
/// cluster lock (on any inode the lock file ever had).
struct Sampler {
    stop: Arc<AtomicBool>,
    inodes: Arc<Mutex<BTreeSet<u64>>>,
    thread: Option<std::thread::JoinHandle<(u64, Vec<String>)>>,
}

impl Sampler {
    fn start(lock: &Path, daemons: Arc<Mutex<BTreeMap<i32, u32>>>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let inodes = Arc::new(Mutex::new(BTreeSet::from([inode_of(lock)])));
        let lock = lock.to_path_buf();
        let (stop2, inodes2) = (stop.clone(), inodes.clone());
        let thread = std::thread::spawn(move || {
            let mut samples = 0u64;
            let mut violations = Vec::new();
            while !stop2.load(Ordering::Relaxed) {
                if let Ok(meta) = std::fs::metadata(&lock) {
                    inodes2.lock().unwrap().insert(meta.ino());
                }
                let known = inodes2.lock().unwrap().clone();
                let holders = lock_holders(&known);
                samples += 1;
                if holders.len() > 1 {
                    let daemons = daemons.lock().unwrap().clone();
                    let owners: Vec<(i32, Option<u32>)> =
                        holders.iter().map(|&p| (p, node_of(p, &daemons))).collect();
                    violations.push(format!("sample {samples}: holders {owners:?}"));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            (samples, violations)
        });
        Sampler {
            stop,
            inodes,
            thread: Some(thread),
        }
    }

    fn inodes(&self) -> BTreeSet<u64> {
        self.inodes.lock().unwrap().clone()
    }

    fn finish(mut self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The leader every running node in `nodes` agrees on, once all of them are in normal mode
/// and exactly one helper holds the lock — which must belong to that leader.
fn mixed_leader(
    c: &LocalCluster,
    nodes: &[u32],
    inodes: &BTreeSet<u64>,
    daemons: &BTreeMap<i32, u32>,
) -> Option<u32> {
    let leader = leader_seen_by(c, nodes[0])?;
    if !nodes.contains(&leader) || !nodes.iter().all(|&n| leader_seen_by(c, n) == Some(leader)) {
        return None;
    }
    if !nodes
        .iter()
        .all(|&n| recovery_stats(c, n).is_some_and(|(rec, _)| !rec))
    {
        return None;
    }
    let holders = lock_holders(inodes);
    let holder = *holders.iter().next()?;
    (holders.len() == 1 && node_of(holder, daemons) == Some(leader)).then_some(leader)
}

#[test]
fn two_ctdb_rs_nodes_and_a_stock_node_never_hold_the_lock_at_once() {
    // Nodes 0 and 1 run ctdb-rs with our helpers, node 2 stock ctdbd with stock's helpers;
    // all use the same lock file.
    let c = LocalCluster::setup("reclock-mixed", Flavour::Stock, 3, "127.0.117", &[]);
    c.run_ours_on(&[0, 1]);
    c.start();
    c.wait_all_ok(Duration::from_secs(90));
    let lock = c.dir().join("shared/cluster.lock");
    let daemons = Arc::new(Mutex::new(daemon_pids(&c)));
    let sampler = Sampler::start(&lock, daemons.clone());
    let all = [0, 1, 2];
    let settle = |nodes: &[u32], what: &str| -> u32 {
        let mut leader = None;
        c.wait_for(what, Duration::from_secs(90), || {
            *daemons.lock().unwrap() = daemon_pids(&c);
            let known = daemons.lock().unwrap().clone();
            leader = mixed_leader(&c, nodes, &sampler.inodes(), &known);
            leader.is_some()
        });
        leader.unwrap()
    };
    let mut leaders_seen = BTreeSet::new();
    let mut leader = settle(&all, "a first leader");
    leaders_seen.insert(leader);

    // Each round moves the leadership away from the current leader in a different way and
    // then brings that node back.
    for round in 0..6 {
        if round == 3 {
            // Hand the lock to the stock node (ours stop competing), so that the rounds
            // that follow take it away from stock's helper.
            for pnn in [0, 1] {
                assert!(c.ctdb(pnn, &["setleaderrole", "off"]).status.success());
            }
            leader = settle(&all, "the stock node to lead");
            assert_eq!(leader, 2, "only the stock node may lead");
            leaders_seen.insert(leader);
            for pnn in [0, 1] {
                assert!(c.ctdb(pnn, &["setleaderrole", "on"]).status.success());
            }
        }
        let rest: Vec<u32> = all.iter().copied().filter(|&n| n != leader).collect();
        match round % 3 {
            0 => {
                kill_node(&c, leader);
                let new = settle(&rest, &format!("round {round}: a leader after SIGKILL"));
                leaders_seen.insert(new);
                c.start_node(leader);
            }
            1 => {
                assert!(c.ctdb(leader, &["stop"]).status.success());
                let new = settle(&rest, &format!("round {round}: a leader after stop"));
                leaders_seen.insert(new);
                assert!(c.ctdb(leader, &["continue"]).status.success());
            }
            _ => {
                assert!(c.ctdb(leader, &["ban", "300"]).status.success());
                let new = settle(&rest, &format!("round {round}: a leader after ban"));
                leaders_seen.insert(new);
                assert!(c.ctdb(leader, &["unban"]).status.success());
            }
        }
        c.wait_all_ok(Duration::from_secs(90));
        leader = settle(&all, &format!("round {round}: settled again"));
        leaders_seen.insert(leader);
    }

    let (samples, violations) = sampler.finish();
    eprintln!("{samples} samples of /proc/locks, leaders seen: {leaders_seen:?}");
    assert!(samples > 100, "the sampler ran ({samples} samples)");
    assert!(
        violations.is_empty(),
        "two holders of the cluster lock at once: {violations:#?}"
    );
    assert!(
        leaders_seen.contains(&2) && leaders_seen.len() >= 2,
        "the lock went between stock and ctdb-rs nodes: {leaders_seen:?}"
    );
}
