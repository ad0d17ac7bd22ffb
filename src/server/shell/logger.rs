//! The daemon's log backend (mirrors the file and syslog targets of `common/logging.c`).
//!
//! Interim: a private stand-in until `common::logging` lands from the `events` branch.
//!
//! Levels follow Samba's debug levels: ERROR 0 → `error!`, WARNING 1–2 → `warn!`, NOTICE 3–4 →
//! `info!`, INFO 5–9 → `debug!`, DEBUG 10 → `trace!`.
//!
//! A file target is a fixed descriptor number; SIGHUP reopens the file and `dup2`s it onto that
//! number, so no lock is needed around the writer in this single-threaded daemon.

use log::{Level, LevelFilter, Log, Metadata, Record};
use std::ffi::CString;
use std::os::fd::IntoRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::OnceLock;

/// Where log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    Stderr,
    File(PathBuf),
    Syslog,
}

impl LogTarget {
    /// Parses a `[logging] location` value (`file:<path>`, `file:` for stderr, `syslog[:...]`).
    /// The syslog variants that talk to a socket directly are all mapped to the libc syslog.
    pub fn parse(location: &str) -> Option<LogTarget> {
        if let Some(path) = location.strip_prefix("file:") {
            if path.is_empty() || path == "-" {
                return Some(LogTarget::Stderr);
            }
            return Some(LogTarget::File(PathBuf::from(path)));
        }
        if location == "file" {
            return Some(LogTarget::Stderr);
        }
        if location == "syslog" || location.starts_with("syslog:") {
            return Some(LogTarget::Syslog);
        }
        None
    }
}

/// Samba debug level names accepted by `[logging] log level`.
pub fn parse_level(name: &str) -> Option<i32> {
    let level = match name.trim().to_ascii_uppercase().as_str() {
        "ERROR" | "ERR" => 0,
        "WARNING" => 1,
        "NOTICE" => 3,
        "INFO" => 5,
        "DEBUG" => 10,
        other => other.parse::<i32>().ok()?,
    };
    Some(level)
}

/// The canonical name of a Samba debug level, as exported in `CTDB_DEBUGLEVEL`.
pub fn level_name(level: i32) -> &'static str {
    match level {
        i32::MIN..=0 => "ERROR",
        1..=2 => "WARNING",
        3..=4 => "NOTICE",
        5..=9 => "INFO",
        _ => "DEBUG",
    }
}

/// The `log` filter for a Samba debug level.
pub fn level_filter(level: i32) -> LevelFilter {
    match level {
        i32::MIN..=0 => LevelFilter::Error,
        1..=2 => LevelFilter::Warn,
        3..=4 => LevelFilter::Info,
        5..=9 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    }
}

struct DaemonLogger {
    app: String,
    hostname: Option<String>,
    target: LogTarget,
    /// The descriptor lines are written to (stderr or the log file).
    fd: AtomicI32,
}

static LOGGER: OnceLock<DaemonLogger> = OnceLock::new();

/// Installs the logger. Fails if the log file cannot be opened or a logger is already set.
pub fn init(app: &str, target: LogTarget, level: i32) -> Result<(), String> {
    let fd = match &target {
        LogTarget::File(path) => open_log(path)?,
        LogTarget::Stderr | LogTarget::Syslog => 2,
    };
    if target == LogTarget::Syslog {
        // The identity string must outlive every later syslog call.
        let ident: &'static std::ffi::CStr = Box::leak(
            CString::new(app)
                .map_err(|_| "bad log identity".to_string())?
                .into_boxed_c_str(),
        );
        // SAFETY: `ident` is a NUL-terminated string leaked for the life of the process.
        unsafe { libc::openlog(ident.as_ptr(), libc::LOG_PID, libc::LOG_DAEMON) };
    }
    // stock shows basename($CTDB_BASE) as the host name of local test daemons.
    let hostname = if std::env::var_os("CTDB_TEST_MODE").is_some() {
        std::env::var("CTDB_BASE").ok().map(|base| {
            let name = Path::new(&base)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if name.is_empty() {
                "unknown".to_string()
            } else {
                name
            }
        })
    } else {
        nix::unistd::gethostname()
            .ok()
            .map(|h| h.to_string_lossy().into_owned())
    };
    let logger = DaemonLogger {
        app: app.to_string(),
        hostname,
        target,
        fd: AtomicI32::new(fd),
    };
    if LOGGER.set(logger).is_err() {
        return Err("logger already initialised".to_string());
    }
    let logger = LOGGER.get().ok_or("logger missing")?;
    log::set_logger(logger).map_err(|e| e.to_string())?;
    set_level(level);
    Ok(())
}

