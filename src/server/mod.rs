//! The daemon (mirrors `ctdb/server/`). Filled in by the daemon-core issue.
