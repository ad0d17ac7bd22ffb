//! Operations that can be switched off for a while (mirrors `struct ctdb_op_state` and the
//! `ctdb_op_*` functions of `ctdb_recoverd.c`): takeover runs and recoveries.

use crate::common::clock::Instant;
use std::time::Duration;

/// `-EAGAIN` on Linux: the answer to "disable" while the operation is running.
pub const EAGAIN_NEG: i32 = -11;

#[derive(Debug, Clone)]
pub(crate) struct OpState {
    name: &'static str,
    /// When the current "disabled" period ends; `None` while enabled.
    disabled_until: Option<Instant>,
    in_progress: bool,
}

impl OpState {
    pub(crate) fn new(name: &'static str) -> Self {
        OpState {
            name,
            disabled_until: None,
            in_progress: false,
        }
    }

    pub(crate) fn is_disabled(&self) -> bool {
        self.disabled_until.is_some()
    }

    pub(crate) fn is_in_progress(&self) -> bool {
        self.in_progress
    }

    /// Marks the operation as running unless it is disabled.
    pub(crate) fn begin(&mut self) -> bool {
        if self.is_disabled() {
            log::info!("Unable to begin - {} are disabled", self.name);
            return false;
        }
        self.in_progress = true;
        true
    }

    pub(crate) fn end(&mut self) {
        self.in_progress = false;
    }

    pub(crate) fn enable(&mut self) {
        self.disabled_until = None;
    }

    /// Disables for `timeout_s` seconds (0 re-enables). A running operation cannot be
    /// disabled: the caller gets `-EAGAIN` to pass on to whoever asked.
    pub(crate) fn disable(&mut self, now: Instant, timeout_s: u32) -> Result<(), i32> {
        if timeout_s == 0 {
            log::info!("Reenabling {}", self.name);
            self.enable();
            return Ok(());
        }
        if self.in_progress {
            log::error!("Unable to disable {} - in progress", self.name);
            return Err(EAGAIN_NEG);
        }
        log::info!("Disabling {} for {} seconds", self.name, timeout_s);
        self.disabled_until = Some(now.saturating_add(Duration::from_secs(u64::from(timeout_s))));
        Ok(())
    }

    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.disabled_until
    }

    /// Re-enables when the disabled period is over.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if self.disabled_until.is_some_and(|until| now >= until) {
            log::info!("Reenabling {} after timeout", self.name);
            self.disabled_until = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disable_enable_and_timeout() {
        let mut op = OpState::new("recoveries");
        let t0 = Instant::from_secs(100);
        assert!(op.begin());
        assert_eq!(op.disable(t0, 10), Err(EAGAIN_NEG));
        op.end();
        assert_eq!(op.disable(t0, 10), Ok(()));
        assert!(op.is_disabled());
        assert!(!op.begin());
        op.handle_timeout(Instant::from_secs(109));
        assert!(op.is_disabled());
        op.handle_timeout(Instant::from_secs(110));
        assert!(!op.is_disabled());
        assert_eq!(op.disable(t0, 10), Ok(()));
        assert_eq!(op.disable(t0, 0), Ok(()));
        assert!(!op.is_disabled());
        // Re-enabling works even while running.
        assert!(op.begin());
        assert_eq!(op.disable(t0, 0), Ok(()));
    }
}
