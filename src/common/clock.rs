//! Time as the state machines see it.
//!
//! Logic never reads the clock: the shell reads it once per loop turn and passes `now` in, and
//! simulations pass a simulated `now`. This module is the one place allowed to call the OS clock.

use std::time::Duration;

/// Monotonic time in microseconds since an arbitrary origin (the process start for the real
/// clock, zero for simulations).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant {
    pub micros: u64,
}

impl Instant {
    pub const ZERO: Instant = Instant { micros: 0 };

    pub const fn from_micros(micros: u64) -> Self {
        Instant { micros }
    }

    pub const fn from_millis(millis: u64) -> Self {
        Instant {
            micros: millis.saturating_mul(1000),
        }
    }

    pub const fn from_secs(secs: u64) -> Self {
        Instant {
            micros: secs.saturating_mul(1_000_000),
        }
    }

    pub fn saturating_add(self, d: Duration) -> Self {
        let add = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        Instant {
            micros: self.micros.saturating_add(add),
        }
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Instant) -> Duration {
        Duration::from_micros(self.micros.saturating_sub(earlier.micros))
    }
}

/// The real monotonic clock, measured from when the value was created.
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock {
    origin: std::time::Instant,
}

impl MonotonicClock {
    #[allow(clippy::disallowed_methods)] // The one sanctioned clock read.
    pub fn new() -> Self {
        MonotonicClock {
            origin: std::time::Instant::now(),
        }
    }

    #[allow(clippy::disallowed_methods)] // The one sanctioned clock read.
    pub fn now(&self) -> Instant {
        let elapsed = self.origin.elapsed();
        Instant::from_micros(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX))
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

/// Wall-clock time as a `(seconds, microseconds)` pair since the Unix epoch, for the protocol
/// fields that carry real timestamps (uptime, statistics, election priority time).
#[allow(clippy::disallowed_methods)] // The one sanctioned wall-clock read.
pub fn wall_clock_now() -> (i64, i64) {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (
        i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        i64::from(since.subsec_micros()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        let t = Instant::from_secs(2);
        assert_eq!(
            t.saturating_add(Duration::from_millis(500)),
            Instant::from_micros(2_500_000)
        );
        assert_eq!(Instant::ZERO.saturating_since(t), Duration::ZERO);
        assert_eq!(
            t.saturating_since(Instant::from_secs(1)),
            Duration::from_secs(1)
        );
        assert_eq!(
            Instant::from_micros(u64::MAX)
                .saturating_add(Duration::MAX)
                .micros,
            u64::MAX
        );
    }

    #[test]
    fn monotonic_clock_never_goes_back() {
        let clock = MonotonicClock::new();
        let a = clock.now();
        let b = clock.now();
        assert!(b >= a);
    }
}
