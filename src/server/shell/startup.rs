//! What ctdbd reads before it starts: paths, `ctdb.conf`, the nodes file (mirrors
//! `common/path.c`, `server/ctdb_config.c`, `common/ctdb_util.c:ctdb_read_nodes_file`).
//!
//! Interim: minimal private parsers until `common::{path,conf,nodes}` land from the `config`
//! and `events` branches. They cover only what the shell needs; the core gets the rest from the
//! real modules.

use super::logger;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// The compiled-in directories of the Debian 4.17 build.
pub const DEFAULT_ETCDIR: &str = "/etc/ctdb";
pub const DEFAULT_RUNDIR: &str = "/run/ctdb";
pub const DEFAULT_HELPER_BINDIR: &str = "/usr/libexec/ctdb";
/// `CTDB_PORT`, used when `getservbyname("ctdb", "tcp")` knows no better.
pub const CTDB_PORT: u16 = 4379;

/// A configuration problem that stops the daemon before it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Every path the daemon uses, resolved from `CTDB_BASE`, `CTDB_TEST_MODE` and `CTDB_SOCKET`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub test_mode: bool,
    /// `$CTDB_BASE`: where the nodes and public addresses files live.
    pub base: PathBuf,
    pub etcdir: PathBuf,
    pub rundir: PathBuf,
    pub config_file: PathBuf,
    pub socket: PathBuf,
    pub pid_file: PathBuf,
    pub eventd_socket: PathBuf,
    pub nodes_file: PathBuf,
    pub public_addresses_file: PathBuf,
    pub tunables_file: PathBuf,
    pub event_script_dir: PathBuf,
    pub notification_script: PathBuf,
    pub eventd: PathBuf,
}

impl Paths {
    /// Resolves paths as stock does. `env` stands for `std::env::var_os`, so tests need not
    /// touch the process environment.
    pub fn resolve(env: impl Fn(&str) -> Option<String>) -> Result<Paths, ConfigError> {
        let test_mode = env("CTDB_TEST_MODE").is_some();
        let base = env("CTDB_BASE");
        if test_mode && base.is_none() {
            return Err(ConfigError(
                "Broken CTDB setup, CTDB_BASE not set in test mode".into(),
            ));
        }
        let base = PathBuf::from(base.unwrap_or_else(|| DEFAULT_ETCDIR.to_string()));
        let (etcdir, rundir) = if test_mode {
            (base.clone(), base.join("run"))
        } else {
            (PathBuf::from(DEFAULT_ETCDIR), PathBuf::from(DEFAULT_RUNDIR))
        };
        let socket = env("CTDB_SOCKET")
            .map(PathBuf::from)
            .unwrap_or_else(|| rundir.join("ctdbd.socket"));
        let eventd = env("CTDB_EVENTD")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(DEFAULT_HELPER_BINDIR).join("ctdb-eventd"));
        Ok(Paths {
            test_mode,
            config_file: etcdir.join("ctdb.conf"),
            pid_file: rundir.join("ctdbd.pid"),
            eventd_socket: rundir.join("eventd.socket"),
            nodes_file: base.join("nodes"),
            public_addresses_file: base.join("public_addresses"),
            tunables_file: etcdir.join("ctdb.tunables"),
            event_script_dir: base.join("events").join("legacy"),
            notification_script: base.join("notify.sh"),
            socket,
            eventd,
            base,
            etcdir,
            rundir,
        })
    }

    pub fn from_env() -> Result<Paths, ConfigError> {
        Self::resolve(|name| std::env::var(name).ok())
    }
}

/// The parts of `ctdb.conf` the shell needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtdbConf {
    pub log_location: String,
    /// Samba debug level.
    pub log_level: i32,
    pub transport: String,
    pub node_address: Option<IpAddr>,
    pub cluster_lock: Option<String>,
    pub dbdir_volatile: PathBuf,
    pub dbdir_persistent: PathBuf,
    pub dbdir_state: PathBuf,
    pub lock_debug_script: Option<String>,
}

