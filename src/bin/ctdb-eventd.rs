//! ctdb-eventd: the event script daemon ctdbd starts as `ctdb-eventd -P <ctdbd pid> -S <fd>`
//! (mirrors `ctdb/event/event_daemon.c`). Exit codes follow stock: 0 after SIGTERM/SIGINT,
//! `ESRCH` when the watched pid died, `EEXIST` when another eventd holds the pid file, `EIO`
//! when the socket cannot be set up, `EINVAL` for a bad configuration, 1 for bad options.

use ctdb::common::logging::{
    debug_level_parse, level_filter_for, CtdbLogger, LogConfig, LogLocation, DEBUG_NOTICE,
};
use ctdb::common::path::{CtdbPaths, Environment};
use ctdb::event::config::EventConfig;
use ctdb::event::shell::{self, ShellOptions};
use std::fs::File;
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
    // Faster than stock, which polls the watched pid every 5 s: when the watched process is
    // our parent (ctdbd starts us), have the kernel send SIGTERM the moment it dies, so that a
    // restarted ctdbd never finds this eventd still holding the socket and pid file.
    if let Some(pid) = watch_pid {
        if pid == nix::unistd::getppid().as_raw() {
            let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM);
            if nix::unistd::getppid().as_raw() != pid {
                return exit_code(libc::ESRCH);
            }
        }
    }
    let env = Environment::from_process_env();
    let interactive = LogLocation::interactive_from_env(&env);
    let paths = match CtdbPaths::from_env(&env) {
        Ok(paths) => paths,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let config = match EventConfig::load(&paths.config_file())
        .and_then(|c| c.validate(&paths.etcdir()).map(|()| c))
    {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            eprintln!("Failed to initialize event config");
            return exit_code(libc::EINVAL);
        }
    };
    // Interactive eventd ignores the configuration and logs NOTICE to stderr.
    let log_config =
        LogLocation::resolve(&config.log_location, interactive).map(|location| LogConfig {
            location,
            level: if interactive {
                DEBUG_NOTICE
            } else {
                debug_level_parse(&config.log_level).unwrap_or(DEBUG_NOTICE)
            },
            app_name: "ctdb-eventd".into(),
        });
    let logger = match log_config
        .map_err(|e| e.to_string())
        .and_then(|c| install_logger(&c, &env))
    {
        Ok(logger) => logger,
        Err(e) => {
            eprintln!(
                "Failed to initialize logging, logging={}, debug={}: {e}",
                config.log_location, config.log_level
            );
            return ExitCode::from(1);
        }
    };

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

    match shell::run(ShellOptions {
        socket: paths.eventd_socket(),
        pid_file: paths.eventd_pidfile(),
        script_dir: paths.etcdir_append("events"),
        debug_script: config.debug_script_path(&paths),
        startup_fd,
        watch_pid,
        logger: Some(logger),
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

/// Forwards our own records to CTDB's logger; dependencies (mio traces every registration)
/// would otherwise fill a DEBUG log with lines stock never writes.
#[derive(Debug)]
struct OwnRecordsOnly(&'static CtdbLogger);

impl log::Log for OwnRecordsOnly {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.target().starts_with("ctdb") && self.0.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            self.0.log(record);
        }
    }

    fn flush(&self) {
        self.0.flush();
    }
}

fn install_logger(config: &LogConfig, env: &Environment) -> Result<&'static CtdbLogger, String> {
    let logger: &'static CtdbLogger = Box::leak(Box::new(
        CtdbLogger::new(config, env).map_err(|e| e.to_string())?,
    ));
    log::set_boxed_logger(Box::new(OwnRecordsOnly(logger))).map_err(|e| e.to_string())?;
    log::set_max_level(level_filter_for(config.level));
    Ok(logger)
}
