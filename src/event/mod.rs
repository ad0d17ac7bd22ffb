//! ctdb-eventd: runs event scripts for ctdbd (mirrors `ctdb/event/` and the parts of
//! `ctdb/common/` only it uses: `run_event.c`, `run_proc.c`, `event_script.c`).
//!
//! [`context`] is the sans-IO state machine (queues, cancellation, timeouts, stored results),
//! [`script`] the script directory it reads through a trait, [`config`] the paths and the few
//! `ctdb.conf` keys eventd reads, and [`shell`] the single-threaded mio loop that owns every
//! socket, pipe and child process.

pub mod config;
pub mod context;
pub mod script;
pub mod shell;
