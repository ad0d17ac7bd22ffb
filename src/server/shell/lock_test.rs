//! The cluster lock tests SET_RECMODE(NORMAL) asks for: a mutex helper started with a 5 s
//! timeout, expected to report contention because the leader holds the lock.
//!
//! The test must run in another process: fcntl locks belong to a process, so a daemon testing
//! a lock its own process held would always succeed.

use crate::common::clock::Instant;
use crate::server::cluster_mutex::{
    ClusterMutex, ClusterMutexEvent, ReleasingHelper, DEFAULT_RELEASE_GRACE, TEST_TIMEOUT,
};
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use std::collections::BTreeMap;

pub const TOKEN_BASE: usize = 3 << 32;
/// More concurrent tests than this means recoveries are piling up; further ones fail at once.
pub const MAX_TESTS: usize = 64;

/// A finished test: the core's token, the helper's answer byte and the latency in seconds.
pub type LockTestResult = (u64, u8, f64);

#[derive(Debug)]
struct LockTest {
    core_token: u64,
    mutex: ClusterMutex,
}

#[derive(Debug, Default)]
pub struct LockTests {
    next_id: u64,
    running: BTreeMap<u64, LockTest>,
    releasing: Vec<ReleasingHelper>,
}

pub fn test_of(token: Token) -> Option<u64> {
    let id = token.0.checked_sub(TOKEN_BASE)?;
    (id < 1 << 32).then_some(id as u64)
}

impl LockTests {
    /// Starts a test; on failure the caller reports `'3'` (error) to the core.
    pub fn start(
        &mut self,
        registry: &Registry,
        core_token: u64,
        lock: &str,
        helper: &str,
        now: Instant,
    ) -> Result<(), String> {
        if self.running.len() >= MAX_TESTS {
            return Err("too many cluster lock tests running".into());
        }
        let mutex = ClusterMutex::start(lock, helper, Some(TEST_TIMEOUT), now)
            .map_err(|e| e.to_string())?;
        let id = self.next_id;
        self.next_id = (self.next_id + 1) % (1 << 32);
        if let Some(fd) = mutex.read_fd() {
            registry
                .register(&mut SourceFd(&fd), token_of(id), Interest::READABLE)
                .map_err(|e| e.to_string())?;
        }
        self.running.insert(id, LockTest { core_token, mutex });
        Ok(())
    }

    /// The helper's pipe is readable.
    pub fn on_ready(
        &mut self,
        registry: &Registry,
        id: u64,
        now: Instant,
    ) -> Option<LockTestResult> {
        let test = self.running.get_mut(&id)?;
        let events = test.mutex.on_readable(now);
        let answer = events.into_iter().find_map(|e| match e {
            ClusterMutexEvent::Result { result, latency } => Some((result, latency)),
            ClusterMutexEvent::Lost => None,
        });
        let (result, latency) = answer?;
        Some(self.finish(registry, id, result.to_byte(), latency.as_secs_f64(), now))
    }

    /// Tests whose helper did not answer in time report `'2'`; helpers that ignored SIGTERM
    /// get SIGKILL.
    pub fn check_timeouts(&mut self, registry: &Registry, now: Instant) -> Vec<LockTestResult> {
        let expired: Vec<(u64, u8, f64)> = self
            .running
            .iter_mut()
            .filter_map(|(&id, t)| match t.mutex.check_timeout(now) {
                Some(ClusterMutexEvent::Result { result, latency }) => {
                    Some((id, result.to_byte(), latency.as_secs_f64()))
                }
                _ => None,
            })
            .collect();
        let done = expired
            .into_iter()
            .map(|(id, byte, latency)| self.finish(registry, id, byte, latency, now))
            .collect();
        for helper in &mut self.releasing {
            helper.check_timeout(now);
        }
        done
    }

    fn finish(
        &mut self,
        registry: &Registry,
        id: u64,
        byte: u8,
        latency: f64,
        now: Instant,
    ) -> LockTestResult {
        let test = self.running.remove(&id).expect("finishing a running test");
        if let Some(fd) = test.mutex.read_fd() {
            let _ = registry.deregister(&mut SourceFd(&fd));
        }
        // Whatever it answered, the test is over: a helper that took the lock must let go.
        self.releasing
            .push(test.mutex.release(now, DEFAULT_RELEASE_GRACE));
        (test.core_token, byte, latency)
    }

    /// A child was reaped; forget it if it was one of ours.
    pub fn reaped(&mut self, pid: i32) -> bool {
        let before = self.releasing.len();
        self.releasing.retain(|h| h.pid() != pid);
        before != self.releasing.len()
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.running
            .values()
            .filter_map(|t| t.mutex.deadline())
            .chain(self.releasing.iter().filter_map(ReleasingHelper::deadline))
            .min()
    }
}

fn token_of(id: u64) -> Token {
    Token(TOKEN_BASE + usize::try_from(id).unwrap_or(0))
}
