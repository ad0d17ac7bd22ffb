//! The daemon (mirrors `ctdb/server/`): a sans-IO core driven by a thin mio shell.

pub mod daemon;
pub mod effect;
pub mod recoverd;
pub mod srvid;
