//! `ctdb_recovery_helper <write-fd> <ctdbd-socket> <generation>`: recovers every database of
//! the cluster for the leader's recovery daemon (mirrors `ctdb/server/ctdb_recovery_helper.c`).
//! Everything lives in [`ctdb::server::recovery_helper`].

use std::process::ExitCode;

fn main() -> ExitCode {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // Short-lived: freed pull and push buffers are reused and go back to the system at exit.
    ctdb::common::heap::reuse_freed_buffers();
    let status = ctdb::server::recovery_helper::main(&argv);
    ExitCode::from(u8::try_from(status).unwrap_or(1))
}
