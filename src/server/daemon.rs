//! The main daemon's sans-IO core (mirrors `ctdb/server/ctdb_daemon.c`, `ctdb_control.c`,
//! `ctdb_keepalive.c`, `ctdb_monitor.c`).
//!
//! (Being written: the signatures below are the contract with the shell.)

use super::effect::{ClientId, Effect, EventOutcome, Pnn};
use crate::common::clock::Instant;
use std::collections::VecDeque;

/// Everything the core needs to know at start-up, gathered by the binary from the
/// configuration files.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub pnn: Pnn,
}

/// Synchronous questions the core asks its host. The real shell answers from the OS; tests
/// and simulations answer from tables.
pub trait Host {
    /// `kill(pid, 0) == 0`.
    fn process_exists(&self, pid: i32) -> bool;
}

#[derive(Debug)]
pub struct Daemon {
    config: DaemonConfig,
    effects: VecDeque<Effect>,
}

impl Daemon {
    pub fn new(config: DaemonConfig, _now: Instant) -> Self {
        Daemon {
            config,
            effects: VecDeque::new(),
        }
    }

    pub fn pnn(&self) -> Pnn {
        self.config.pnn
    }

    /// A client connected to the unix socket; `pid` from SO_PEERCRED.
    pub fn on_client_connected(&mut self, _now: Instant, _client: ClientId, _pid: i32) {}

    /// One complete frame from a client.
    pub fn on_client_frame(
        &mut self,
        _now: Instant,
        _client: ClientId,
        _frame: &[u8],
        _host: &dyn Host,
    ) {
    }

    /// A client's connection closed (EOF, error, or after `CloseClient`).
    pub fn on_client_closed(&mut self, _now: Instant, _client: ClientId) {}

    /// Both TCP directions to `pnn` are up.
    pub fn on_node_connected(&mut self, _now: Instant, _pnn: Pnn) {}

    /// A connection to `pnn` failed or closed (either direction).
    pub fn on_node_disconnected(&mut self, _now: Instant, _pnn: Pnn) {}

    /// One complete, already length/magic/version-checked frame from `pnn`'s incoming link.
    pub fn on_node_frame(&mut self, _now: Instant, _pnn: Pnn, _frame: &[u8], _host: &dyn Host) {}

    /// The event daemon finished (or could not run) a `RunEvent`.
    pub fn on_event_done(&mut self, _now: Instant, _outcome: EventOutcome) {}

    /// SIGTERM/SIGINT, or EOF on a piped stdin in test mode: start the shutdown sequence.
    pub fn on_shutdown_request(&mut self, _now: Instant) {}

    /// Runs whatever timers are due at `now`; a no-op when nothing is due.
    pub fn handle_timeout(&mut self, _now: Instant) {}

    /// The earliest instant at which `handle_timeout` has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    /// The next effect for the shell to execute.
    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.effects.pop_front()
    }
}
