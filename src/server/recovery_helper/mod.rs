//! `ctdb_recovery_helper`: the program the leader's recovery daemon runs to recover every
//! database of the cluster (mirrors `ctdb/server/ctdb_recovery_helper.c`).
//!
//! `ctdb_recovery_helper <write-fd> <ctdbd-socket> <generation>` connects to the local ctdbd
//! as an ordinary client, performs the recovery ([`recovery`]) and, on success, writes the
//! C `int` 0 to `<write-fd>` and exits 0. On failure it writes nothing and exits 1 (the
//! recovery daemon then reads EOF and retries later). It logs as `ctdb-recovery` through the
//! `CTDB_LOGGING`/`CTDB_DEBUGLEVEL` that ctdbd exports, and reopens its log file on SIGHUP.
//!
//! It is a drop-in for stock's helper: either daemon can run either helper.
//!
//! * [`transport`]: what the recovery needs from the daemon connection, as a trait;
//! * [`connection`]: that connection over the unix socket (several controls in flight);
//! * [`recovery`]: the recovery sequence;
//! * [`recdb`]: the in-memory collection a database is merged into, and its push buffers;
//! * [`lists`]: node and database bookkeeping.

pub mod connection;
pub mod lists;
pub mod recdb;
pub mod recovery;
pub mod transport;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

use crate::common::logging::{CtdbLogger, LogConfig};
use crate::common::path::Environment;
use crate::protocol::helper::{helper_result_to_bytes, RecoveryHelperArgs};
use connection::DaemonConnection;
use recovery::{Extensions, RecoveryError, RecoveryParams};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// The program name in log lines.
pub const LOG_NAME: &str = "ctdb-recovery";

static HANGUP: AtomicBool = AtomicBool::new(false);

extern "C" fn note_hangup(_signal: libc::c_int) {
    HANGUP.store(true, Ordering::Relaxed);
}

/// Reopens the log file when SIGHUP arrived (stock's `logging_setup_sighup_handler`). The
/// handler is installed without `SA_RESTART`, so a blocked read returns `EINTR` and the
/// connection calls this at once.
pub(crate) fn install_hangup_handler() -> bool {
    let action = nix::sys::signal::SigAction::new(
        nix::sys::signal::SigHandler::Handler(note_hangup),
        nix::sys::signal::SaFlags::empty(),
        nix::sys::signal::SigSet::empty(),
    );
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe { nix::sys::signal::sigaction(nix::sys::signal::Signal::SIGHUP, &action) }.is_ok()
}

/// Whether SIGHUP arrived since the last call (the takeover helper shares the handler).
pub(crate) fn hangup_arrived() -> bool {
    HANGUP.swap(false, Ordering::Relaxed)
}

/// The whole program; returns the exit status.
pub fn main(argv_os: &[OsString]) -> i32 {
    let argv: Vec<String> = argv_os
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let progname = argv.first().map_or("ctdb_recovery_helper", String::as_str);
    let args = match RecoveryHelperArgs::parse(&argv) {
        Ok(args) => args,
        Err(crate::protocol::helper::HelperArgError::ArgCount { .. }) => {
            eprintln!("\nUsage: {progname} <output-fd> <ctdb-socket-path> <generation>");
            return 1;
        }
        Err(_) => {
            eprintln!("recovery: unable to initialize generation");
            return 1;
        }
    };
    // The socket path exactly as given, even if it is not UTF-8.
    let socket = argv_os.get(2).map_or_else(PathBuf::new, PathBuf::from);

    let env = Environment::from_process_env();
    let Some(logger) = LogConfig::from_env(&env, LOG_NAME)
        .ok()
        .and_then(|config| CtdbLogger::install(&config, &env).ok())
    else {
        eprintln!("recovery: Unable to initialize logging");
        return 1;
    };
    if !install_hangup_handler() {
        log::error!("logging_setup_sighup_handler() failed");
        return 1;
    }
    let reopen = Box::new(move || {
        if hangup_arrived() {
            let _ = logger.reopen();
        }
    });

    let extensions = Extensions::from_env(|name| env.get(name).and_then(|v| v.to_str()));
    let ok = run(&socket, args.generation, extensions, Some(reopen));
    if !ok {
        return 1;
    }
    write_result(args.write_fd, 0);
    0
}

/// Connects, recovers and logs the outcome; true on success.
pub fn run(
    socket: &Path,
    generation: u32,
    extensions: Extensions,
    on_interrupt: Option<Box<dyn FnMut()>>,
) -> bool {
    let mut conn = match DaemonConnection::connect(socket, on_interrupt) {
        Ok(conn) => conn,
        Err(connection::ConnectError::Disconnected) => {
            log::info!("connection to daemon closed, exiting");
            return false;
        }
        Err(e) => {
            if let connection::ConnectError::Connect(_) = e {
                log::error!("{e}");
            }
            log::error!("ctdb_client_init() failed, ret={}", e.errno());
            return false;
        }
    };
    let params = RecoveryParams {
        generation,
        extensions,
    };
    match recovery::recover(&mut conn, &params) {
        Ok(()) => true,
        Err(RecoveryError::Disconnected) => {
            log::info!("connection to daemon closed, exiting");
            false
        }
        Err(RecoveryError::Failed(ret)) => {
            log::error!("database recovery failed, ret={ret}");
            false
        }
    }
}

/// Writes the result for the recovery daemon; like stock, a failed write is not reported.
fn write_result(fd: i32, result: i32) {
    let bytes = helper_result_to_bytes(result);
    // SAFETY: writing a 4-byte stack buffer to a descriptor number we were given; an invalid
    // descriptor just makes write(2) fail.
    let _ = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
}
