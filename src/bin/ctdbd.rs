//! `ctdbd`: the clustered TDB daemon (mirrors `ctdb/server/ctdbd.c:main` and
//! `server/ctdb_daemon.c:ctdb_start_daemon`).
//!
//! Start-up order follows stock: options, configuration, logging, fork (unless `-i`; in test
//! mode fork only and keep stdin), pid file, unix socket, signals, node listener and PNN,
//! ctdb-eventd, then the event loop. Exit codes are stock's: 10 when the unix socket cannot be
//! bound, 11 when the pid file cannot be created (another daemon holds it), 1 for other
//! start-up failures.

use ctdb::common::clock::{wall_clock_now, MonotonicClock};
use ctdb::common::conf::{CtdbConf, SECTION_LOGGING};
use ctdb::common::logging::{self, CtdbLogger, LogConfig, LogLocation};
use ctdb::common::nodes::{self, NodeEntry, CTDB_PORT};
use ctdb::common::path::{CtdbPaths, Environment, Helper, ENV_BASE, ENV_DEBUG_LOCKS, ETCDIR};
use ctdb::common::{public_addresses, sys, tunable};
use ctdb::protocol::types::capabilities;
use ctdb::protocol::Timeval;
use ctdb::server::daemon::{Daemon, DaemonConfig, PublicAddress};
use ctdb::server::database::repack::REPACK_HELPER_ARG;
use ctdb::server::database::{DatabaseSet, DbConfig, TdbBackend};
use ctdb::server::effect::Pnn;
use ctdb::server::recoverd::{Extensions, RecoverdConfig};
use ctdb::server::recoverd_shell::{self, RecoverdOptions, RECOVERD_ARG};
use ctdb::server::shell::eventd::Eventd;
use ctdb::server::shell::tcp::{self, Transport, TransportLimits};
use ctdb::server::shell::{node_list, OsHost, Shell, ShellLimits, ShellParts};
use ctdb::server::takeover::{system as takeover_system, FailoverConfig};
use log::{error, info, warn};
use nix::sys::signal::Signal;
use std::net::IpAddr;
use std::os::fd::AsRawFd;

const VERSION: &str = "4.17.12 (ctdb-rs)";

/// A start-up failure and the exit status stock uses for it.
#[derive(Debug)]
enum StartError {
    /// Bad command line: usage already printed.
    Usage,
    /// Configuration, logging, nodes file, database directories, PNN.
    Config(String),
    /// The pid file is locked by another daemon or cannot be written.
    PidFile(String),
    /// The unix socket cannot be bound.
    Socket(String),
    /// Anything else before the loop runs (fork, signals, node listener, eventd).
    Other(String),
}

impl StartError {
    fn exit_code(&self) -> i32 {
        match self {
            StartError::Usage | StartError::Config(_) | StartError::Other(_) => 1,
            StartError::Socket(_) => 10,
            StartError::PidFile(_) => 11,
        }
    }

    fn message(&self) -> Option<&str> {
        match self {
            StartError::Usage => None,
            StartError::Config(m)
            | StartError::PidFile(m)
            | StartError::Socket(m)
            | StartError::Other(m) => Some(m),
        }
    }
}

#[allow(clippy::exit)] // The process's status is the whole point of main.
fn main() {
    let code = match run() {
        Ok(code) => code,
        Err(e) => {
            if let Some(message) = e.message() {
                if log::max_level() == log::LevelFilter::Off {
                    eprintln!("ctdbd: {message}");
                } else {
                    error!("{message}");
                }
            }
            e.exit_code()
        }
    };
    std::process::exit(code);
}

/// Byte for byte what stock's popt prints (it keeps argv[0] out of the usage line).
const HELP: &str = "\
Usage: [OPTION...]
  -i, --interactive     don't fork, log to stderr

Help options:
  -?, --help            Show this help message
      --usage           Display brief usage message
";

const USAGE: &str = "Usage: [-?i] [-?|--help] [--usage] [-i|--interactive]\n";

