//! CTDB logging (mirrors `ctdb/common/logging.c`, `logging_conf.c` and the parts of Samba's
//! `lib/util/debug.c` and `time_basic.c` that shape CTDB's log lines).
//!
//! Three things have to match stock because people and test scripts read them:
//! * **Levels**: Samba's numeric debug levels 0..=10 with CTDB's names ERROR (0), WARNING (1),
//!   NOTICE (3), INFO (5), DEBUG (10); `log` levels map onto the five names in order
//!   ([`ctdb_level_of`]).
//! * **Locations**: `file:<path>` (`file` or `file:-` is stderr), `syslog`,
//!   `syslog:nonblocking`, `syslog:udp`, `syslog:udp-rfc5424` ([`LogLocation`]).
//! * **The file line**: `2026-11-26T11:23:23.689597+00:00 <host> ctdbd[12103]: message`, where
//!   `<host>` is `basename($CTDB_BASE)` in test mode; stderr gets the bare message
//!   ([`format_file_line`]).
//!
//! [`CtdbLogger`] is the `log::Log` implementation. It can be reconfigured (the recovery
//! daemon re-initialises logging under its own name after the fork) and reopened (SIGHUP).

use std::ffi::{CStr, CString, OsStr};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

use super::path::{CtdbPaths, Environment, ENV_BASE, ENV_TEST_MODE};
use crate::protocol::helper::c_atoi;

/// Samba's named debug levels as CTDB uses them (`DEBUG_ERR` ... `DEBUG_DEBUG`).
pub const DEBUG_ERR: i32 = 0;
pub const DEBUG_WARNING: i32 = 1;
pub const DEBUG_NOTICE: i32 = 3;
pub const DEBUG_INFO: i32 = 5;
pub const DEBUG_DEBUG: i32 = 10;

/// `[logging] log level` default for everything but ctdbd (which passes NOTICE).
pub const DEFAULT_LOG_LEVEL: &str = "ERROR";
/// ctdbd's and ctdb-eventd's default level.
pub const DAEMON_DEFAULT_LOG_LEVEL: &str = "NOTICE";

/// Environment through which ctdbd hands its logging setup to helpers.
pub const ENV_LOGGING: &str = "CTDB_LOGGING";
pub const ENV_DEBUGLEVEL: &str = "CTDB_DEBUGLEVEL";
pub const ENV_INTERACTIVE: &str = "CTDB_INTERACTIVE";

/// `log_string_map` of `logging.c`: index = numeric level, value = its name. The names are
/// also searched in this order when parsing, so a prefix resolves to the first match.
const LEVEL_NAMES: [&str; 11] = [
    "ERROR", "WARNING", "WARNING", "NOTICE", "NOTICE", "INFO", "INFO", "INFO", "INFO", "INFO",
    "DEBUG",
];

/// Mirrors `debug_level_parse`: a string starting with a digit is read with `atoi` and must be
/// 0..=10 (`"5x"` is 5, and `"4294967297"` wraps to 1 as it does in C); anything else is matched case-insensitively as a *prefix* of a level
/// name (`"warn"` is WARNING, `"i"` is INFO, and even the empty string matches ERROR).
pub fn debug_level_parse(text: &str) -> Option<i32> {
    if text.as_bytes().first().is_some_and(u8::is_ascii_digit) {
        let level = c_atoi(text);
        return usize::try_from(level)
            .is_ok_and(|i| i < LEVEL_NAMES.len())
            .then_some(level);
    }
    let wanted = text.as_bytes();
    let index = LEVEL_NAMES.iter().position(|name| {
        name.len() >= wanted.len() && name.as_bytes()[..wanted.len()].eq_ignore_ascii_case(wanted)
    })?;
    // The names repeat, so the first match is also the level the name stands for.
    Some(match LEVEL_NAMES[index] {
        "ERROR" => DEBUG_ERR,
        "WARNING" => DEBUG_WARNING,
        "NOTICE" => DEBUG_NOTICE,
        "INFO" => DEBUG_INFO,
        _ => DEBUG_DEBUG,
    })
}

/// Mirrors `debug_level_to_string`.
pub fn debug_level_to_string(level: i32) -> &'static str {
    usize::try_from(level)
        .ok()
        .and_then(|i| LEVEL_NAMES.get(i))
        .copied()
        .unwrap_or("UNKNOWN")
}

/// Mirrors `debug_level_from_string`: unparsable means ERROR.
pub fn debug_level_from_string(text: &str) -> i32 {
    debug_level_parse(text).unwrap_or(DEBUG_ERR)
}

/// The CTDB level a `log` record is emitted at: the five `log` levels are the five CTDB names
/// in order (`info!` is NOTICE, `debug!` is INFO, `trace!` is DEBUG).
pub fn ctdb_level_of(level: log::Level) -> i32 {
    match level {
        log::Level::Error => DEBUG_ERR,
        log::Level::Warn => DEBUG_WARNING,
        log::Level::Info => DEBUG_NOTICE,
        log::Level::Debug => DEBUG_INFO,
        log::Level::Trace => DEBUG_DEBUG,
    }
}

