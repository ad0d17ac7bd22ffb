//! Where CTDB keeps its files (mirrors `ctdb/common/path.c` and `path_tool.c`, plus the few
//! paths `server/ctdbd.c`, `ctdb_takeover.c`, `ctdb_lock.c`, `eventscript.c` and
//! `common/ctdb_util.c:ctdb_set_helper` build for themselves).
//!
//! Everything is a pure function of an explicit [`Environment`] so that tests never touch the
//! process environment. Paths are glued together as strings, exactly like the C `"%s/%s"`, so
//! `CTDB_BASE=/tmp/x/` yields `/tmp/x//run` just as stock `ctdb-path rundir` prints it.
//!
//! Two rules decide almost everything:
//! * **Test mode** (`CTDB_TEST_MODE` set, even to the empty string): the etc dir becomes
//!   `$CTDB_BASE` and the run, var and data dirs become `$CTDB_BASE/run`, `/var` and `/share`.
//!   `CTDB_BASE` is then mandatory (stock aborts without it).
//! * **`$CTDB_BASE`** (default: the compiled etc dir) locates the nodes file, the public
//!   addresses, ctdbd's event script dir, `notify.sh` and `debug_locks.sh`, in *every* mode, while
//!   the config and tunables files follow the etc dir. Outside test mode the two can differ.
//!
//! The compiled-in directories are constants that a build can override through environment
//! variables read by `option_env!` (`CTDB_RS_ETCDIR`, `CTDB_RS_RUNDIR`, `CTDB_RS_VARDIR`,
//! `CTDB_RS_DATADIR`, `CTDB_RS_HELPER_DIR`, `CTDB_RS_LOGDIR`); the defaults are those of the
//! Debian build of CTDB 4.17, so that our daemon and stock tools find each other.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::PathBuf;

/// Picks a build-time override or the Debian default.
macro_rules! compiled_dir {
    ($env:literal, $default:literal) => {
        match option_env!($env) {
            Some(dir) => dir,
            None => $default,
        }
    };
}

/// `CTDB_ETCDIR`.
pub const ETCDIR: &str = compiled_dir!("CTDB_RS_ETCDIR", "/etc/ctdb");
/// `CTDB_RUNDIR`.
pub const RUNDIR: &str = compiled_dir!("CTDB_RS_RUNDIR", "/run/ctdb");
/// `CTDB_VARDIR`.
pub const VARDIR: &str = compiled_dir!("CTDB_RS_VARDIR", "/var/lib/ctdb");
/// `CTDB_DATADIR`.
pub const DATADIR: &str = compiled_dir!("CTDB_RS_DATADIR", "/usr/share/ctdb");
/// `CTDB_HELPER_BINDIR`: stock helpers and ours live here. Never rebased in test mode.
pub const HELPER_DIR: &str = compiled_dir!("CTDB_RS_HELPER_DIR", "/usr/libexec/ctdb");
/// `LOGDIR`, home of the default log file. Never rebased in test mode.
pub const LOGDIR: &str = compiled_dir!("CTDB_RS_LOGDIR", "/var/log/ctdb");

/// Name of the configuration file in the etc dir (`CTDB_CONFIG_FILE`).
pub const CONFIG_FILE_NAME: &str = "ctdb.conf";
/// Name of the tunables file in the etc dir (`server/ctdb_tunables.c`).
pub const TUNABLES_FILE_NAME: &str = "ctdb.tunables";

pub const ENV_TEST_MODE: &str = "CTDB_TEST_MODE";
pub const ENV_BASE: &str = "CTDB_BASE";
pub const ENV_SOCKET: &str = "CTDB_SOCKET";
pub const ENV_DEBUG_LOCKS: &str = "CTDB_DEBUG_LOCKS";

/// A snapshot of environment variables. Lookups are exact; a variable set to the empty string
/// is set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Environment {
    vars: BTreeMap<OsString, OsString>,
}

impl Environment {
    pub fn new() -> Self {
        Self::default()
    }

    /// The current process environment.
    pub fn from_process_env() -> Self {
        std::env::vars_os().collect()
    }

    /// Builder-style insertion, handy in tests.
    pub fn with(mut self, name: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.set(name, value);
        self
    }