/// Parses the command line; `Ok(None)` means help was printed and ctdbd should exit 0.
fn parse_args(args: &[String]) -> Result<Option<bool>, StartError> {
    let mut opts = getopts::Options::new();
    opts.optflag("i", "interactive", "don't fork, log to stderr");
    opts.optflag("?", "help", "Show this help message");
    opts.optflag("", "usage", "Display brief usage message");
    let matches = match opts.parse(args) {
        Ok(m) => m,
        Err(e) => {
            let option = match &e {
                getopts::Fail::UnrecognizedOption(name)
                | getopts::Fail::UnexpectedArgument(name)
                | getopts::Fail::OptionDuplicated(name) => {
                    if name.chars().count() == 1 {
                        format!("-{name}")
                    } else {
                        format!("--{name}")
                    }
                }
                other => other.to_string(),
            };
            eprintln!("Invalid option {option}: unknown option");
            return Err(StartError::Usage);
        }
    };
    if matches.opt_present("help") {
        print!("{HELP}");
        return Ok(None);
    }
    if matches.opt_present("usage") {
        print!("{USAGE}");
        return Ok(None);
    }
    if !matches.free.is_empty() {
        print!("{HELP}");
        return Err(StartError::Usage);
    }
    Ok(Some(matches.opt_present("interactive")))
}

/// What start-up learned, before the loop takes over.
#[derive(Debug)]
struct Startup {
    paths: CtdbPaths,
    conf: CtdbConf,
    nodes: Vec<NodeEntry>,
    logger: &'static CtdbLogger,
    interactive: bool,
}

fn run() -> Result<i32, StartError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(RECOVERD_ARG) {
        return run_recoverd(&args[1..]);
    }
    if args.first().map(String::as_str) == Some(REPACK_HELPER_ARG) {
        return Ok(ctdb::server::database::repack::run_repack_helper(
            &args[1..],
        ));
    }
    let Some(interactive) = parse_args(&args)? else {
        return Ok(0);
    };
    // Like stock: the default CTDB_BASE is exported for children (eventd, scripts).
    if std::env::var_os(ENV_BASE).is_none() {
        std::env::set_var(ENV_BASE, ETCDIR);
    }
    let env = Environment::from_process_env();
    let paths = CtdbPaths::from_env(&env).map_err(|e| StartError::Config(e.to_string()))?;
    let loaded =
        CtdbConf::load(&paths.config_file()).map_err(|e| StartError::Config(e.to_string()))?;
    let conf = loaded.conf;

    let (logger, location) = install_logging(&conf, &env, interactive, "ctdbd")?;
    let log_level = conf.logging.log_level.0;
    for warning in &loaded.warnings {
        warn!("{warning}");
    }
    if interactive {
        std::env::set_var(logging::ENV_INTERACTIVE, "true");
    }
    for (name, value) in LogConfig::exported_env(&location, log_level) {
        std::env::set_var(name, value);
    }
    info!("CTDB starting on node");

    if conf.cluster.transport != "tcp" {
        return Err(StartError::Config(format!(
            "ctdb_set_transport failed - unknown transport '{}'",
            conf.cluster.transport
        )));
    }
    if conf.cluster.effective_cluster_lock().is_none() {
        warn!("Cluster lock not set");
    }
    let nodes = nodes::load(&paths.nodes_file()).map_err(|e| StartError::Config(e.to_string()))?;
    for (what, dir) in [
        ("Volatile", &conf.database.volatile_dir),
        ("Persistent", &conf.database.persistent_dir),
        ("State", &conf.database.state_dir),
    ] {
        if !dir.is_dir() {
            return Err(StartError::Config(format!(
                "{what} database directory {} does not exist",
                dir.display()
            )));
        }
    }
    if let Some(script) = &conf.database.lock_debug_script {
        std::env::set_var(ENV_DEBUG_LOCKS, script);
    }
    let startup = Startup {
        paths,
        conf,
        nodes,
        logger,
        interactive,
    };
    start_daemon(startup)
}

/// Installs the logger `[logging]` asks for (stderr when interactive); returns it and the
/// location string, which children inherit through the environment.
fn install_logging(
    conf: &CtdbConf,
    env: &Environment,
    interactive: bool,
    app_name: &str,
) -> Result<(&'static CtdbLogger, String), StartError> {
    let location = if interactive {
        "file:".to_string()
    } else {
        conf.store
            .get(SECTION_LOGGING, "location")
            .and_then(|(value, _)| value.as_str().map(str::to_owned))
            .unwrap_or_else(LogLocation::default_location)
    };
    let log_config = LogConfig {
        location: LogLocation::resolve(&location, interactive)
            .map_err(|e| StartError::Config(e.to_string()))?,
        level: conf.logging.log_level.0,
        app_name: app_name.to_string(),
    };
    let logger = CtdbLogger::install(&log_config, env)
        .map_err(|e| StartError::Config(format!("Failed to initialise logging: {e}")))?;
    Ok((logger, location))
}