/// SET_DEBUG: changes the level at run time.
pub fn set_level(level: i32) {
    log::set_max_level(level_filter(level));
}

/// SIGHUP: reopens a log file (after rotation). Other targets need nothing.
pub fn reopen() {
    let Some(logger) = LOGGER.get() else {
        return;
    };
    let LogTarget::File(path) = &logger.target else {
        return;
    };
    match open_log(path) {
        Ok(new_fd) => {
            let old = logger.fd.load(Ordering::Relaxed);
            // SAFETY: both descriptors are open; dup2 atomically replaces `old`'s file.
            unsafe {
                libc::dup2(new_fd, old);
                libc::close(new_fd);
            }
        }
        Err(e) => log::error!("Failed to reopen log file: {e}"),
    }
}

fn open_log(path: &Path) -> Result<i32, String> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o644)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map(|f| f.into_raw_fd())
        .map_err(|e| format!("cannot open log file '{}': {e}", path.display()))
}

/// `2024-05-01T12:34:56.123456+02:00`, local time, as Samba's hires syslog-style timestamps.
fn timestamp() -> String {
    let (secs, usecs) = crate::common::clock::wall_clock_now();
    let t: libc::time_t = secs;
    // SAFETY: an all-zero `tm` is a valid value to be overwritten by localtime_r.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the duration of the call.
    if unsafe { libc::localtime_r(&t, &mut tm) }.is_null() {
        return format!("{secs}.{usecs:06}");
    }
    let offset_min = tm.tm_gmtoff / 60;
    let sign = if offset_min < 0 { '-' } else { '+' };
    let offset_min = offset_min.abs();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}{}{:02}:{:02}",
        i64::from(tm.tm_year) + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        usecs,
        sign,
        offset_min / 60,
        offset_min % 60
    )
}

impl Log for DaemonLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        // mio traces every registration; that is noise at any CTDB debug level.
        metadata.level() <= log::max_level() && !metadata.target().starts_with("mio")
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let message = record.args().to_string();
        if self.target == LogTarget::Syslog {
            let priority = match record.level() {
                Level::Error => libc::LOG_ERR,
                Level::Warn => libc::LOG_WARNING,
                Level::Info => libc::LOG_NOTICE,
                Level::Debug => libc::LOG_INFO,
                Level::Trace => libc::LOG_DEBUG,
            };
            if let Ok(text) = CString::new(message.replace('\0', " ")) {
                // SAFETY: a constant "%s" format with one valid C string argument.
                unsafe { libc::syslog(priority, c"%s".as_ptr(), text.as_ptr()) };
            }
            return;
        }
        let line = match &self.hostname {
            Some(host) => format!(
                "{} {} {}[{}]: {}\n",
                timestamp(),
                host,
                self.app,
                std::process::id(),
                message
            ),
            None => format!(
                "{} {}[{}]: {}\n",
                timestamp(),
                self.app,
                std::process::id(),
                message
            ),
        };
        write_all(self.fd.load(Ordering::Relaxed), line.as_bytes());
    }

    fn flush(&self) {}
}

fn write_all(fd: i32, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is a valid buffer; a bad fd only makes write fail.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        match usize::try_from(n) {
            Ok(0) => return,
            Ok(n) => bytes = bytes.get(n..).unwrap_or_default(),
            Err(_) => {
                if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                    return;
                }
            }
        }
    }
}

/// The descriptor of the log file, for children that should log into it.
pub fn log_fd() -> Option<i32> {
    let logger = LOGGER.get()?;
    match logger.target {
        LogTarget::File(_) => Some(logger.fd.load(Ordering::Relaxed)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_and_levels_parse_like_stock() {
        assert_eq!(
            LogTarget::parse("file:/var/log/ctdb/log.ctdb"),
            Some(LogTarget::File("/var/log/ctdb/log.ctdb".into()))
        );
        assert_eq!(LogTarget::parse("file:"), Some(LogTarget::Stderr));
        assert_eq!(LogTarget::parse("syslog:udp"), Some(LogTarget::Syslog));
        assert_eq!(LogTarget::parse("bogus"), None);
        assert_eq!(parse_level("notice"), Some(3));
        assert_eq!(parse_level("INFO"), Some(5));
        assert_eq!(parse_level("7"), Some(7));
        assert_eq!(parse_level("loud"), None);
        assert_eq!(level_name(3), "NOTICE");
        assert_eq!(level_filter(3), LevelFilter::Info);
        assert_eq!(level_filter(0), LevelFilter::Error);
    }

    #[test]
    fn timestamp_looks_like_iso8601() {
        let t = timestamp();
        assert_eq!(t.as_bytes()[4], b'-');
        assert_eq!(t.as_bytes()[10], b'T');
        assert!(t.contains('.'));
    }
}