    pub fn set(&mut self, name: impl Into<OsString>, value: impl Into<OsString>) {
        self.vars.insert(name.into(), value.into());
    }

    pub fn remove(&mut self, name: impl AsRef<OsStr>) {
        self.vars.remove(name.as_ref());
    }

    pub fn get(&self, name: impl AsRef<OsStr>) -> Option<&OsStr> {
        self.vars.get(name.as_ref()).map(OsString::as_os_str)
    }

    pub fn contains(&self, name: impl AsRef<OsStr>) -> bool {
        self.vars.contains_key(name.as_ref())
    }

    /// Every variable, in name order (for handing to a child process).
    pub fn iter(&self) -> impl Iterator<Item = (&OsStr, &OsStr)> {
        self.vars
            .iter()
            .map(|(k, v)| (k.as_os_str(), v.as_os_str()))
    }
}

impl<K: Into<OsString>, V: Into<OsString>> FromIterator<(K, V)> for Environment {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Environment {
            vars: iter
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }
}

/// Why paths could not be worked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathError {
    /// `CTDB_TEST_MODE` is set but `CTDB_BASE` is not. Stock logs "Broken CTDB setup, CTDB_BASE
    /// not set in test mode" and aborts.
    TestModeWithoutBase,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathError::TestModeWithoutBase => {
                write!(f, "Broken CTDB setup, CTDB_BASE not set in test mode")
            }
        }
    }
}

impl std::error::Error for PathError {}

/// A helper program ctdbd (or the `ctdb` tool) runs, with the variable that overrides its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Helper {
    /// `ctdb-eventd`, started by ctdbd.
    Eventd,
    /// `ctdb-event`, run by `ctdb event ...`.
    EventTool,
    /// `ctdb_recovery_helper`, run by the recovery daemon.
    Recovery,
    /// `ctdb_takeover_helper`, run by the recovery daemon.
    Takeover,
    /// `ctdb_mutex_fcntl_helper`, the cluster lock helper for a plain lock file.
    ClusterMutex,
    /// `ctdb_lock_helper`, which takes TDB locks on ctdbd's behalf.
    Lock,
}

impl Helper {
    pub const ALL: [Helper; 6] = [
        Helper::Eventd,
        Helper::EventTool,
        Helper::Recovery,
        Helper::Takeover,
        Helper::ClusterMutex,
        Helper::Lock,
    ];

    /// The environment variable that replaces the default path.
    pub fn env_var(self) -> &'static str {
        match self {
            Helper::Eventd => "CTDB_EVENTD",
            Helper::EventTool => "CTDB_EVENT_HELPER",
            Helper::Recovery => "CTDB_RECOVERY_HELPER",
            Helper::Takeover => "CTDB_TAKEOVER_HELPER",
            Helper::ClusterMutex => "CTDB_CLUSTER_MUTEX_HELPER",
            Helper::Lock => "CTDB_LOCK_HELPER",
        }
    }

    /// The program's file name in [`HELPER_DIR`].
    pub fn file_name(self) -> &'static str {
        match self {
            Helper::Eventd => "ctdb-eventd",
            Helper::EventTool => "ctdb-event",
            Helper::Recovery => "ctdb_recovery_helper",
            Helper::Takeover => "ctdb_takeover_helper",
            Helper::ClusterMutex => "ctdb_mutex_fcntl_helper",
            Helper::Lock => "ctdb_lock_helper",
        }
    }
}

/// Concatenates like C's `"%s/%s"`: no normalisation, and an absolute `tail` does not replace
/// `head` the way `Path::join` would.
fn concat(head: &OsStr, tail: impl AsRef<OsStr>) -> PathBuf {
    let mut out = OsString::with_capacity(head.len() + 1 + tail.as_ref().len());
    out.push(head);
    out.push("/");
    out.push(tail);
    PathBuf::from(out)
}

/// The paths of one process, resolved from its environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtdbPaths {
    /// `Some($CTDB_BASE)` in test mode.
    test_base: Option<OsString>,
    /// `$CTDB_BASE`, or the compiled etc dir when unset.
    ctdb_base: OsString,
    socket_override: Option<OsString>,
    debug_locks_override: Option<OsString>,
    helper_overrides: BTreeMap<&'static str, OsString>,
}