impl Default for CtdbConf {
    fn default() -> Self {
        CtdbConf {
            log_location: "file:/var/log/ctdb/log.ctdb".into(),
            log_level: 3,
            transport: "tcp".into(),
            node_address: None,
            cluster_lock: None,
            dbdir_volatile: "/var/lib/ctdb/volatile".into(),
            dbdir_persistent: "/var/lib/ctdb/persistent".into(),
            dbdir_state: "/var/lib/ctdb/state".into(),
            lock_debug_script: None,
        }
    }
}

impl CtdbConf {
    /// Loads `path`; a missing file means all defaults, as in stock.
    pub fn load(path: &Path) -> Result<CtdbConf, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text).map_err(|e| {
                ConfigError(format!(
                    "Failed to load configuration file {}: {}",
                    path.display(),
                    e.0
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(CtdbConf::default()),
            Err(e) => Err(ConfigError(format!(
                "Failed to load configuration file {}: {e}",
                path.display()
            ))),
        }
    }

    /// An ini file: `[section]`, `key = value`, `#`/`;` comments. Unknown keys are ignored.
    pub fn parse(text: &str) -> Result<CtdbConf, ConfigError> {
        let mut conf = CtdbConf::default();
        let mut section = String::new();
        let mut recovery_lock = None;
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if let Some(rest) = line.strip_prefix('[') {
                let Some(name) = rest.strip_suffix(']') else {
                    return Err(ConfigError(format!("line {}: bad section", n + 1)));
                };
                section = name.trim().to_ascii_lowercase();
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(ConfigError(format!("line {}: expected key = value", n + 1)));
            };
            let key = key.trim().to_ascii_lowercase();
            let value = value.trim();
            match (section.as_str(), key.as_str()) {
                ("logging", "location") => conf.log_location = value.to_string(),
                ("logging", "log level") => {
                    conf.log_level = logger::parse_level(value)
                        .ok_or_else(|| ConfigError(format!("invalid log level '{value}'")))?;
                }
                ("cluster", "transport") => conf.transport = value.to_string(),
                ("cluster", "node address") => {
                    conf.node_address = Some(
                        value
                            .parse()
                            .map_err(|_| ConfigError(format!("invalid node address '{value}'")))?,
                    );
                }
                ("cluster", "cluster lock") => conf.cluster_lock = Some(value.to_string()),
                ("cluster", "recovery lock") => recovery_lock = Some(value.to_string()),
                ("database", "volatile database directory") => conf.dbdir_volatile = value.into(),
                ("database", "persistent database directory") => {
                    conf.dbdir_persistent = value.into()
                }
                ("database", "state database directory") => conf.dbdir_state = value.into(),
                ("database", "lock debug script") => {
                    conf.lock_debug_script = Some(value.to_string())
                }
                _ => {}
            }
        }
        if conf.cluster_lock.is_none() {
            conf.cluster_lock = recovery_lock;
        }
        if logger::LogTarget::parse(&conf.log_location).is_none() {
            return Err(ConfigError(format!(
                "invalid log location '{}'",
                conf.log_location
            )));
        }
        Ok(conf)
    }
}

/// The nodes file: index = PNN, `None` = a deleted (commented-out) node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeList {
    pub addrs: Vec<Option<IpAddr>>,
}

impl NodeList {
    pub fn load(path: &Path) -> Result<NodeList, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError(format!(
                "Failed to read nodes file \"{}\": {e}",
                path.display()
            ))
        })?;
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Result<NodeList, ConfigError> {
        let mut addrs = Vec::new();
        for line in text.lines() {
            let node = line.trim_matches(|c| c == ' ' || c == '\t');
            if node.is_empty() {
                continue;
            }
            if node.starts_with('#') {
                addrs.push(None);
                continue;
            }
            let ip: IpAddr = node
                .parse()
                .map_err(|_| ConfigError(format!("Invalid node address '{node}'")))?;
            addrs.push(Some(ip.to_canonical()));
        }
        Ok(NodeList { addrs })
    }

    /// The PNN of a non-deleted node with this address.
    pub fn pnn_of(&self, ip: IpAddr) -> Option<u32> {
        let ip = ip.to_canonical();
        let index = self.addrs.iter().position(|a| *a == Some(ip))?;
        u32::try_from(index).ok()
    }
}