/// The most verbose `log` level that a CTDB level lets through.
pub fn level_filter_for(ctdb_level: i32) -> log::LevelFilter {
    match ctdb_level {
        l if l >= DEBUG_DEBUG => log::LevelFilter::Trace,
        l if l >= DEBUG_INFO => log::LevelFilter::Debug,
        l if l >= DEBUG_NOTICE => log::LevelFilter::Info,
        l if l >= DEBUG_WARNING => log::LevelFilter::Warn,
        l if l >= DEBUG_ERR => log::LevelFilter::Error,
        _ => log::LevelFilter::Off,
    }
}

/// `LOG_DAEMON` and the `syslog(3)` priorities, spelled out so that formatting stays pure.
const LOG_DAEMON: i32 = 3 << 3;
const LOG_ERR: i32 = 3;
const LOG_WARNING: i32 = 4;
const LOG_NOTICE: i32 = 5;
const LOG_INFO: i32 = 6;
const LOG_DEBUG: i32 = 7;

/// Mirrors `debug_level_to_priority`: 0 ERR, 1 WARNING, 2..=5 NOTICE, 6..=9 INFO, else DEBUG.
pub fn syslog_priority(ctdb_level: i32) -> i32 {
    match ctdb_level {
        0 => LOG_ERR,
        1 => LOG_WARNING,
        2..=5 => LOG_NOTICE,
        6..=9 => LOG_INFO,
        _ => LOG_DEBUG,
    }
}

/// Where log lines go: the value of `[logging] location`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogLocation {
    /// `file`, `file:` or `file:-`; also what an interactive daemon uses.
    Stderr,
    /// `file:<path>`, appended to, created 0644.
    File(PathBuf),
    /// `syslog`: `openlog(app, LOG_PID, LOG_DAEMON)` and `syslog(3)`.
    Syslog,
    /// `syslog:nonblocking`: RFC 3164 datagrams to `/dev/log`, dropped (and counted) when the
    /// socket would block.
    SyslogNonblocking,
    /// `syslog:udp`: RFC 3164 datagrams to 127.0.0.1:514.
    SyslogUdp,
    /// `syslog:udp-rfc5424`: RFC 5424 datagrams to 127.0.0.1:514.
    SyslogUdpRfc5424,
}

/// Why a location string was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocationError {
    /// Empty, or only colons (stock `EINVAL`).
    Empty,
    /// Neither `file` nor `syslog` (stock `ENOENT`, "Invalid logging option").
    UnknownBackend(String),
    /// `syslog:<something else>` (stock `EINVAL`).
    BadSyslogOption(String),
}

impl fmt::Display for LocationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LocationError::Empty => write!(f, "empty logging location"),
            LocationError::UnknownBackend(name) => write!(f, "Invalid logging option '{name}'"),
            LocationError::BadSyslogOption(option) => {
                write!(f, "invalid syslog logging option '{option}'")
            }
        }
    }
}

impl std::error::Error for LocationError {}

impl LogLocation {
    /// Mirrors `log_backend_parse` and the backends' setup: the string is cut like
    /// `strtok(":")`, so empty fields vanish and only the first two fields count
    /// (`file:/a:b` logs to `/a`).
    pub fn parse(text: &str) -> Result<Self, LocationError> {
        let mut fields = text.split(':').filter(|f| !f.is_empty());
        let name = fields.next().ok_or(LocationError::Empty)?;
        let option = fields.next();
        match name {
            "file" => Ok(match option {
                None | Some("-") => LogLocation::Stderr,
                Some(path) => LogLocation::File(PathBuf::from(path)),
            }),
            "syslog" => match option {
                None => Ok(LogLocation::Syslog),
                Some("nonblocking") => Ok(LogLocation::SyslogNonblocking),
                Some("udp") => Ok(LogLocation::SyslogUdp),
                Some("udp-rfc5424") => Ok(LogLocation::SyslogUdpRfc5424),
                Some(other) => Err(LocationError::BadSyslogOption(other.to_owned())),
            },
            other => Err(LocationError::UnknownBackend(other.to_owned())),
        }
    }

    /// Mirrors `logging_validate` (used when checking the configuration): the string parses
    /// and, for a file, the directory it would live in exists.
    pub fn validate(text: &str) -> bool {
        match Self::parse(text) {
            Ok(LogLocation::File(path)) => {
                let dir = match path.parent() {
                    Some(dir) if !dir.as_os_str().is_empty() => dir,
                    _ if path.has_root() => Path::new("/"),
                    _ => Path::new("."),
                };
                dir.is_dir()
            }
            Ok(_) => true,
            Err(_) => false,
        }
    }

    /// The location a daemon actually uses: an interactive ctdbd (`-i`) or ctdb-eventd
    /// (`CTDB_INTERACTIVE` set) ignores the configured location and logs to stderr.
    pub fn resolve(configured: &str, interactive: bool) -> Result<Self, LocationError> {
        if interactive {
            Ok(LogLocation::Stderr)
        } else {
            Self::parse(configured)
        }
    }

    /// Whether the environment marks the process as interactive (ctdbd exports
    /// `CTDB_INTERACTIVE=true` when started with `-i`; eventd only checks presence).
    pub fn interactive_from_env(env: &Environment) -> bool {
        env.contains(ENV_INTERACTIVE)
    }

    /// `[logging] location` default, `file:/var/log/ctdb/log.ctdb`.
    pub fn default_location() -> String {
        CtdbPaths::default_log_location()
    }
}

/// How one process logs: where, how much, and under which program name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    pub location: LogLocation,
    pub level: i32,
    /// `ctdbd`, `ctdb-recoverd`, `ctdb-eventd`, `ctdb-recovery`, `ctdb-takeover`, ...
    pub app_name: String,
}

