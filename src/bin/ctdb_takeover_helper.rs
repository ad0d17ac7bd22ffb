//! `ctdb_takeover_helper <write-fd> <ctdbd-socket> [<pnn>,...]`: assigns the cluster's public
//! addresses for the leader's recovery daemon (mirrors `ctdb/server/ctdb_takeover_helper.c`).
//! Everything lives in [`ctdb::server::takeover_helper`].

use std::process::ExitCode;

fn main() -> ExitCode {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let status = ctdb::server::takeover_helper::main(&argv);
    ExitCode::from(u8::try_from(status).unwrap_or(1))
}
