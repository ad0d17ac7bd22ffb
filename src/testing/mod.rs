//! Test support shared by unit tests, integration tests, fuzz targets and simulations.
//!
//! Randomness in tests is always seeded: a failing case prints its seed and replays exactly
//! with `CTDB_TEST_SEED=<seed>`.

pub mod prng;
pub mod sim;

pub use prng::Prng;

/// Seeds to iterate over in a round-trip test: `CTDB_TEST_SEED` alone when set, else
/// `1..=count`.
pub fn seeds(count: u64) -> Vec<u64> {
    match std::env::var("CTDB_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        Some(seed) => vec![seed],
        None => (1..=count).collect(),
    }
}