/// Why logging could not be set up from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogEnvError {
    /// `CTDB_DEBUGLEVEL` missing or not a level.
    BadLevel,
    /// `CTDB_LOGGING` missing or empty.
    NoLocation,
    Location(LocationError),
}

impl fmt::Display for LogEnvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogEnvError::BadLevel => write!(f, "{ENV_DEBUGLEVEL} is not set to a debug level"),
            LogEnvError::NoLocation => write!(f, "{ENV_LOGGING} is not set"),
            LogEnvError::Location(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for LogEnvError {}

impl LogConfig {
    /// What a helper started by ctdbd uses: `logging_init(.., NULL, NULL, app)` reads
    /// `CTDB_LOGGING` and `CTDB_DEBUGLEVEL`, both of which ctdbd exports.
    pub fn from_env(env: &Environment, app_name: &str) -> Result<Self, LogEnvError> {
        let level = env
            .get(ENV_DEBUGLEVEL)
            .and_then(OsStr::to_str)
            .and_then(debug_level_parse)
            .ok_or(LogEnvError::BadLevel)?;
        let location = env
            .get(ENV_LOGGING)
            .and_then(OsStr::to_str)
            .filter(|s| !s.is_empty())
            .ok_or(LogEnvError::NoLocation)?;
        Ok(LogConfig {
            location: LogLocation::parse(location).map_err(LogEnvError::Location)?,
            level,
            app_name: app_name.to_owned(),
        })
    }

    /// The variables ctdbd exports so that its helpers and children log alike.
    pub fn exported_env(location: &str, level: i32) -> [(&'static str, String); 2] {
        [
            (ENV_LOGGING, location.to_owned()),
            (ENV_DEBUGLEVEL, debug_level_to_string(level).to_owned()),
        ]
    }
}

/// The hostname in file log lines: in test mode `basename($CTDB_BASE)` (`"unknown"` when it
/// ends in `/`), so that local test daemons are told apart; otherwise `None`, meaning
/// `gethostname()`.
pub fn test_mode_hostname(env: &Environment) -> Option<String> {
    if !env.contains(ENV_TEST_MODE) {
        return None;
    }
    let base = env.get(ENV_BASE)?.to_string_lossy();
    Some(match base.rsplit_once('/') {
        Some((_, "")) => "unknown".to_owned(),
        Some((_, last)) => last.to_owned(),
        None => base.into_owned(),
    })
}

/// A wall-clock instant broken down the way `timeval_str_buf` needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalTimestamp {
    pub year: i32,
    pub month: i32,
    pub day: i32,
    pub hour: i32,
    pub minute: i32,
    pub second: i32,
    pub microsecond: i64,
    /// Hour and minute of the same instant in UTC, from which stock derives the offset.
    pub utc_hour: i32,
    pub utc_minute: i32,
}

impl LocalTimestamp {
    /// Breaks `seconds` down with `localtime_r` and `gmtime_r`. `None` where `localtime` fails.
    pub fn from_unix(seconds: i64, microsecond: i64) -> Option<Self> {
        let local = broken_down(seconds, libc::localtime_r)?;
        let utc = broken_down(seconds, libc::gmtime_r)?;
        Some(LocalTimestamp {
            year: 1900 + local.tm_year,
            month: local.tm_mon + 1,
            day: local.tm_mday,
            hour: local.tm_hour,
            minute: local.tm_min,
            second: local.tm_sec,
            microsecond,
            utc_hour: utc.tm_hour,
            utc_minute: utc.tm_min,
        })
    }

    /// `timeval_str_buf(tv, rfc5424=true, hires=true)`:
    /// `YYYY-MM-DDTHH:MM:SS.uuuuuu+HH:MM`. The offset is computed from the hour and minute
    /// fields only, as stock does, so it is wrong when local time and UTC fall on different
    /// days (e.g. `-23:00` instead of `+01:00` just after local midnight); we reproduce that.
    pub fn rfc5424(&self) -> String {
        let offset = (self.hour - self.utc_hour) * 60 + (self.minute - self.utc_minute);
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}{}{:02}:{:02}",
            self.year,
            self.month,
            self.day,
            self.hour,
            self.minute,
            self.second,
            self.microsecond,
            if offset >= 0 { '+' } else { '-' },
            offset.abs() / 60,
            offset.abs() % 60
        )
    }
}

type BreakDown = unsafe extern "C" fn(*const libc::time_t, *mut libc::tm) -> *mut libc::tm;

fn broken_down(seconds: i64, convert: BreakDown) -> Option<libc::tm> {
    let time: libc::time_t = seconds;
    // SAFETY: `libc::tm` is a plain C struct for which all-zero bytes are a valid value (the
    // `tm_zone` pointer is allowed to be null).
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers refer to live locals for the duration of the call; the `_r`
    // variants write only into `tm` and keep no reference to either.
    let result = unsafe { convert(&time, &mut tm) };
    (!result.is_null()).then_some(tm)
}

/// The timestamp field of a file log line, with stock's fallback when `localtime` fails.
pub fn format_timestamp(seconds: i64, microsecond: i64) -> String {
    match LocalTimestamp::from_unix(seconds, microsecond) {
        Some(ts) => ts.rfc5424(),
        None => format!("{seconds}.{microsecond:06} seconds since the Epoch"),
    }
}

