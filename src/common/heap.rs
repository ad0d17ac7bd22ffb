//! How the daemons use glibc's heap for the large buffers of a recovery.
//!
//! With glibc's defaults every buffer of 128 KiB or more (DB_PULL and push messages, large
//! frames, undo chunks; about 1 MiB each) is a fresh `mmap`: each of its pages faults in on
//! first touch and is zeroed by the kernel, and `munmap` gives it back when the buffer is
//! sent. A recovery of 100k records moves hundreds of them through each daemon. Served from
//! the heap instead, a freed buffer's pages are reused by the next one.
//!
//! The price is that freed memory stays in the process; [`HeapTrim`] hands it back to the
//! system (`malloc_trim`) at most [`HeapTrim::INTERVAL`] after it was freed, so an idle
//! daemon's footprint goes back down on its own.

use super::clock::Instant;
use std::time::Duration;

/// Buffers up to this size come from the heap (glibc's own upper bound for its adaptive
/// threshold, so nothing changes for larger ones).
const MMAP_THRESHOLD_BYTES: libc::c_int = 32 << 20;

/// Serve large buffers from the heap and let [`HeapTrim`] decide when freed memory goes back.
/// Call once, before the loop starts.
pub fn reuse_freed_buffers() {
    // SAFETY: mallopt only changes allocator parameters; no pointers are involved.
    let ok = unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX) == 1
    };
    if !ok {
        log::warn!("Failed to set the heap's mmap and trim thresholds; keeping glibc's");
    }
}

/// Hands freed heap memory back to the system every [`Self::INTERVAL`].
#[derive(Debug)]
pub struct HeapTrim {
    next: Instant,
}

impl HeapTrim {
    /// Longest time freed memory stays in the process.
    pub const INTERVAL: Duration = Duration::from_secs(30);

    pub fn new(now: Instant) -> Self {
        HeapTrim {
            next: now.saturating_add(Self::INTERVAL),
        }
    }

    /// Whether a trim is due at `now`; if so, the next one is one interval later.
    pub fn due(&mut self, now: Instant) -> bool {
        if now < self.next {
            return false;
        }
        self.next = now.saturating_add(Self::INTERVAL);
        true
    }

    /// `malloc_trim(0)`: free pages go back to the system.
    pub fn trim() {
        // SAFETY: malloc_trim only releases free memory the allocator owns.
        unsafe { libc::malloc_trim(0) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trim_is_due_once_per_interval() {
        let start = Instant::from_secs(100);
        let mut trim = HeapTrim::new(start);
        assert!(!trim.due(start));
        let first = start.saturating_add(HeapTrim::INTERVAL);
        assert!(trim.due(first));
        assert!(!trim.due(first));
        assert!(!trim.due(first.saturating_add(Duration::from_secs(29))));
        assert!(trim.due(first.saturating_add(HeapTrim::INTERVAL)));
    }
}
