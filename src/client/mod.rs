//! Client library over the unix socket (mirrors `ctdb/client/`).