impl CtdbPaths {
    /// Mirrors `path.c:path_set_basedir` and ctdbd's `CTDB_BASE` default.
    pub fn from_env(env: &Environment) -> Result<Self, PathError> {
        let base = env.get(ENV_BASE).map(OsStr::to_os_string);
        let test_base = if env.contains(ENV_TEST_MODE) {
            Some(base.clone().ok_or(PathError::TestModeWithoutBase)?)
        } else {
            None
        };
        let helper_overrides = Helper::ALL
            .iter()
            .filter_map(|h| Some((h.env_var(), env.get(h.env_var())?.to_os_string())))
            .collect();
        Ok(CtdbPaths {
            test_base,
            ctdb_base: base.unwrap_or_else(|| OsString::from(ETCDIR)),
            socket_override: env.get(ENV_SOCKET).map(OsStr::to_os_string),
            debug_locks_override: env.get(ENV_DEBUG_LOCKS).map(OsStr::to_os_string),
            helper_overrides,
        })
    }

    /// [`CtdbPaths::from_env`] on the current process environment.
    pub fn from_process_env() -> Result<Self, PathError> {
        Self::from_env(&Environment::from_process_env())
    }

    pub fn test_mode(&self) -> bool {
        self.test_base.is_some()
    }

    /// A compiled directory, or `$CTDB_BASE[/subdir]` in test mode (`path.c:path_construct`).
    fn dir(&self, compiled: &str, test_subdir: Option<&str>) -> PathBuf {
        match (&self.test_base, test_subdir) {
            (None, _) => PathBuf::from(compiled),
            (Some(base), None) => PathBuf::from(base),
            (Some(base), Some(subdir)) => concat(base, subdir),
        }
    }

    pub fn etcdir(&self) -> PathBuf {
        self.dir(ETCDIR, None)
    }
    pub fn rundir(&self) -> PathBuf {
        self.dir(RUNDIR, Some("run"))
    }
    pub fn vardir(&self) -> PathBuf {
        self.dir(VARDIR, Some("var"))
    }
    pub fn datadir(&self) -> PathBuf {
        self.dir(DATADIR, Some("share"))
    }

    pub fn etcdir_append(&self, path: impl AsRef<OsStr>) -> PathBuf {
        concat(self.etcdir().as_os_str(), path)
    }
    pub fn rundir_append(&self, path: impl AsRef<OsStr>) -> PathBuf {
        concat(self.rundir().as_os_str(), path)
    }
    pub fn vardir_append(&self, path: impl AsRef<OsStr>) -> PathBuf {
        concat(self.vardir().as_os_str(), path)
    }
    pub fn datadir_append(&self, path: impl AsRef<OsStr>) -> PathBuf {
        concat(self.datadir().as_os_str(), path)
    }

    /// `etcdir/ctdb.conf`.
    pub fn config_file(&self) -> PathBuf {
        self.etcdir_append(CONFIG_FILE_NAME)
    }

    /// `rundir/<daemon>.socket`; for `"ctdbd"`, `$CTDB_SOCKET` wins when set.
    pub fn socket(&self, daemon: &str) -> PathBuf {
        if daemon == "ctdbd" {
            if let Some(socket) = &self.socket_override {
                return PathBuf::from(socket);
            }
        }
        self.rundir_append(format!("{daemon}.socket"))
    }

    /// `rundir/<daemon>.pid`.
    pub fn pidfile(&self, daemon: &str) -> PathBuf {
        self.rundir_append(format!("{daemon}.pid"))
    }

    pub fn ctdbd_socket(&self) -> PathBuf {
        self.socket("ctdbd")
    }
    pub fn ctdbd_pidfile(&self) -> PathBuf {
        self.pidfile("ctdbd")
    }
    pub fn eventd_socket(&self) -> PathBuf {
        self.socket("eventd")
    }
    pub fn eventd_pidfile(&self) -> PathBuf {
        self.pidfile("eventd")
    }

    /// `etcdir/ctdb.tunables`.
    pub fn tunables_file(&self) -> PathBuf {
        self.etcdir_append(TUNABLES_FILE_NAME)
    }