/// The recovery daemon: ctdbd re-executes itself as `ctdbd --ctdb-rs-recovery-daemon <pnn>`.
/// It reads the same configuration and logs to the same place as `ctdb-recoverd`.
fn run_recoverd(args: &[String]) -> Result<i32, StartError> {
    let pnn: Pnn = args
        .first()
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| StartError::Config("recovery daemon: missing PNN".into()))?;
    let env = Environment::from_process_env();
    let paths = CtdbPaths::from_env(&env).map_err(|e| StartError::Config(e.to_string()))?;
    let conf = CtdbConf::load(&paths.config_file())
        .map_err(|e| StartError::Config(e.to_string()))?
        .conf;
    let interactive = std::env::var_os(logging::ENV_INTERACTIVE).is_some();
    let (logger, _) = install_logging(&conf, &env, interactive, "ctdb-recoverd")?;
    let nodes = nodes::load(&paths.nodes_file()).map_err(|e| StartError::Config(e.to_string()))?;
    let mut caps = capabilities::DEFAULT;
    if !conf.legacy.lmaster_capability {
        caps &= !capabilities::LMASTER;
    }
    if !conf.cluster.leader_capability {
        caps &= !capabilities::RECMASTER;
    }
    let (now_s, now_us) = wall_clock_now();
    let ctdbd_pid = nix::unistd::getppid().as_raw();
    let config = RecoverdConfig {
        pnn,
        num_nodes: u32::try_from(nodes.len()).unwrap_or(u32::MAX),
        cluster_lock: conf.cluster.effective_cluster_lock().map(str::to_owned),
        leader_timeout_s: conf.cluster.leader_timeout,
        capabilities: caps,
        tunables: tunable::Tunables::default(),
        failover_disabled: conf.failover.disabled,
        check_public_ips: !paths.test_mode(),
        fast_start: paths.test_mode(),
        seed: u64::from(std::process::id()) ^ (now_s as u64) ^ ((now_us as u64) << 20),
        extensions: Extensions::default(),
    };
    info!("monitor_cluster starting");
    Ok(recoverd_shell::run(RecoverdOptions {
        socket: paths.ctdbd_socket(),
        ctdbd_pid,
        config,
        recovery_helper: paths.helper(Helper::Recovery),
        takeover_helper: paths.helper(Helper::Takeover),
        cluster_mutex_helper: paths.helper(Helper::ClusterMutex),
        nodes_file: paths.nodes_file(),
        state_dir: conf.database.state_dir.clone(),
        logger: Some(logger),
    }))
}

