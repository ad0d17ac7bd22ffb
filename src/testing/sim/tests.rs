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

#[test]
#[ignore]
fn debug_print_trace() {
    let seed = std::env::var("CTDB_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let mut config = SimConfig::new(seed, 3);
    config.cluster_lock = std::env::var("SIM_LOCK").is_ok();
    let mut sim = Sim::new(config);
    let r = sim.run_until_healthy(Duration::from_secs(60));
    println!(
        "{r:?}\n{}\n{}\n{:?}",
        sim.trace(),
        sim.describe(),
        sim.stats()
    );
}

/// Seeds for the randomised runs: `CTDB_TEST_SEED` alone, else `CTDB_SIM_SEEDS` of them (or
/// `default`), starting at `CTDB_SIM_FIRST_SEED` (1).
fn sim_seeds(default: u64) -> Vec<u64> {
    if let Some(seed) = std::env::var("CTDB_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return vec![seed];
    }
    let count = std::env::var("CTDB_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    let first = std::env::var("CTDB_SIM_FIRST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    (first..first + count).collect()
}

#[test]
fn random_faults_heal_to_one_leader_and_one_generation() {
    let options = RandomRun::default();
    let mut failures = Vec::new();
    for seed in sim_seeds(200) {
        if let Err(e) = run_random(seed, &options) {
            eprintln!("{e}\n\nreplay with CTDB_TEST_SEED={seed}\n");
            failures.push(seed);
            if failures.len() >= 3 {
                break;
            }
        }
    }
    assert!(failures.is_empty(), "failing seeds: {failures:?}");
}
