//! ctdb-rs: a wire-compatible re-implementation of Samba's CTDB 4.17 cluster daemon.
//!
//! The crate mirrors Samba's `ctdb/` tree: [`protocol`] (pure wire format), [`common`]
//! (configuration and shared infrastructure), [`server`] (the daemon), [`client`] (the unix-socket
//! client library) and [`tools`]. See `ARCHITECTURE.md` for the map and its invariants.

pub mod client;
pub mod common;
pub mod event;
pub mod protocol;
pub mod server;
pub mod testing;
pub mod tools;