/// The node port: `getservbyname("ctdb", "tcp")`, else 4379.
pub fn ctdb_port() -> u16 {
    // SAFETY: constant NUL-terminated strings; the result points into libc's static storage and
    // is read immediately, before any other netdb call.
    let entry = unsafe { libc::getservbyname(c"ctdb".as_ptr(), c"tcp".as_ptr()) };
    if entry.is_null() {
        return CTDB_PORT;
    }
    // SAFETY: non-null result of getservbyname, valid until the next netdb call.
    let port = unsafe { (*entry).s_port };
    // s_port holds the port in network byte order in the low 16 bits.
    u16::try_from(port & 0xffff).map_or(CTDB_PORT, u16::from_be)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn test_mode_rebases_run_and_etc_but_not_helpers() {
        let p =
            Paths::resolve(env(&[("CTDB_TEST_MODE", "yes"), ("CTDB_BASE", "/tmp/n0")])).unwrap();
        assert_eq!(p.socket, Path::new("/tmp/n0/run/ctdbd.socket"));
        assert_eq!(p.pid_file, Path::new("/tmp/n0/run/ctdbd.pid"));
        assert_eq!(p.config_file, Path::new("/tmp/n0/ctdb.conf"));
        assert_eq!(p.nodes_file, Path::new("/tmp/n0/nodes"));
        assert_eq!(p.eventd, Path::new("/usr/libexec/ctdb/ctdb-eventd"));
        assert!(Paths::resolve(env(&[("CTDB_TEST_MODE", "yes")])).is_err());

        let p = Paths::resolve(env(&[("CTDB_BASE", "/srv/x"), ("CTDB_SOCKET", "/s")])).unwrap();
        assert_eq!(p.socket, Path::new("/s"));
        assert_eq!(p.config_file, Path::new("/etc/ctdb/ctdb.conf"));
        assert_eq!(p.pid_file, Path::new("/run/ctdb/ctdbd.pid"));
        assert_eq!(p.nodes_file, Path::new("/srv/x/nodes"));
    }

    #[test]
    fn conf_parses_the_keys_we_use_and_ignores_others() {
        let c = CtdbConf::parse(
            "# comment\n[logging]\n  location = file:/tmp/log\n log level = INFO\n\
             [cluster]\nnode address = 127.0.0.2\nrecovery lock = /l\n[whatever]\nx = y\n",
        )
        .unwrap();
        assert_eq!(c.log_location, "file:/tmp/log");
        assert_eq!(c.log_level, 5);
        assert_eq!(c.node_address, Some("127.0.0.2".parse().unwrap()));
        assert_eq!(c.cluster_lock.as_deref(), Some("/l"));
        assert!(CtdbConf::parse("[cluster]\nnode address = nope\n").is_err());
        assert!(CtdbConf::parse("[logging]\nlog level = LOUD\n").is_err());
    }

    #[test]
    fn nodes_file_keeps_deleted_pnns_and_skips_blank_lines() {
        let n = NodeList::parse("127.0.0.1\n\n  # gone\n\t127.0.0.3  \n\n").unwrap();
        assert_eq!(n.addrs.len(), 3);
        assert_eq!(n.addrs[1], None);
        assert_eq!(n.pnn_of("127.0.0.3".parse().unwrap()), Some(2));
        assert_eq!(n.pnn_of("127.0.0.9".parse().unwrap()), None);
        assert_eq!(n.pnn_of("::ffff:127.0.0.1".parse().unwrap()), Some(0));
        assert!(NodeList::parse("not-an-ip\n").is_err());
    }
}