/// Drops one trailing newline: C messages carry their own, `log` records do not, and every
/// backend adds exactly one (or none, for syslog).
fn trim_newline(message: &str) -> &str {
    message.strip_suffix('\n').unwrap_or(message)
}

/// One line of a `file:` log (`debug.c:dbghdrclass` with `debug_syslog_format` and
/// `debug_hires_timestamp`): `<timestamp> <hostname> <app>[<pid>]: <message>\n`. The hostname
/// is cut to 64 bytes like stock's `%.*s`.
pub fn format_file_line(
    timestamp: &str,
    hostname: &str,
    app: &str,
    pid: u32,
    message: &str,
) -> String {
    let mut host_end = hostname.len().min(64);
    while !hostname.is_char_boundary(host_end) {
        host_end -= 1;
    }
    format!(
        "{timestamp} {} {app}[{pid}]: {}\n",
        &hostname[..host_end],
        trim_newline(message)
    )
}

/// RFC 3164 datagrams carry no timestamp or hostname (`logging.c:format_rfc3164`).
pub fn format_rfc3164(ctdb_level: i32, app: &str, pid: u32, message: &str) -> Vec<u8> {
    let priority = LOG_DAEMON | syslog_priority(ctdb_level);
    truncate_datagram(format!(
        "<{priority}>{app}[{pid}]: {}",
        trim_newline(message)
    ))
}

/// `<pri>1 <timestamp> <host> <app> <pid> - - <message>` (`logging.c:format_rfc5424`).
pub fn format_rfc5424(
    ctdb_level: i32,
    timestamp: &str,
    hostname: &str,
    app: &str,
    pid: u32,
    message: &str,
) -> Vec<u8> {
    let priority = LOG_DAEMON | syslog_priority(ctdb_level);
    truncate_datagram(format!(
        "<{priority}>1 {timestamp} {hostname} {app} {pid} - - {}",
        trim_newline(message)
    ))
}

/// Stock formats into a 1024-byte buffer, so at most 1023 bytes go out.
const MAX_DATAGRAM: usize = 1023;

fn truncate_datagram(text: String) -> Vec<u8> {
    let mut bytes = text.into_bytes();
    bytes.truncate(MAX_DATAGRAM);
    bytes
}

/// `get_myname()`: the host name up to its first dot.
fn short_hostname() -> String {
    let name = full_hostname();
    match name.split_once('.') {
        Some((short, _)) => short.to_owned(),
        None => name,
    }
}

fn full_hostname() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// The wall clock, for timestamps only. Log lines are presentation, not logic, so they read the
/// real-time clock directly instead of the daemon's injected clock.
fn wall_clock() -> (i64, i64) {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_REALTIME) {
        Ok(now) => (now.tv_sec(), now.tv_nsec() / 1000),
        Err(_) => (0, 0),
    }
}

/// The open side of a location.
#[derive(Debug)]
enum Backend {
    Stderr,
    File { path: PathBuf, file: File },
    Syslog,
    Socket(SyslogSocket),
}

#[derive(Debug)]
enum SyslogTransport {
    Unix(UnixDatagram),
    Udp(std::net::UdpSocket),
}

#[derive(Debug)]
struct SyslogSocket {
    transport: SyslogTransport,
    /// `Some(short hostname)` for RFC 5424, `None` for RFC 3164.
    rfc5424_hostname: Option<String>,
    dropped: u32,
}

impl SyslogSocket {
    fn send(&self, datagram: &[u8]) -> io::Result<usize> {
        match &self.transport {
            SyslogTransport::Unix(socket) => socket.send(datagram),
            SyslogTransport::Udp(socket) => socket.send(datagram),
        }
    }

    fn format(&self, level: i32, app: &str, pid: u32, message: &str) -> Vec<u8> {
        match &self.rfc5424_hostname {
            None => format_rfc3164(level, app, pid, message),
            Some(host) => {
                let (sec, usec) = wall_clock();
                format_rfc5424(level, &format_timestamp(sec, usec), host, app, pid, message)
            }
        }
    }

    /// Mirrors `syslog_log_sock`: report earlier drops first; a datagram that would block is
    /// counted and dropped, any other failure is ignored.
    fn log(&mut self, level: i32, app: &str, pid: u32, message: &str) {
        if self.dropped > 0 {
            let notice = format!("[Dropped {} log messages]\n", self.dropped);
            match self.send(&self.format(level, app, pid, &notice)) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.dropped += 1;
                    return;
                }
                Err(_) => return,
                Ok(_) => self.dropped = 0,
            }
        }
        if let Err(e) = self.send(&self.format(level, app, pid, message)) {
            if e.kind() == io::ErrorKind::WouldBlock {
                self.dropped += 1;
            }
        }
    }
}

/// The socket `syslog(3)` talks to (`_PATH_LOG`).
const PATH_LOG: &str = "/dev/log";

fn open_log_file(path: &Path) -> io::Result<File> {
    // std opens with O_CLOEXEC, as stock's reopen does with smb_set_close_on_exec.
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o644)
        .open(path)
}