/// `ctdb_start_daemon`.
fn start_daemon(startup: Startup) -> Result<i32, StartError> {
    let paths = &startup.paths;
    if !startup.interactive {
        sys::daemonize(paths.test_mode()).map_err(|e| StartError::Other(e.to_string()))?;
    }
    sys::ignore_sigpipe().map_err(|e| StartError::Other(e.to_string()))?;
    ignore_sigusr1();
    ctdb::common::heap::reuse_freed_buffers();
    let pid = std::process::id();
    error!("Starting CTDBD (Version {VERSION}) as PID: {pid}");

    let pid_path = paths.ctdbd_pidfile();
    let pid_file = sys::PidFile::create(&pid_path)
        .map_err(|e| StartError::PidFile(format!("Failed to create PID file: {e}")))?;
    info!("Created PID file {}", pid_path.display());
    let socket_path = paths.ctdbd_socket();
    let unix_listener = sys::bind_unix_socket(&socket_path)
        .map_err(|e| StartError::Socket(format!("{e}; Cannot continue.  Exiting!")))?;
    info!("Listening to ctdb socket {}", socket_path.display());
    // Until the shell owns it, a failed start removes the socket again.
    let mut socket_guard = SocketGuard(Some(socket_path.clone()));
    // As stock: real-time unless configured off or in test mode, and no start without it.
    if startup.conf.legacy.realtime_scheduling && !paths.test_mode() {
        sys::set_realtime_scheduler().map_err(|e| {
            StartError::Other(format!("Unable to set scheduler to SCHED_FIFO ({e})"))
        })?;
        info!("Set real-time scheduler priority");
    }

    let signals = sys::signal_fd(&[
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGCHLD,
    ])
    .map_err(|e| StartError::Other(format!("Failed to set up signal handling: {e}")))?;
    let watch_stdin = paths.test_mode() && sys::stdin_is_fifo();

    let port = CTDB_PORT;
    let (pnn, node_listener) = bind_node_address(&startup, port)?;
    info!("PNN is {pnn}");
    let public_addresses = public_addresses::load(
        &paths.public_addresses_file(),
        takeover_system::iface_exists,
    )
    .map_err(|e| StartError::Other(format!("Unable to setup public IP addresses: {e}")))?;

    // Stock starts eventd before it binds the node address; we check everything that can
    // fail on configuration first, so that a bad setup never leaves a stray eventd behind.
    let eventd = Eventd::start(&paths.helper(Helper::Eventd), &paths.eventd_socket(), pid)
        .map_err(|e| StartError::Other(format!("Failed to start event daemon: {e}")))?;

    let limits = ShellLimits::default();
    let addresses: Vec<Option<IpAddr>> = startup
        .nodes
        .iter()
        .map(|n| (!n.deleted).then(|| n.addr.ip()))
        .collect();
    let transport = Transport::new(
        pnn,
        &addresses,
        port,
        node_listener,
        TransportLimits {
            max_frame: limits.max_frame,
            queue: limits.node_queue,
            read_budget: limits.read_budget,
        },
    )
    .map_err(|e| StartError::Other(format!("transport failed to initialise: {e}")))?;

    let host = OsHost {
        nodes_file: Some(paths.nodes_file()),
    };
    let clock = MonotonicClock::new();
    let config = daemon_config(&startup, pnn, public_addresses);
    let conf = &startup.conf;
    let dbs = DatabaseSet::new(
        DbConfig {
            pnn,
            volatile_dir: conf.database.volatile_dir.clone(),
            persistent_dir: conf.database.persistent_dir.clone(),
            state_dir: conf.database.state_dir.clone(),
            tdb_mutexes: conf.database.tdb_mutexes,
        },
        Box::new(TdbBackend),
    )
    .map_err(|e| StartError::Other(format!("Failed to open the database layer: {e}")))?;
    let core = Daemon::new(config, dbs, clock.now(), &host).map_err(StartError::Other)?;
    let mut shell = Shell::new(ShellParts {
        core,
        clock,
        unix_listener,
        socket_path,
        pid_file: Some(pid_file),
        transport,
        eventd: Some(eventd),
        logger: Some(startup.logger),
        host,
        signals: Some(signals),
        watch_stdin,
        limits,
        cluster_mutex_helper: paths.helper(Helper::ClusterMutex),
        recoverd_argv: Some(recoverd_argv(pnn)?),
    })
    .map_err(|e| StartError::Other(format!("Failed to set up the event loop: {e}")))?;
    socket_guard.0 = None;
    let (_, code) = shell.run();
    Ok(code)
}

/// How ctdbd starts its recovery daemon: its own binary in recovery-daemon mode.
fn recoverd_argv(pnn: Pnn) -> Result<Vec<String>, StartError> {
    let exe = std::env::current_exe()
        .map_err(|e| StartError::Other(format!("Cannot find the ctdbd binary: {e}")))?;
    Ok(vec![
        exe.display().to_string(),
        RECOVERD_ARG.to_string(),
        pnn.to_string(),
    ])
}

/// Removes the unix socket when start-up fails after binding it.
#[derive(Debug)]
struct SocketGuard(Option<std::path::PathBuf>);

