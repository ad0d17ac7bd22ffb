//! ctdb-eventd: the event script daemon ctdbd starts as `ctdb-eventd -P <ctdbd pid> -S <fd>`
//! (mirrors `ctdb/event/event_daemon.c`). Exit codes follow stock: 0 after SIGTERM/SIGINT,
//! `ESRCH` when the watched pid died, `EEXIST` when another eventd holds the pid file, `EIO`
//! when the socket cannot be set up, `EINVAL` for a bad configuration, 1 for bad options.

use ctdb::common::clock::wall_clock_now;
use ctdb::event::config::{EventConfig, EventPaths};
use ctdb::event::shell::{self, ShellOptions};
use std::fs::File;
use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::ExitCode;

fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code & 0xff).unwrap_or(1))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let mut options = getopts::Options::new();
    options.optopt("P", "pid", "pid to wait for", "PID");
    options.optopt(
        "S",
        "startup-fd",
        "file descriptor to notify of successful start",
        "FD",
    );
    options.optflag("?", "help", "Show this help message");
    options.optflag("", "usage", "Display brief usage message");
    let matches = match options.parse(args.iter().skip(1)) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("Invalid options: {e}");
            return ExitCode::from(1);
        }
    };
    if matches.opt_present("?") || matches.opt_present("usage") {
        print!("{}", options.usage("Usage: ctdb-eventd [OPTION...]"));
        return ExitCode::SUCCESS;
    }
    let int_option = |name: &str| -> Result<Option<i32>, ()> {
        match matches.opt_str(name) {
            None => Ok(None),
            Some(v) => v.trim().parse::<i32>().map(Some).map_err(|_| {
                eprintln!("Invalid options -{name}: invalid numeric value");
            }),
        }
    };
    let (Ok(watch_pid), Ok(startup_fd)) = (int_option("P"), int_option("S")) else {
        return ExitCode::from(1);
    };
    let interactive = std::env::var_os("CTDB_INTERACTIVE").is_some();

    let paths = match EventPaths::from_env() {
        Ok(paths) => paths,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let config = match EventConfig::load(&paths.config_file())
        .and_then(|c| c.validate(&paths.etc_dir).map(|()| c))
    {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            eprintln!("Failed to initialize event config");
            return exit_code(libc::EINVAL);
        }
    };
    let (location, level) = if interactive {
        ("file:", "NOTICE")
    } else {
        (config.log_location.as_str(), config.log_level.as_str())
    };
    if let Err(e) = logger::init(location, level) {
        eprintln!("Failed to initialize logging, logging={location}, debug={level}: {e}");
        return ExitCode::from(1);
    }

    let startup_fd = match startup_fd {
        None | Some(-1) => None,
        Some(fd) => match adopt_startup_fd(fd) {
            Some(fd) => Some(fd),
            None => {
                // Stock gives up here with its last return code, which is 0.
                log::error!("Failed to set close-on-exec on startup fd");
                return ExitCode::SUCCESS;
            }
        },
    };
    // Stock's become_daemon points stdout at /dev/null; scripts get their own pipe anyway.
    redirect_stdout_to_null();

    let debug_script = config.debug_script_path(&paths.etc_dir);
    match shell::run(ShellOptions {
        paths,
        debug_script,
        startup_fd,
        watch_pid,
    }) {
        Ok(exit) => exit_code(exit.code()),
        Err(e) => {
            log::error!("{e}");
            ExitCode::from(1)
        }
    }
}

/// Takes ownership of the `-S` descriptor and marks it close-on-exec, so that scripts do not
/// keep ctdbd's end of the pipe alive after eventd dies.
fn adopt_startup_fd(fd: i32) -> Option<OwnedFd> {
    // SAFETY: F_GETFD only inspects the descriptor table; an invalid fd yields an error.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return None;
    }
    // SAFETY: as above, on a descriptor just found to be open.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) } < 0 {
        return None;
    }
    // SAFETY: the descriptor is open and was handed to this process to own for its lifetime.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn redirect_stdout_to_null() {
    if let Ok(null) = File::options().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), 1);
    }
}

/// A minimal logger in stock's formats: `<time> <host> ctdb-eventd[<pid>]: <message>` in a file,
/// the bare message on stderr.
/// TODO: replace with `common::logging` once it lands.
mod logger {
    use super::*;