impl Backend {
    fn open(location: &LogLocation, app_name: &str) -> io::Result<Self> {
        Ok(match location {
            LogLocation::Stderr => Backend::Stderr,
            LogLocation::File(path) => Backend::File {
                path: path.clone(),
                file: open_log_file(path)?,
            },
            LogLocation::Syslog => {
                // openlog keeps the pointer, so the identity must outlive every later syslog
                // call; it is leaked once per (re)configuration, which happens a handful of times
                // per process at most.
                let ident: &'static CStr = Box::leak(c_string(app_name).into_boxed_c_str());
                // SAFETY: `ident` is a valid NUL-terminated string that lives forever.
                unsafe { libc::openlog(ident.as_ptr(), libc::LOG_PID, libc::LOG_DAEMON) };
                Backend::Syslog
            }
            LogLocation::SyslogNonblocking => {
                let socket = UnixDatagram::unbound()?;
                socket.connect(PATH_LOG)?;
                socket.set_nonblocking(true)?;
                Backend::Socket(SyslogSocket {
                    transport: SyslogTransport::Unix(socket),
                    rfc5424_hostname: None,
                    dropped: 0,
                })
            }
            LogLocation::SyslogUdp | LogLocation::SyslogUdpRfc5424 => {
                let socket = std::net::UdpSocket::bind(("0.0.0.0", 0))?;
                socket.connect(("127.0.0.1", 514))?;
                Backend::Socket(SyslogSocket {
                    transport: SyslogTransport::Udp(socket),
                    rfc5424_hostname: (*location == LogLocation::SyslogUdpRfc5424)
                        .then(short_hostname),
                    dropped: 0,
                })
            }
        })
    }
}

/// `s` as a C string, with any NUL bytes removed rather than failing.
fn c_string(s: &str) -> CString {
    CString::new(s.replace('\0', "")).unwrap_or_default()
}

#[derive(Debug)]
struct LoggerState {
    app_name: String,
    level: i32,
    /// The host name of file lines, fixed at configuration time.
    hostname: String,
    backend: Backend,
}

impl LoggerState {
    fn new(config: &LogConfig, env: &Environment) -> io::Result<Self> {
        Ok(LoggerState {
            app_name: config.app_name.clone(),
            level: config.level,
            hostname: test_mode_hostname(env).unwrap_or_else(full_hostname),
            backend: Backend::open(&config.location, &config.app_name)?,
        })
    }

    fn write(&mut self, level: i32, message: &str) {
        let pid = std::process::id();
        // Write failures have nowhere to be reported; stock ignores them as well.
        match &mut self.backend {
            Backend::Stderr => {
                let mut line = trim_newline(message).to_owned();
                line.push('\n');
                let _ = io::stderr().write_all(line.as_bytes());
            }
            Backend::File { file, .. } => {
                let (sec, usec) = wall_clock();
                let line = format_file_line(
                    &format_timestamp(sec, usec),
                    &self.hostname,
                    &self.app_name,
                    pid,
                    message,
                );
                let _ = file.write_all(line.as_bytes());
            }
            Backend::Syslog => {
                let text = c_string(trim_newline(message));
                // SAFETY: both strings are valid and NUL-terminated; the message is passed
                // through a "%s" format so that '%' in it is not interpreted.
                unsafe {
                    libc::syslog(syslog_priority(level), c"%s".as_ptr(), text.as_ptr());
                }
            }
            Backend::Socket(socket) => socket.log(level, &self.app_name, pid, message),
        }
    }
}

/// CTDB's `log::Log` implementation.
///
/// `log::Log` must be `Sync`, so the state sits behind a mutex even though ctdbd is single
/// threaded; the lock is never contended and never held across anything but one write.
#[derive(Debug)]
pub struct CtdbLogger {
    #[allow(clippy::disallowed_types)]
    state: std::sync::Mutex<LoggerState>,
}

impl CtdbLogger {
    /// Opens the location (creating a log file if needed) under `config`. `env` supplies the
    /// test-mode hostname rule.
    pub fn new(config: &LogConfig, env: &Environment) -> io::Result<Self> {
        Ok(CtdbLogger {
            #[allow(clippy::disallowed_types)]
            state: std::sync::Mutex::new(LoggerState::new(config, env)?),
        })
    }

    #[allow(clippy::disallowed_types)]
    fn state(&self) -> std::sync::MutexGuard<'_, LoggerState> {
        // A panic while logging leaves nothing half-updated worth refusing to log over.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Installs a logger as the process-wide `log` backend and sets the `log` filter to match.
    /// Fails if a logger is already installed.
    pub fn install(config: &LogConfig, env: &Environment) -> io::Result<&'static CtdbLogger> {
        let logger: &'static CtdbLogger = Box::leak(Box::new(CtdbLogger::new(config, env)?));
        log::set_logger(logger).map_err(|e| io::Error::other(e.to_string()))?;
        log::set_max_level(level_filter_for(config.level));
        Ok(logger)
    }

    /// Replaces the whole setup, as `logging_init` does again in a forked child that logs under
    /// another name (the recovery daemon). On failure the old setup stays.
    pub fn reconfigure(&self, config: &LogConfig, env: &Environment) -> io::Result<()> {
        let fresh = LoggerState::new(config, env)?;
        *self.state() = fresh;
        log::set_max_level(level_filter_for(config.level));
        Ok(())
    }

    /// Reopens a log file (on SIGHUP, after rotation). The new file is opened before the old
    /// one is closed, so a failure keeps logging to the old file, as stock does. Other
    /// locations have nothing to reopen.
    pub fn reopen(&self) -> io::Result<()> {
        let mut state = self.state();
        if let Backend::File { path, file } = &mut state.backend {
            *file = open_log_file(path)?;
        }
        Ok(())
    }

    /// The current CTDB debug level (GET_DEBUG).
    pub fn level(&self) -> i32 {
        self.state().level
    }

    /// Changes the debug level (SET_DEBUG) and the `log` filter with it.
    pub fn set_level(&self, level: i32) {
        self.state().level = level;
        log::set_max_level(level_filter_for(level));
    }

    /// Writes one message at a numeric CTDB level, for callers that have one (event script
    /// output is logged at `[legacy] script log level`).
    pub fn log_at(&self, level: i32, message: &str) {
        let mut state = self.state();
        if level <= state.level {
            state.write(level, message);
        }
    }
}