impl Drop for SocketGuard {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Everything the core needs from start-up (`ctdbd.c:main` and the start of
/// `ctdb_start_daemon`).
fn daemon_config(
    startup: &Startup,
    pnn: Pnn,
    public: Vec<public_addresses::PublicAddress>,
) -> DaemonConfig {
    let conf = &startup.conf;
    let tunables = match tunable::load_file(&startup.paths.tunables_file()) {
        Ok(file) => {
            // Stock logs bad lines and carries on with the good ones.
            for e in &file.errors {
                error!("{e}");
            }
            file.tunables
        }
        Err(e) => {
            error!("Failed to read tunables: {e}");
            tunable::Tunables::default()
        }
    };
    let mut caps = capabilities::DEFAULT;
    if !conf.legacy.lmaster_capability {
        caps &= !capabilities::LMASTER;
    }
    if !conf.cluster.leader_capability {
        caps &= !capabilities::RECMASTER;
    }
    let (tv_sec, tv_usec) = wall_clock_now();
    DaemonConfig {
        pnn,
        nodes: node_list(&startup.nodes),
        public_addresses: public
            .into_iter()
            .map(|p| PublicAddress {
                addr: p.addr,
                mask_bits: p.mask_bits,
                ifaces: p.ifaces,
            })
            .collect(),
        tunables,
        cluster_lock: conf.cluster.effective_cluster_lock().map(str::to_owned),
        capabilities: caps,
        log_level: startup.logger.level(),
        pid: i32::try_from(std::process::id()).unwrap_or(i32::MAX),
        start_time: Timeval { tv_sec, tv_usec },
        start_as_stopped: conf.legacy.start_as_stopped,
        start_as_disabled: conf.legacy.start_as_disabled,
        test_mode: startup.paths.test_mode(),
        failover: FailoverConfig {
            disabled: conf.failover.disabled,
            check_public_ips: !startup.paths.test_mode(),
            have_ip: takeover_system::have_ip,
            iface_exists: takeover_system::iface_exists,
            public_addresses_file: Some(startup.paths.public_addresses_file()),
            read_public_addresses: takeover_system::read_public_addresses,
        },
    }
}

fn ignore_sigusr1() {
    use nix::sys::signal::{signal, SigHandler};
    // SAFETY: installing SIG_IGN has no handler code that could run concurrently.
    if let Err(e) = unsafe { signal(Signal::SIGUSR1, SigHandler::SigIgn) } {
        warn!("Failed to ignore SIGUSR1: {e}");
    }
}

/// Binds the node listener and finds our PNN: the configured `node address` (fatal if it is
/// not in the nodes file), or else the first nodes-file address that can be bound, tried under
/// a lock on `/run/ctdb/.socket_lock` so that daemons starting together pick different ones
/// (`ctdb_tcp_listen_automatic`).
fn bind_node_address(
    startup: &Startup,
    port: u16,
) -> Result<(Pnn, std::net::TcpListener), StartError> {
    let nodes = &startup.nodes;
    let pnn_of = |ip: IpAddr| {
        let ip = ip.to_canonical();
        nodes
            .iter()
            .find(|n| !n.deleted && n.addr.ip().to_canonical() == ip)
            .map(|n| n.pnn)
    };
    if let Some(address) = startup.conf.cluster.node_address {
        let pnn = pnn_of(address).ok_or_else(|| {
            StartError::Config("Can not determine PNN - unknown node address".into())
        })?;
        let listener = tcp::listen(address, port).map_err(|e| {
            StartError::Other(format!(
                "Failed to bind() to socket {address}:{port}: {e}; Failed to start listening on the CTDB socket"
            ))
        })?;
        return Ok((pnn, listener));
    }
    if nodes.iter().all(|n| n.deleted) {
        return Err(StartError::Config(
            "No nodes available to attempt bind to - is the nodes file empty?".into(),
        ));
    }
    let lock_path = CtdbPaths::socket_lock_file();
    let lock_file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(|e| StartError::Other(format!("Unable to open {}: {e}", lock_path.display())))?;
    let lock = libc::flock {
        l_type: libc::F_WRLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 1,
        l_pid: 0,
    };
    nix::fcntl::fcntl(lock_file.as_raw_fd(), nix::fcntl::FcntlArg::F_SETLKW(&lock))
        .map_err(|e| StartError::Other(format!("Unable to lock {}: {e}", lock_path.display())))?;
    for node in nodes.iter().filter(|n| !n.deleted) {
        let ip = node.addr.ip();
        match tcp::listen(ip, port) {
            Ok(listener) => {
                info!("ctdb chose network address {}", display_addr(ip, port));
                return Ok((node.pnn, listener));
            }
            Err(e) => log::debug!("Failed to bind() to {ip}: {e}"),
        }
    }
    Err(StartError::Other(
        "Unable to bind to any of the node addresses - giving up".into(),
    ))
}

fn display_addr(ip: IpAddr, port: u16) -> String {
    std::net::SocketAddr::new(ip, port).to_string()
}
