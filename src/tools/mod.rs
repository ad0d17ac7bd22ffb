//! Command-line tools (mirrors `ctdb/tools/`).

pub mod bench;
