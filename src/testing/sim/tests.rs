use super::*;

#[test]
fn cold_start_elects_one_leader_and_recovers() {
    for seed in crate::testing::seeds(4) {
        for lock in [false, true] {
            let mut config = SimConfig::new(seed, 3);
            config.cluster_lock = lock;
            let mut sim = Sim::new(config);
            let took = sim
                .run_until_healthy(Duration::from_secs(60))
                .unwrap_or_else(|e| panic!("seed {seed} lock {lock}: {e}\n{}", sim.trace()));
            assert!(took < Duration::from_secs(30), "seed {seed}: took {took:?}");
        }
    }
}

/// The randomised runs are spread over [`RANDOM_RUN_SHARDS`] tests so that they run in
/// parallel. `CTDB_TEST_SEED=<seed>` replays one seed (in shard 0); otherwise `CTDB_SIM_SEEDS`
/// seeds (default 200) starting at `CTDB_SIM_FIRST_SEED` (default 1) are dealt round-robin.
/// `SIM_LOG=1` adds every recovery daemon's log lines to the trace a failure prints.
const RANDOM_RUN_SHARDS: u64 = 4;

fn shard_seeds(shard: u64) -> Vec<u64> {
    let env = |name: &str| std::env::var(name).ok().and_then(|s| s.parse::<u64>().ok());
    if let Some(seed) = env("CTDB_TEST_SEED") {
        return if shard == 0 { vec![seed] } else { Vec::new() };
    }
    let count = env("CTDB_SIM_SEEDS").unwrap_or(200);
    let first = env("CTDB_SIM_FIRST_SEED").unwrap_or(1);
    (first..first + count)
        .filter(|s| s % RANDOM_RUN_SHARDS == shard)
        .collect()
}

fn random_runs(shard: u64) {
    let options = RandomRun::default();
    let mut failures = Vec::new();
    for seed in shard_seeds(shard) {
        if let Err(e) = run_random(seed, &options) {
            eprintln!("{e}\n\nreplay with CTDB_TEST_SEED={seed} (SIM_LOG=1 for logs)\n");
            failures.push(seed);
            if failures.len() >= 3 {
                break;
            }
        }
    }
    assert!(failures.is_empty(), "failing seeds: {failures:?}");
}

#[test]
fn random_faults_heal_to_one_leader_and_one_generation_0() {
    random_runs(0);
}

#[test]
fn random_faults_heal_to_one_leader_and_one_generation_1() {
    random_runs(1);
}

#[test]
fn random_faults_heal_to_one_leader_and_one_generation_2() {
    random_runs(2);
}

#[test]
fn random_faults_heal_to_one_leader_and_one_generation_3() {
    random_runs(3);
}

fn cluster(seed: u64, nodes: usize, lock: bool, extensions: Extensions) -> Sim {
    let mut config = SimConfig::new(seed, nodes);
    config.cluster_lock = lock;
    config.extensions = vec![extensions; nodes];
    let mut sim = Sim::new(config);
    if let Err(e) = sim.run_until_healthy(Duration::from_secs(60)) {
        panic!("seed {seed} lock {lock}: start-up: {e}\n{}", sim.trace());
    }
    sim
}

fn generation(sim: &Sim) -> u32 {
    let leader = sim.agreed_leader().expect("a leader");
    sim.daemon(leader).expect("leader up").vnnmap.generation
}

/// Every running node agrees on one leader, and only that node believes it leads.
fn assert_one_leader(sim: &Sim, context: &str) -> Pnn {
    let leader = sim
        .agreed_leader()
        .unwrap_or_else(|| panic!("{context}: no agreed leader: {}", sim.describe()));
    for p in sim.running_nodes() {
        let r = sim.recoverd(p).expect("running recovery daemon");
        assert_eq!(r.is_leader(), p == leader, "{context}: {}", sim.describe());
    }
    leader
}

/// Does `act` to the leader of a healthy cluster; the running nodes must become healthy under
/// exactly one new leader.
fn new_leader_after(name: &str, act: impl Fn(&mut Sim, Pnn)) {
    for seed in crate::testing::seeds(6) {
        for lock in [false, true] {
            let nodes = 3 + (seed % 2) as usize;
            let mut sim = cluster(seed, nodes, lock, Extensions::default());
            let old = assert_one_leader(&sim, name);
            let before = generation(&sim);
            act(&mut sim, old);
            let context = format!("{name}: seed {seed} lock {lock} old leader {old}");
            let done = |sim: &Sim| -> Result<(), String> {
                sim.healthy_running()?;
                if sim.agreed_leader() == Some(old) || generation(sim) == before {
                    return Err("still the old leader and generation".into());
                }
                Ok(())
            };
            if let Err(e) = sim.run_until_condition(Duration::from_secs(60), done) {
                panic!("{context}: {e}\n{}", sim.trace());
            }
            let new = assert_one_leader(&sim, &context);
            assert_ne!(new, old, "{context}");
            assert_ne!(generation(&sim), before, "{context}: no recovery");
        }
    }
}