    /// `$CTDB_BASE`, defaulting to the compiled etc dir. ctdbd exports this value (without
    /// overriding an existing one) so that event scripts see it.
    pub fn ctdb_base(&self) -> PathBuf {
        PathBuf::from(&self.ctdb_base)
    }

    /// `$CTDB_BASE/nodes`.
    pub fn nodes_file(&self) -> PathBuf {
        concat(&self.ctdb_base, "nodes")
    }

    /// `$CTDB_BASE/public_addresses` (unless the daemon was given another file).
    pub fn public_addresses_file(&self) -> PathBuf {
        concat(&self.ctdb_base, "public_addresses")
    }

    /// ctdbd's own idea of the legacy event scripts, `$CTDB_BASE/events/legacy`.
    pub fn legacy_event_script_dir(&self) -> PathBuf {
        concat(&self.ctdb_base, "events/legacy")
    }

    /// Where ctdb-eventd looks for a component's scripts: `etcdir/events/<component>`.
    pub fn event_script_dir(&self, component: &str) -> PathBuf {
        self.etcdir_append(format!("events/{component}"))
    }

    /// Where `ctdb-event script list` finds the scripts CTDB ships: `datadir/events/<component>`.
    pub fn shipped_event_script_dir(&self, component: &str) -> PathBuf {
        self.datadir_append(format!("events/{component}"))
    }

    /// `$CTDB_BASE/notify.sh`.
    pub fn notify_script(&self) -> PathBuf {
        concat(&self.ctdb_base, "notify.sh")
    }

    /// The lock debugging script: `$CTDB_DEBUG_LOCKS` (which ctdbd sets from
    /// `[database] lock debug script`), else `$CTDB_BASE/debug_locks.sh`.
    pub fn debug_locks_script(&self) -> PathBuf {
        match &self.debug_locks_override {
            Some(path) => PathBuf::from(path),
            None => concat(&self.ctdb_base, "debug_locks.sh"),
        }
    }

    /// A helper's path: its environment variable when set, else `HELPER_DIR/<name>`
    /// (`ctdb_util.c:ctdb_set_helper`; stock additionally checks that the file is executable).
    pub fn helper(&self, helper: Helper) -> PathBuf {
        match self.helper_overrides.get(helper.env_var()) {
            Some(path) => PathBuf::from(path),
            None => concat(OsStr::new(HELPER_DIR), helper.file_name()),
        }
    }

    /// `file:LOGDIR/log.ctdb`, the `[logging] location` default. Not rebased in test mode.
    pub fn default_log_location() -> String {
        format!("file:{LOGDIR}/log.ctdb")
    }

    /// The `[database]` directory defaults: compiled `VARDIR/volatile`, `/persistent`,
    /// `/state`. Stock does not rebase these in test mode (the test scripts set them).
    pub fn default_volatile_db_dir() -> PathBuf {
        concat(OsStr::new(VARDIR), "volatile")
    }
    pub fn default_persistent_db_dir() -> PathBuf {
        concat(OsStr::new(VARDIR), "persistent")
    }
    pub fn default_state_db_dir() -> PathBuf {
        concat(OsStr::new(VARDIR), "state")
    }

