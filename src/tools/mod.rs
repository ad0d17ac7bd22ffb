//! Command-line tools (mirrors `ctdb/tools/`).