#[test]
fn stopping_the_leader_elects_exactly_one_new_leader() {
    new_leader_after("stop", |sim, leader| sim.stop_node(leader));
}

#[test]
fn banning_the_leader_elects_exactly_one_new_leader() {
    new_leader_after("ban", |sim, leader| sim.ban(leader, 300));
}

#[test]
fn disabling_the_leader_role_elects_exactly_one_new_leader() {
    new_leader_after("leader role off", |sim, leader| {
        sim.set_leader_role(leader, false);
    });
}

#[test]
fn killing_the_leader_elects_exactly_one_new_leader() {
    new_leader_after("kill", |sim, leader| sim.crash(leader));
}

#[test]
fn a_hung_leader_comes_back_to_a_new_generation_and_a_healthy_cluster() {
    for seed in crate::testing::seeds(6) {
        for lock in [false, true] {
            for whole_node in [false, true] {
                let mut sim = cluster(seed, 3, lock, Extensions::default());
                let leader = assert_one_leader(&sim, "hang");
                let before = generation(&sim);
                let timeout = u64::from(sim.config().leader_timeout_s);
                sim.hang(leader, whole_node);
                sim.run_for(Duration::from_secs(2 * timeout)).expect("hang");
                sim.resume(leader);
                let context = format!("hang: seed {seed} lock {lock} whole node {whole_node}");
                if let Err(e) = sim.run_until_healthy(Duration::from_secs(60)) {
                    panic!("{context}: {e}\n{}", sim.trace());
                }
                assert_one_leader(&sim, &context);
                assert_ne!(generation(&sim), before, "{context}");
            }
        }
    }
}

/// Isolates the leader (its TCP links drop at once) and measures how long the first follower
/// takes to start an election.
fn election_delay_after_leader_links_drop(
    seed: u64,
    lock: bool,
    extensions: Extensions,
) -> Duration {
    let mut sim = cluster(seed, 3, lock, extensions);
    let leader = assert_one_leader(&sim, "link drop");
    let followers: Vec<Pnn> = (0..3).filter(|&p| p != leader).collect();
    let elections = |sim: &Sim| -> u64 {
        followers
            .iter()
            .map(|&p| sim.recoverd(p).map_or(0, |r| r.stats().elections_started))
            .sum()
    };
    let before = elections(&sim);
    // Somewhere in the leader's broadcast second.
    let offset = Duration::from_millis(seed * 137 % 1000);
    sim.run_for(offset).expect("run");
    let start = sim.now();
    sim.isolate(leader, true);
    while elections(&sim) == before {
        assert!(
            sim.now().saturating_since(start) < Duration::from_secs(20),
            "no election at all"
        );
        sim.run_for(Duration::from_millis(10)).expect("run");
    }
    let delay = sim.now().saturating_since(start);
    sim.heal_all();
    if let Err(e) = sim.run_until_healthy(Duration::from_secs(60)) {
        panic!("link drop seed {seed} lock {lock}: {e}\n{}", sim.trace());
    }
    delay
}

#[test]
fn leader_link_drop_starts_the_election_at_once() {
    for seed in crate::testing::seeds(6) {
        for lock in [false, true] {
            let ours = election_delay_after_leader_links_drop(seed, lock, Extensions::default());
            let stock = election_delay_after_leader_links_drop(seed, lock, Extensions::STOCK);
            assert!(
                ours < Duration::from_millis(1500),
                "seed {seed} lock {lock}: election after {ours:?}"
            );
            assert!(
                stock >= Duration::from_secs(3),
                "seed {seed} lock {lock}: stock election after {stock:?}"
            );
        }
    }
}

/// Pure stock behaviour (every extension off) must heal the same random fault runs; stock can
/// in principle end in the lock-holder stalemate described at
/// [`Extensions::lock_holder_leads`], which none of the default seeds hits.
/// `CTDB_SIM_STOCK_SEEDS=N` runs N seeds instead of 20.
#[test]
fn random_faults_with_stock_behaviour_only() {
    let stock = RandomRun {
        extensions: Some(Extensions::STOCK),
        ..RandomRun::default()
    };
    let count: u64 = std::env::var("CTDB_SIM_STOCK_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let failures: Vec<String> = (1..=count)
        .filter_map(|seed| {
            run_random(seed, &stock)
                .err()
                .map(|e| format!("seed {seed}: {e}"))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