    #[derive(Debug)]
    enum Target {
        Stderr,
        File(File),
    }

    #[derive(Debug)]
    struct Logger {
        level: log::LevelFilter,
        target: Target,
        prefix: String,
    }

    /// CTDB's level names: NOTICE is `info!`, INFO is `debug!`, DEBUG is `trace!`.
    fn parse_level(level: &str) -> Option<log::LevelFilter> {
        let filter = match level.trim().to_ascii_uppercase().as_str() {
            "ERROR" | "ERR" | "0" => log::LevelFilter::Error,
            "WARNING" | "WARN" | "1" => log::LevelFilter::Warn,
            "NOTICE" | "2" => log::LevelFilter::Info,
            "INFO" | "3" => log::LevelFilter::Debug,
            "DEBUG" | "4" | "5" | "6" | "7" | "8" | "9" | "10" => log::LevelFilter::Trace,
            _ => return None,
        };
        Some(filter)
    }

    pub fn init(location: &str, level: &str) -> Result<(), String> {
        let level = parse_level(level).ok_or_else(|| "bad log level".to_string())?;
        let target = match location.strip_prefix("file:") {
            Some("") => Target::Stderr,
            Some(path) => Target::File(
                File::options()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| format!("{path}: {e}"))?,
            ),
            // Syslog is not implemented; stderr keeps the messages somewhere.
            None if location.starts_with("syslog") => Target::Stderr,
            None => return Err("bad log location".into()),
        };
        let host = log_hostname();
        let logger = Logger {
            level,
            target,
            prefix: format!("{host} ctdb-eventd[{}]", std::process::id()),
        };
        log::set_max_level(level);
        log::set_boxed_logger(Box::new(logger)).map_err(|e| e.to_string())
    }

    /// The host name in log lines: in test mode stock fakes it as the last component of
    /// `CTDB_BASE`, so that local daemons can be told apart.
    fn log_hostname() -> String {
        if std::env::var_os("CTDB_TEST_MODE").is_some() {
            if let Some(base) = std::env::var_os("CTDB_BASE") {
                let base = base.to_string_lossy().into_owned();
                return match base.rsplit_once('/') {
                    Some((_, "")) => "unknown".to_string(),
                    Some((_, last)) => last.to_string(),
                    None => base,
                };
            }
        }
        nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .map(|h| h.split('.').next().unwrap_or_default().to_string())
            .unwrap_or_default()
    }

    /// `YYYY-MM-DDTHH:MM:SS.uuuuuu+HH:MM` in local time, as stock writes it.
    fn timestamp() -> String {
        let (sec, usec) = wall_clock_now();
        // SAFETY: an all-zero `tm` is a valid value for localtime_r to overwrite.
        let mut tm: libc::tm = unsafe { std::mem::zeroed() };
        let t: libc::time_t = sec;
        // SAFETY: both pointers refer to live, properly aligned values for the call.
        if unsafe { libc::localtime_r(&t, &mut tm) }.is_null() {
            return format!("{sec}.{usec:06}");
        }
        let offset_min = tm.tm_gmtoff / 60;
        let sign = if offset_min < 0 { '-' } else { '+' };
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{usec:06}{sign}{:02}:{:02}",
            tm.tm_year + 1900,
            tm.tm_mon + 1,
            tm.tm_mday,
            tm.tm_hour,
            tm.tm_min,
            tm.tm_sec,
            offset_min.abs() / 60,
            offset_min.abs() % 60
        )
    }

    impl log::Log for Logger {
        fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
            metadata.level() <= self.level
        }

        fn log(&self, record: &log::Record<'_>) {
            // Only our own messages: dependencies (mio) have their own chatter.
            if !self.enabled(record.metadata()) || !record.target().starts_with("ctdb") {
                return;
            }
            let _ = match &self.target {
                // Stock's stderr logging is the bare message.
                Target::Stderr => {
                    std::io::stderr().write_all(format!("{}\n", record.args()).as_bytes())
                }
                Target::File(file) => {
                    let line = format!("{} {}: {}\n", timestamp(), self.prefix, record.args());
                    let mut file = file;
                    file.write_all(line.as_bytes())
                }
            };
        }

        fn flush(&self) {}
    }
}
