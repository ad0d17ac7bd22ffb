//! `ctdb_takeover_helper`: the program the leader's recovery daemon runs to (re)assign the
//! cluster's public addresses (mirrors `ctdb/server/ctdb_takeover_helper.c`).
//!
//! `ctdb_takeover_helper <write-fd> <ctdbd-socket> [<pnn>,<pnn>,...]` connects to the local
//! ctdbd as an ordinary client, performs one takeover run ([`takeover`]) and writes the result
//! as a C `int` to `<write-fd>`: 0 on success, else the errno of the failure (which is also
//! the exit status). Unlike the recovery helper it writes a result on failure too; only when
//! the daemon closes the connection does it exit 1 without writing, as stock's client does. A run that
//! fails with bans enabled first sends a `BANNING` message naming the most-blamed node to the
//! local recovery daemon, which assigns the credits. The optional list names the nodes LCP2
//! should rebalance onto; `CTDB_DISABLE_IP_FAILOVER` in the environment reduces the run to
//! IPREALLOCATED. It logs as `ctdb-takeover` and reopens its log file on SIGHUP.
//!
//! It is a drop-in for stock's helper: either daemon can run either helper. The connection is
//! the recovery helper's ([`crate::server::recovery_helper::connection`]).

pub mod takeover;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

use crate::common::clock::MonotonicClock;
use crate::common::logging::{CtdbLogger, LogConfig};
use crate::common::path::Environment;
use crate::protocol::helper::{
    helper_result_to_bytes, TakeoverHelperArgs, ENV_DISABLE_IP_FAILOVER,
};
use crate::server::recovery_helper::connection::{ConnectError, DaemonConnection};
use crate::server::recovery_helper::{hangup_arrived, install_hangup_handler};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use takeover::{TakeoverError, TakeoverParams};

/// The program name in log lines.
pub const LOG_NAME: &str = "ctdb-takeover";

/// The whole program; returns the exit status.
pub fn main(argv_os: &[OsString]) -> i32 {
    let argv: Vec<String> = argv_os
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let progname = argv.first().map_or("ctdb_takeover_helper", String::as_str);
    let Ok(args) = TakeoverHelperArgs::parse(&argv) else {
        eprintln!("\nUsage: {progname} <output-fd> <ctdb-socket-path> [<force-rebalance-nodes>]");
        return 1;
    };
    // The socket path exactly as given, even if it is not UTF-8.
    let socket = argv_os.get(2).map_or_else(PathBuf::new, PathBuf::from);

    let env = Environment::from_process_env();
    let Some(logger) = LogConfig::from_env(&env, LOG_NAME)
        .ok()
        .and_then(|config| CtdbLogger::install(&config, &env).ok())
    else {
        eprintln!("ctdb-takeover: Unable to initialize logging");
        return finish(args.write_fd, libc::EINVAL);
    };
    if !install_hangup_handler() {
        log::error!("logging_setup_sighup_handler() failed");
        return finish(args.write_fd, libc::ENOMEM);
    }
    let reopen = Box::new(move || {
        if hangup_arrived() {
            let _ = logger.reopen();
        }
    });

    let params = TakeoverParams {
        force_rebalance: args.force_rebalance.clone(),
        // Only the variable's existence counts.
        failover_disabled: env.get(ENV_DISABLE_IP_FAILOVER).is_some(),
    };
    match run(&socket, &params, Some(reopen)) {
        Some(ret) => finish(args.write_fd, ret),
        // Stock's client library exits at once when the daemon goes away: nothing written.
        None => 1,
    }
}

/// Connects and performs the run; returns stock's result (0 or an errno), or `None` when the
/// daemon closed the connection.
pub fn run(
    socket: &Path,
    params: &TakeoverParams,
    on_interrupt: Option<Box<dyn FnMut()>>,
) -> Option<i32> {
    let mut conn = match DaemonConnection::connect(socket, on_interrupt) {
        Ok(conn) => conn,
        Err(ConnectError::Disconnected) => {
            log::info!("connection to daemon closed, exiting");
            return None;
        }
        Err(e) => {
            if let ConnectError::Connect(_) = e {
                log::error!("{e}");
            }
            log::error!("ctdb_client_init() failed, ret={}", e.errno());
            return Some(e.errno());
        }
    };
    let clock = MonotonicClock::new();
    let mut now = || clock.now();
    match takeover::takeover(&mut conn, &mut now, params) {
        Ok(()) => Some(0),
        Err(TakeoverError::Disconnected) => {
            log::info!("connection to daemon closed, exiting");
            None
        }
        Err(TakeoverError::Failed(ret)) => {
            log::error!("takeover run failed, ret={ret}");
            Some(ret)
        }
    }
}

/// Writes the result for the recovery daemon (a failed write is not reported, as in stock)
/// and returns the exit status, which like C's is the result's low byte.
fn finish(fd: i32, result: i32) -> i32 {
    let bytes = helper_result_to_bytes(result);
    // SAFETY: writing a 4-byte stack buffer to a descriptor number we were given; an invalid
    // descriptor just makes write(2) fail.
    let _ = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
    result & 0xff
}