impl log::Log for CtdbLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        ctdb_level_of(metadata.level()) <= self.state().level
    }

    fn log(&self, record: &log::Record<'_>) {
        let level = ctdb_level_of(record.level());
        let mut state = self.state();
        if level > state.level {
            return;
        }
        let message = match record.args().as_str() {
            Some(text) => text.to_owned(),
            None => record.args().to_string(),
        };
        state.write(level, &message);
    }

    fn flush(&self) {
        if let Backend::File { file, .. } = &mut self.state().backend {
            let _ = file.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use log::Log;

    #[test]
    fn level_parsing_matches_debug_level_parse() {
        for (text, level) in [
            ("ERROR", 0),
            ("error", 0),
            ("WARNING", 1),
            ("warn", 1),
            ("NOTICE", 3),
            ("n", 3),
            ("INFO", 5),
            ("i", 5),
            ("DEBUG", 10),
            ("d", 10),
            ("", 0),
            ("0", 0),
            ("2", 2),
            ("5x", 5),
            ("10", 10),
            ("4294967297", 1),
        ] {
            assert_eq!(debug_level_parse(text), Some(level), "{text:?}");
        }
        for text in ["11", "ERRORS", "-1", " 1", "x", "99999999999999999999999"] {
            assert_eq!(debug_level_parse(text), None, "{text:?}");
        }
        assert_eq!(debug_level_from_string("bogus"), DEBUG_ERR);
    }

    #[test]
    fn level_names_match_debug_level_to_string() {
        let names: Vec<&str> = (-1..=11).map(debug_level_to_string).collect();
        assert_eq!(
            names,
            [
                "UNKNOWN", "ERROR", "WARNING", "WARNING", "NOTICE", "NOTICE", "INFO", "INFO",
                "INFO", "INFO", "INFO", "DEBUG", "UNKNOWN"
            ]
        );
    }

    #[test]
    fn log_levels_map_onto_the_five_names() {
        let mapped: Vec<&str> = [
            log::Level::Error,
            log::Level::Warn,
            log::Level::Info,
            log::Level::Debug,
            log::Level::Trace,
        ]
        .into_iter()
        .map(|l| debug_level_to_string(ctdb_level_of(l)))
        .collect();
        assert_eq!(mapped, ["ERROR", "WARNING", "NOTICE", "INFO", "DEBUG"]);
        assert_eq!(level_filter_for(DEBUG_NOTICE), log::LevelFilter::Info);
        assert_eq!(level_filter_for(2), log::LevelFilter::Warn);
        assert_eq!(level_filter_for(9), log::LevelFilter::Debug);
        assert_eq!(level_filter_for(-1), log::LevelFilter::Off);
    }

    #[test]
    fn syslog_priorities_match_debug_level_to_priority() {
        let got: Vec<i32> = (-1..=11).map(syslog_priority).collect();
        assert_eq!(got, [7, 3, 4, 5, 5, 5, 5, 6, 6, 6, 6, 7, 7]);
    }

    #[test]
    fn location_parsing() {
        let parse = LogLocation::parse;
        assert_eq!(
            parse("file:/var/log/ctdb/log.ctdb"),
            Ok(LogLocation::File("/var/log/ctdb/log.ctdb".into()))
        );
        assert_eq!(parse("file:"), Ok(LogLocation::Stderr));
        assert_eq!(parse("file"), Ok(LogLocation::Stderr));
        assert_eq!(parse("file:-"), Ok(LogLocation::Stderr));
        assert_eq!(parse("file:/a:b"), Ok(LogLocation::File("/a".into())));
        assert_eq!(parse(":file::/x"), Ok(LogLocation::File("/x".into())));
        assert_eq!(parse("syslog"), Ok(LogLocation::Syslog));
        assert_eq!(
            parse("syslog:nonblocking"),
            Ok(LogLocation::SyslogNonblocking)
        );
        assert_eq!(parse("syslog:udp"), Ok(LogLocation::SyslogUdp));
        assert_eq!(
            parse("syslog:udp-rfc5424"),
            Ok(LogLocation::SyslogUdpRfc5424)
        );
        assert_eq!(
            parse("syslog:tcp"),
            Err(LocationError::BadSyslogOption("tcp".into()))
        );
        assert_eq!(
            parse("stderr"),
            Err(LocationError::UnknownBackend("stderr".into()))
        );
        assert_eq!(parse(""), Err(LocationError::Empty));
        assert_eq!(parse(":::"), Err(LocationError::Empty));
        assert_eq!(
            LogLocation::default_location(),
            format!("file:{}/log.ctdb", super::super::path::LOGDIR)
        );
        assert_eq!(
            LogLocation::resolve("syslog", true),
            Ok(LogLocation::Stderr)
        );
        assert_eq!(
            LogLocation::resolve("syslog", false),
            Ok(LogLocation::Syslog)
        );
        assert!(LogLocation::interactive_from_env(
            &Environment::new().with(ENV_INTERACTIVE, "")
        ));
    }

    #[test]
    fn location_validation_checks_the_directory() {
        assert!(LogLocation::validate("file:/tmp/log.ctdb"));
        assert!(LogLocation::validate("file:relative.log"));
        assert!(LogLocation::validate("file:/log.ctdb"));
        assert!(!LogLocation::validate(
            "file:/nonexistent-dir-for-ctdb-test/log"
        ));
        assert!(LogLocation::validate("syslog:udp"));
        assert!(!LogLocation::validate("syslog:bogus"));
        assert!(!LogLocation::validate("nothing"));
    }

    #[test]
    fn config_from_helper_environment() {
        let env = Environment::new()
            .with(ENV_LOGGING, "syslog:udp")
            .with(ENV_DEBUGLEVEL, "NOTICE");
        assert_eq!(
            LogConfig::from_env(&env, "ctdb-recovery"),
            Ok(LogConfig {
                location: LogLocation::SyslogUdp,
                level: DEBUG_NOTICE,
                app_name: "ctdb-recovery".into(),
            })
        );
        let no_level = Environment::new().with(ENV_LOGGING, "file:");
        assert_eq!(
            LogConfig::from_env(&no_level, "x"),
            Err(LogEnvError::BadLevel)
        );
        let empty = Environment::new()
            .with(ENV_LOGGING, "")
            .with(ENV_DEBUGLEVEL, "0");
        assert_eq!(
            LogConfig::from_env(&empty, "x"),
            Err(LogEnvError::NoLocation)
        );
        let exported = LogConfig::exported_env("file:/x", DEBUG_INFO);
        assert_eq!(exported[1], (ENV_DEBUGLEVEL, "INFO".to_owned()));
    }

    #[test]
    fn hostname_in_test_mode_is_the_base_name() {
        let env = |base: &str| {
            Environment::new()
                .with(ENV_TEST_MODE, "yes")
                .with(ENV_BASE, base)
        };
        assert_eq!(
            test_mode_hostname(&env("/tmp/x/node.1")).as_deref(),
            Some("node.1")
        );
        assert_eq!(
            test_mode_hostname(&env("/tmp/x/")).as_deref(),
            Some("unknown")
        );
        assert_eq!(test_mode_hostname(&env("rel")).as_deref(), Some("rel"));
        assert_eq!(
            test_mode_hostname(&Environment::new().with(ENV_BASE, "/a/b")),
            None
        );
    }

    #[test]
    fn file_line_matches_stock_eventd_log() {
        // From stock ctdb-eventd 4.17.12 in test mode with CTDB_BASE=.../base:
        // "2026-11-26T11:23:23.689597+00:00 base ctdb-eventd[12103]: daemon started, pid=12103"
        let ts = LocalTimestamp {
            year: 2026,
            month: 11,
            day: 26,
            hour: 11,
            minute: 23,
            second: 23,
            microsecond: 689_597,
            utc_hour: 11,
            utc_minute: 23,
        };
        assert_eq!(
            format_file_line(
                &ts.rfc5424(),
                "base",
                "ctdb-eventd",
                12103,
                "daemon started, pid=12103\n"
            ),
            "2026-11-26T11:23:23.689597+00:00 base ctdb-eventd[12103]: daemon started, pid=12103\n"
        );
        let long = "h".repeat(70);
        let line = format_file_line("T", &long, "a", 1, "m");
        assert_eq!(line, format!("T {} a[1]: m\n", "h".repeat(64)));
    }

    #[test]
    fn timestamp_offsets_follow_stock_arithmetic() {
        let at = |hour, minute, utc_hour, utc_minute| LocalTimestamp {
            year: 2024,
            month: 1,
            day: 2,
            hour,
            minute,
            second: 3,
            microsecond: 4,
            utc_hour,
            utc_minute,
        };
        assert_eq!(
            at(13, 30, 12, 0).rfc5424(),
            "2024-01-02T13:30:03.000004+01:30"
        );
        assert_eq!(
            at(7, 0, 12, 0).rfc5424(),
            "2024-01-02T07:00:03.000004-05:00"
        );
        // Just after local midnight at UTC+1 stock prints -23:00.
        assert_eq!(
            at(0, 30, 23, 30).rfc5424(),
            "2024-01-02T00:30:03.000004-23:00"
        );
    }

    #[test]
    fn unix_timestamps_break_down_through_libc() {
        // Whatever the machine's zone, the UTC fields are fixed and the text has the shape.
        let ts = LocalTimestamp::from_unix(1_795_692_203, 689_597).unwrap();
        assert_eq!((ts.utc_hour, ts.utc_minute), (11, 23));
        let text = format_timestamp(1_795_692_203, 689_597);
        assert_eq!(
            text.len(),
            "2026-11-26T11:23:23.689597+00:00".len(),
            "{text}"
        );
        assert!(text.contains(".689597"), "{text}");
        if (ts.hour, ts.minute) == (ts.utc_hour, ts.utc_minute) {
            // A UTC machine, like the one the stock eventd line was recorded on.
            assert_eq!(text, "2026-11-26T11:23:23.689597+00:00");
        }
        assert_eq!(
            format_timestamp(i64::MAX, 1),
            "9223372036854775807.000001 seconds since the Epoch"
        );
    }

    #[test]
    fn syslog_datagrams() {
        assert_eq!(
            format_rfc3164(DEBUG_ERR, "ctdbd", 42, "boom\n"),
            b"<27>ctdbd[42]: boom".to_vec()
        );
        assert_eq!(
            format_rfc5424(DEBUG_INFO, "TS", "host", "ctdbd", 42, "hi"),
            b"<29>1 TS host ctdbd 42 - - hi".to_vec()
        );
        assert_eq!(
            format_rfc3164(DEBUG_DEBUG, "a", 1, &"x".repeat(5000)).len(),
            1023
        );
    }

    fn scratch_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("ctdb-rs-logging-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn file_logger_writes_filters_and_reopens() {
        let dir = scratch_dir("file");
        let path = dir.join("log.ctdb");
        let env = Environment::new()
            .with(ENV_TEST_MODE, "1")
            .with(ENV_BASE, "/x/node.0");
        let logger = CtdbLogger::new(
            &LogConfig {
                location: LogLocation::File(path.clone()),
                level: DEBUG_NOTICE,
                app_name: "ctdbd".into(),
            },
            &env,
        )
        .unwrap();
        let emit = |level, text: &str| {
            logger.log(
                &log::Record::builder()
                    .level(level)
                    .args(format_args!("{text}"))
                    .build(),
            );
        };
        emit(log::Level::Info, "kept");
        emit(log::Level::Debug, "filtered");
        logger.log_at(DEBUG_ERR, "numeric\n");
        logger.log_at(DEBUG_INFO, "numeric filtered");
        assert!(logger.enabled(&log::Metadata::builder().level(log::Level::Warn).build()));
        assert!(!logger.enabled(&log::Metadata::builder().level(log::Level::Debug).build()));

        // Rotation: the old file is moved away, reopen starts a new one at the same path.
        std::fs::rename(&path, dir.join("log.ctdb.1")).unwrap();
        emit(log::Level::Error, "still old");
        logger.reopen().unwrap();
        logger.set_level(DEBUG_DEBUG);
        assert_eq!(logger.level(), DEBUG_DEBUG);
        emit(log::Level::Trace, "new file");
        logger.flush();

        let old = std::fs::read_to_string(dir.join("log.ctdb.1")).unwrap();
        let new = std::fs::read_to_string(&path).unwrap();
        let pid = std::process::id();
        let suffixes: Vec<String> = old
            .lines()
            .map(|line| {
                let (_, rest) = line.split_once(' ').unwrap();
                rest.to_owned()
            })
            .collect();
        assert_eq!(
            suffixes,
            [
                format!("node.0 ctdbd[{pid}]: kept"),
                format!("node.0 ctdbd[{pid}]: numeric"),
                format!("node.0 ctdbd[{pid}]: still old"),
            ]
        );
        assert!(
            new.ends_with(&format!("node.0 ctdbd[{pid}]: new file\n")),
            "{new}"
        );
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o022, 0, "log file must not be group/other writable");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reconfigure_switches_name_and_file_and_keeps_old_setup_on_failure() {
        let dir = scratch_dir("reconf");
        let env = Environment::new();
        let config = |file: &str, app: &str| LogConfig {
            location: LogLocation::File(dir.join(file)),
            level: DEBUG_ERR,
            app_name: app.into(),
        };
        let logger = CtdbLogger::new(&config("a", "ctdbd"), &env).unwrap();
        logger.log_at(DEBUG_ERR, "one");
        logger
            .reconfigure(&config("b", "ctdb-recoverd"), &env)
            .unwrap();
        logger.log_at(DEBUG_ERR, "two");
        assert!(logger
            .reconfigure(&config("missing/dir/c", "x"), &env)
            .is_err());
        logger.log_at(DEBUG_ERR, "three");
        let a = std::fs::read_to_string(dir.join("a")).unwrap();
        let b = std::fs::read_to_string(dir.join("b")).unwrap();
        assert!(a.contains(" ctdbd[") && a.ends_with(": one\n"), "{a}");
        assert_eq!(b.lines().count(), 2, "{b}");
        assert!(
            b.contains(" ctdb-recoverd[") && b.ends_with(": three\n"),
            "{b}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn udp_syslog_sends_rfc5424_datagrams() {
        // Only meaningful when port 514 on loopback is free for a listener; skip otherwise.
        let Ok(listener) = std::net::UdpSocket::bind(("127.0.0.1", 514)) else {
            return;
        };
        listener
            .set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let logger = CtdbLogger::new(
            &LogConfig {
                location: LogLocation::SyslogUdpRfc5424,
                level: DEBUG_NOTICE,
                app_name: "ctdbd".into(),
            },
            &Environment::new(),
        )
        .unwrap();
        logger.log_at(DEBUG_NOTICE, "hello\n");
        let mut buf = [0u8; 2048];
        let n = listener.recv(&mut buf).unwrap();
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(text.starts_with("<29>1 "), "{text}");
        assert!(
            text.ends_with(&format!(" ctdbd {} - - hello", std::process::id())),
            "{text}"
        );
    }
}