    /// `RUNDIR/.socket_lock`, which ctdbd locks while choosing its node address. Stock builds it
    /// from the compiled dir even in test mode.
    pub fn socket_lock_file() -> PathBuf {
        concat(OsStr::new(RUNDIR), ".socket_lock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(vars: &[(&str, &str)]) -> CtdbPaths {
        CtdbPaths::from_env(&vars.iter().copied().collect()).unwrap()
    }

    fn s(path: PathBuf) -> String {
        path.into_os_string().into_string().unwrap()
    }

    /// The literal expectations below are the Debian layout; a build that moves the compiled
    /// directories (for a `make install PREFIX=...`) checks only the layout-independent rules.
    fn debian_layout() -> bool {
        (ETCDIR, RUNDIR, VARDIR, DATADIR, HELPER_DIR, LOGDIR)
            == (
                "/etc/ctdb",
                "/run/ctdb",
                "/var/lib/ctdb",
                "/usr/share/ctdb",
                "/usr/libexec/ctdb",
                "/var/log/ctdb",
            )
    }

    /// Answers of stock `/usr/libexec/ctdb/ctdb-path` 4.17.12 (Debian), recorded with
    /// `ctdb-path <command>` under the environments below.
    #[test]
    fn matches_stock_ctdb_path_in_normal_mode() {
        if !debian_layout() {
            return;
        }
        let p = paths(&[]);
        assert!(!p.test_mode());
        assert_eq!(s(p.config_file()), "/etc/ctdb/ctdb.conf");
        assert_eq!(s(p.pidfile("ctdbd")), "/run/ctdb/ctdbd.pid");
        assert_eq!(s(p.socket("ctdbd")), "/run/ctdb/ctdbd.socket");
        assert_eq!(s(p.socket("eventd")), "/run/ctdb/eventd.socket");
        assert_eq!(s(p.pidfile("eventd")), "/run/ctdb/eventd.pid");
        assert_eq!(s(p.etcdir()), "/etc/ctdb");
        assert_eq!(s(p.rundir()), "/run/ctdb");
        assert_eq!(s(p.vardir()), "/var/lib/ctdb");
        assert_eq!(s(p.datadir()), "/usr/share/ctdb");
        assert_eq!(s(p.vardir_append("foo")), "/var/lib/ctdb/foo");
        assert_eq!(
            s(p.etcdir_append("events/legacy")),
            "/etc/ctdb/events/legacy"
        );
        assert_eq!(s(p.rundir_append("x/y")), "/run/ctdb/x/y");
        assert_eq!(
            s(p.datadir_append("events/legacy")),
            "/usr/share/ctdb/events/legacy"
        );
    }

    #[test]
    fn matches_stock_ctdb_path_in_test_mode() {
        // CTDB_TEST_MODE=1 CTDB_BASE=/tmp/x ctdb-path ...
        let p = paths(&[("CTDB_TEST_MODE", "1"), ("CTDB_BASE", "/tmp/x")]);
        assert!(p.test_mode());
        assert_eq!(s(p.config_file()), "/tmp/x/ctdb.conf");
        assert_eq!(s(p.pidfile("ctdbd")), "/tmp/x/run/ctdbd.pid");
        assert_eq!(s(p.socket("ctdbd")), "/tmp/x/run/ctdbd.socket");
        assert_eq!(s(p.eventd_socket()), "/tmp/x/run/eventd.socket");
        assert_eq!(s(p.eventd_pidfile()), "/tmp/x/run/eventd.pid");
        assert_eq!(s(p.etcdir()), "/tmp/x");
        assert_eq!(s(p.rundir()), "/tmp/x/run");
        assert_eq!(s(p.vardir()), "/tmp/x/var");
        assert_eq!(s(p.datadir()), "/tmp/x/share");
        assert_eq!(s(p.vardir_append("foo")), "/tmp/x/var/foo");
        assert_eq!(s(p.etcdir_append("events/legacy")), "/tmp/x/events/legacy");
        assert_eq!(s(p.rundir_append("x/y")), "/tmp/x/run/x/y");
        assert_eq!(
            s(p.datadir_append("events/legacy")),
            "/tmp/x/share/events/legacy"
        );
    }

    #[test]
    fn matches_stock_ctdb_path_quirks() {
        // CTDB_SOCKET=/s CTDB_TEST_MODE=1 CTDB_BASE=/tmp/x/ : no normalisation of the slash,
        // and CTDB_SOCKET only replaces ctdbd's socket.
        let p = paths(&[
            ("CTDB_SOCKET", "/s"),
            ("CTDB_TEST_MODE", "1"),
            ("CTDB_BASE", "/tmp/x/"),
        ]);
        assert_eq!(s(p.config_file()), "/tmp/x//ctdb.conf");
        assert_eq!(s(p.ctdbd_pidfile()), "/tmp/x//run/ctdbd.pid");
        assert_eq!(s(p.ctdbd_socket()), "/s");
        assert_eq!(s(p.eventd_socket()), "/tmp/x//run/eventd.socket");
        assert_eq!(s(p.etcdir()), "/tmp/x/");
        assert_eq!(s(p.rundir()), "/tmp/x//run");
        assert_eq!(s(p.vardir_append("foo")), "/tmp/x//var/foo");
        // CTDB_TEST_MODE= (empty) still means test mode: ctdb-path etcdir prints /b.
        let empty = paths(&[("CTDB_TEST_MODE", ""), ("CTDB_BASE", "/b")]);
        assert_eq!(s(empty.etcdir()), "/b");
        // CTDB_TEST_MODE=1 CTDB_BASE= ctdb-path rundir prints /run.
        let blank = paths(&[("CTDB_TEST_MODE", "1"), ("CTDB_BASE", "")]);
        assert_eq!(s(blank.rundir()), "/run");
        // CTDB_TEST_MODE=1 without CTDB_BASE: stock aborts (exit 134).
        assert_eq!(
            CtdbPaths::from_env(&Environment::new().with("CTDB_TEST_MODE", "1")),
            Err(PathError::TestModeWithoutBase)
        );
        // Appending an absolute path does not discard the directory.
        assert_eq!(
            s(paths(&[]).vardir_append("/foo")),
            format!("{VARDIR}//foo")
        );
    }

    #[test]
    fn ctdb_base_files_follow_ctdb_base_not_the_etc_dir() {
        if !debian_layout() {
            return;
        }
        let p = paths(&[]);
        assert_eq!(s(p.ctdb_base()), "/etc/ctdb");
        assert_eq!(s(p.nodes_file()), "/etc/ctdb/nodes");
        assert_eq!(s(p.public_addresses_file()), "/etc/ctdb/public_addresses");
        assert_eq!(s(p.legacy_event_script_dir()), "/etc/ctdb/events/legacy");
        assert_eq!(s(p.notify_script()), "/etc/ctdb/notify.sh");
        assert_eq!(s(p.debug_locks_script()), "/etc/ctdb/debug_locks.sh");
        assert_eq!(s(p.tunables_file()), "/etc/ctdb/ctdb.tunables");
        // Outside test mode CTDB_BASE moves the nodes file but not ctdb.conf.
        let moved = paths(&[("CTDB_BASE", "/srv/ctdb")]);
        assert_eq!(s(moved.nodes_file()), "/srv/ctdb/nodes");
        assert_eq!(s(moved.notify_script()), "/srv/ctdb/notify.sh");
        assert_eq!(s(moved.config_file()), "/etc/ctdb/ctdb.conf");
        assert_eq!(
            s(moved.event_script_dir("legacy")),
            "/etc/ctdb/events/legacy"
        );
        assert_eq!(
            s(moved.legacy_event_script_dir()),
            "/srv/ctdb/events/legacy"
        );
        // In test mode both agree.
        let test = paths(&[("CTDB_TEST_MODE", "yes"), ("CTDB_BASE", "/t/node.0")]);
        assert_eq!(s(test.nodes_file()), "/t/node.0/nodes");
        assert_eq!(s(test.tunables_file()), "/t/node.0/ctdb.tunables");
        assert_eq!(
            s(test.event_script_dir("legacy")),
            "/t/node.0/events/legacy"
        );
        assert_eq!(
            s(test.shipped_event_script_dir("legacy")),
            "/t/node.0/share/events/legacy"
        );
        let debug = paths(&[("CTDB_DEBUG_LOCKS", "/x/dl.sh")]);
        assert_eq!(s(debug.debug_locks_script()), "/x/dl.sh");
    }

    #[test]
    fn helpers_default_to_the_helper_dir_and_honour_overrides() {
        if !debian_layout() {
            return;
        }
        let p = paths(&[]);
        assert_eq!(s(p.helper(Helper::Eventd)), "/usr/libexec/ctdb/ctdb-eventd");
        assert_eq!(
            s(p.helper(Helper::EventTool)),
            "/usr/libexec/ctdb/ctdb-event"
        );
        assert_eq!(
            s(p.helper(Helper::Recovery)),
            "/usr/libexec/ctdb/ctdb_recovery_helper"
        );
        assert_eq!(
            s(p.helper(Helper::Takeover)),
            "/usr/libexec/ctdb/ctdb_takeover_helper"
        );
        assert_eq!(
            s(p.helper(Helper::ClusterMutex)),
            "/usr/libexec/ctdb/ctdb_mutex_fcntl_helper"
        );
        assert_eq!(
            s(p.helper(Helper::Lock)),
            "/usr/libexec/ctdb/ctdb_lock_helper"
        );
        let mut env = Environment::new();
        for helper in Helper::ALL {
            env.set(helper.env_var(), format!("/opt/{}", helper.file_name()));
        }
        let overridden = CtdbPaths::from_env(&env).unwrap();
        for helper in Helper::ALL {
            assert_eq!(
                s(overridden.helper(helper)),
                format!("/opt/{}", helper.file_name())
            );
        }
        // Test mode does not move the helpers.
        let test = paths(&[("CTDB_TEST_MODE", "1"), ("CTDB_BASE", "/t")]);
        assert_eq!(
            s(test.helper(Helper::Lock)),
            "/usr/libexec/ctdb/ctdb_lock_helper"
        );
    }

    #[test]
    fn compiled_defaults_are_debian_and_not_rebased() {
        if !debian_layout() {
            return;
        }
        assert_eq!(
            CtdbPaths::default_log_location(),
            "file:/var/log/ctdb/log.ctdb"
        );
        assert_eq!(
            s(CtdbPaths::default_volatile_db_dir()),
            "/var/lib/ctdb/volatile"
        );
        assert_eq!(
            s(CtdbPaths::default_persistent_db_dir()),
            "/var/lib/ctdb/persistent"
        );
        assert_eq!(s(CtdbPaths::default_state_db_dir()), "/var/lib/ctdb/state");
        assert_eq!(s(CtdbPaths::socket_lock_file()), "/run/ctdb/.socket_lock");
    }

    /// Asks the installed stock `ctdb-path` the same questions, when it is there (the Debian
    /// `ctdb` package); the literal tests above keep the answers when it is not.
    #[test]
    #[allow(clippy::disallowed_methods)]
    fn agrees_with_installed_ctdb_path() {
        let tool = "/usr/libexec/ctdb/ctdb-path";
        if !debian_layout() || !std::path::Path::new(tool).exists() {
            return;
        }
        let environments: [&[(&str, &str)]; 4] = [
            &[],
            &[("CTDB_TEST_MODE", "1"), ("CTDB_BASE", "/tmp/x")],
            &[
                ("CTDB_TEST_MODE", ""),
                ("CTDB_BASE", "/b/"),
                ("CTDB_SOCKET", "/s"),
            ],
            &[("CTDB_BASE", "/srv/ctdb"), ("CTDB_SOCKET", "")],
        ];
        for vars in environments {
            let p = paths(vars);
            let questions: [(&[&str], PathBuf); 13] = [
                (&["config"], p.config_file()),
                (&["pidfile", "ctdbd"], p.ctdbd_pidfile()),
                (&["socket", "ctdbd"], p.ctdbd_socket()),
                (&["socket", "eventd"], p.eventd_socket()),
                (&["pidfile", "eventd"], p.eventd_pidfile()),
                (&["etcdir"], p.etcdir()),
                (&["rundir"], p.rundir()),
                (&["vardir"], p.vardir()),
                (&["datadir"], p.datadir()),
                (&["vardir", "append", "foo"], p.vardir_append("foo")),
                (&["etcdir", "append", "a/b"], p.etcdir_append("a/b")),
                (&["rundir", "append", "/c"], p.rundir_append("/c")),
                (&["datadir", "append", "d"], p.datadir_append("d")),
            ];
            for (args, ours) in questions {
                let out = std::process::Command::new(tool)
                    .args(args)
                    .env_clear()
                    .envs(vars.iter().copied())
                    .output()
                    .unwrap();
                let stock = String::from_utf8(out.stdout).unwrap();
                assert_eq!(stock.trim_end_matches('\n'), s(ours), "{vars:?} {args:?}");
            }
        }
    }

    #[test]
    fn environment_snapshot() {
        let env = Environment::new().with("A", "1").with("B", "");
        assert_eq!(env.get("A"), Some(OsStr::new("1")));
        assert!(env.contains("B"));
        assert!(!env.contains("C"));
        assert_eq!(env.iter().count(), 2);
        let mut env = env;
        env.remove("A");
        assert_eq!(env.get("A"), None);
        // The process snapshot is whatever the test runner has; it must at least not fail.
        let _ = Environment::from_process_env();
    }
}
