//! `make install-only` / `make uninstall` into a scratch `DESTDIR`: where every file lands in
//! both layouts, that configuration is never overwritten, that the man pages render cleanly
//! and document every `ctdb.conf` key and every tunable (read from the library's own tables,
//! so pages and code cannot drift apart), that the systemd unit is sound, and that the
//! installed daemon runs and answers the stock `ctdb` tool.
//!
//! The binaries are the ones cargo built for this test run (`BUILD_DIR`), so nothing is
//! rebuilt here.

use super::cluster::STOCK_CTDB;
use ctdb::common::conf::{ConfDefault, CONF_OPTIONS};
use ctdb::common::tunable::TUNABLES;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const MAN_PAGES: [&str; 9] = [
    "man1/ctdbd.1.gz",
    "man1/ctdb-eventd.1.gz",
    "man1/ctdb_mutex_fcntl_helper.1.gz",
    "man1/ctdb_recovery_helper.1.gz",
    "man1/ctdb_takeover_helper.1.gz",
    "man1/ctdb-ipalloc.1.gz",
    "man5/ctdb.conf.5.gz",
    "man7/ctdb-tunables.7.gz",
    "man7/ctdb-rs.7.gz",
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn build_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ctdbd"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ctdb-rs-it-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program} >/dev/null")])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Runs `make <target> DESTDIR=<destdir> ...` in the repository.
fn make(target: &str, destdir: &Path, extra: &[&str]) -> Output {
    let out = Command::new("make")
        .arg("-s")
        .arg("-C")
        .arg(repo())
        .arg(target)
        .arg(format!("DESTDIR={}", destdir.display()))
        .arg(format!("BUILD_DIR={}", build_dir().display()))
        .arg(format!("MAN_BUILD_DIR={}/man-build", destdir.display()))
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "make {target} {extra:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn assert_file(root: &Path, path: &str, mode: u32) {
    let full = root.join(path.trim_start_matches('/'));
    let meta = std::fs::metadata(&full).unwrap_or_else(|e| panic!("{path} missing: {e}"));
    assert!(meta.is_file(), "{path} is not a file");
    assert_eq!(meta.permissions().mode() & 0o7777, mode, "mode of {path}");
}

fn assert_dir(root: &Path, path: &str) {
    let full = root.join(path.trim_start_matches('/'));
    assert!(full.is_dir(), "{path} is not a directory");
}

fn read(root: &Path, path: &str) -> String {
    std::fs::read_to_string(root.join(path.trim_start_matches('/')))
        .unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

#[test]
fn debian_layout_matches_stock_paths() {
    let dest = scratch("install-debian");
    make("install-only", &dest, &["DEBIAN=1"]);

    assert_file(&dest, "/usr/sbin/ctdbd", 0o755);
    assert_file(&dest, "/usr/libexec/ctdb/ctdb-eventd", 0o755);
    assert_file(&dest, "/usr/libexec/ctdb/ctdb_mutex_fcntl_helper", 0o755);
    for f in ["ctdb.conf", "nodes", "public_addresses", "ctdb.tunables"] {
        assert_file(&dest, &format!("/etc/ctdb/{f}"), 0o644);
    }
    assert_dir(&dest, "/etc/ctdb/events/legacy");
    assert_file(&dest, "/etc/default/ctdb", 0o644);
    assert_file(&dest, "/lib/systemd/system/ctdb.service", 0o644);
    for d in ["volatile", "persistent", "state"] {
        assert_dir(&dest, &format!("/var/lib/ctdb/{d}"));
    }
    assert_dir(&dest, "/run/ctdb");
    assert_dir(&dest, "/var/log/ctdb");
    for page in MAN_PAGES {
        let path = format!("/usr/share/man/{page}");
        assert_file(&dest, &path, 0o644);
        let bytes = std::fs::read(dest.join(path.trim_start_matches('/'))).unwrap();
        assert!(bytes.starts_with(&[0x1f, 0x8b]), "{page} is not gzip");
    }
    // Our recovery and takeover helpers replace stock's in its own directory; nothing is
    // linked.
    assert_file(&dest, "/usr/libexec/ctdb/ctdb-ipalloc", 0o755);
    for name in ["ctdb_recovery_helper", "ctdb_takeover_helper"] {
        assert_file(&dest, &format!("/usr/libexec/ctdb/{name}"), 0o755);
        let helper = dest.join("usr/libexec/ctdb").join(name);
        assert!(!helper.is_symlink(), "{name} must be ours");
    }
    // Stock's paths, untouched.
    let unit = read(&dest, "/lib/systemd/system/ctdb.service");
    assert!(unit.contains("ExecStart=/usr/sbin/ctdbd\n"), "{unit}");
    assert!(unit.contains("PIDFile=/run/ctdb/ctdbd.pid\n"), "{unit}");
    assert!(
        unit.contains("EnvironmentFile=-/etc/default/ctdb\n"),
        "{unit}"
    );
    let page = man_text(&dest.join("usr/share/man/man1/ctdbd.1.gz"));
    assert!(page.contains("/etc/ctdb/ctdb.conf"), "{page}");
    assert!(page.contains("/usr/libexec/ctdb/ctdb-eventd"), "{page}");
    let _ = std::fs::remove_dir_all(&dest);
}

#[test]
fn default_layout_is_usr_local_and_reaches_stock_helpers() {
    let dest = scratch("install-local");
    make("install-only", &dest, &[]);

    assert_file(&dest, "/usr/local/sbin/ctdbd", 0o755);
    assert_file(&dest, "/usr/local/libexec/ctdb/ctdb-eventd", 0o755);
    assert_file(
        &dest,
        "/usr/local/libexec/ctdb/ctdb_mutex_fcntl_helper",
        0o755,
    );
    assert_file(&dest, "/usr/local/etc/ctdb/ctdb.conf", 0o644);
    assert_file(&dest, "/usr/local/etc/default/ctdb", 0o644);
    assert_file(&dest, "/usr/local/lib/systemd/system/ctdb.service", 0o644);
    for page in MAN_PAGES {
        assert_file(&dest, &format!("/usr/local/share/man/{page}"), 0o644);
    }
    // Runtime and state stay system-wide so that stock tools find the daemon.
    assert_dir(&dest, "/run/ctdb");
    assert_dir(&dest, "/var/lib/ctdb/persistent");

    assert_file(&dest, "/usr/local/libexec/ctdb/ctdb_recovery_helper", 0o755);
    assert_file(&dest, "/usr/local/libexec/ctdb/ctdb_takeover_helper", 0o755);
    for helper in ["ctdb_lock_helper"] {
        if Path::new("/usr/libexec/ctdb").join(helper).exists() {
            let link = dest.join("usr/local/libexec/ctdb").join(helper);
            assert_eq!(
                std::fs::read_link(&link).unwrap(),
                Path::new("/usr/libexec/ctdb").join(helper)
            );
        }
    }
    let unit = read(&dest, "/usr/local/lib/systemd/system/ctdb.service");
    assert!(unit.contains("ExecStart=/usr/local/sbin/ctdbd\n"), "{unit}");
    assert!(
        unit.contains("EnvironmentFile=-/usr/local/etc/default/ctdb\n"),
        "{unit}"
    );
    assert!(
        unit.contains("ConditionFileNotEmpty=/usr/local/etc/ctdb/nodes\n"),
        "{unit}"
    );
    let page = man_text(&dest.join("usr/local/share/man/man5/ctdb.conf.5.gz"));
    assert!(page.contains("/usr/local/etc/ctdb/ctdb.conf"), "{page}");
    let _ = std::fs::remove_dir_all(&dest);
}

#[test]
fn install_keeps_admin_config_and_uninstall_keeps_data() {
    let dest = scratch("install-keep");
    let etc = dest.join("etc/ctdb");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::create_dir_all(dest.join("etc/default")).unwrap();
    let admin = "[cluster]\n\tcluster lock = /mine\n";
    for f in ["ctdb.conf", "nodes", "public_addresses", "ctdb.tunables"] {
        std::fs::write(etc.join(f), admin).unwrap();
    }
    std::fs::write(dest.join("etc/default/ctdb"), admin).unwrap();

    let out = make("install-only", &dest, &["DEBIAN=1"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("keeping existing /etc/ctdb/ctdb.conf"));
    // Twice: a re-install (an upgrade) behaves the same.
    make("install-only", &dest, &["DEBIAN=1"]);
    for f in ["ctdb.conf", "nodes", "public_addresses", "ctdb.tunables"] {
        assert_eq!(read(&dest, &format!("/etc/ctdb/{f}")), admin, "{f}");
    }
    assert_eq!(read(&dest, "/etc/default/ctdb"), admin);

    make("uninstall", &dest, &["DEBIAN=1"]);
    for gone in [
        "usr/sbin/ctdbd",
        "usr/libexec/ctdb/ctdb-eventd",
        "usr/libexec/ctdb/ctdb_mutex_fcntl_helper",
        "lib/systemd/system/ctdb.service",
        "usr/share/man/man1/ctdbd.1.gz",
        "usr/share/man/man7/ctdb-rs.7.gz",
    ] {
        assert!(!dest.join(gone).exists(), "{gone} left behind");
    }
    assert_eq!(read(&dest, "/etc/ctdb/ctdb.conf"), admin);
    assert_dir(&dest, "/var/lib/ctdb/persistent");

    // The default layout's links to stock helpers go too, but only links.
    let local = scratch("install-keep-local");
    make("install-only", &local, &[]);
    make("uninstall", &local, &[]);
    let helpers = local.join("usr/local/libexec/ctdb");
    let left: Vec<_> = std::fs::read_dir(&helpers)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left in {}: {left:?}", helpers.display());
    let _ = std::fs::remove_dir_all(&dest);
    let _ = std::fs::remove_dir_all(&local);
}

/// The page as `man` renders it, or the roff source when man is not installed.
fn man_text(page: &Path) -> String {
    if have("man") {
        let out = Command::new("man")
            .arg("-l")
            .arg(page)
            .env("MANWIDTH", "200")
            .env("MANPAGER", "cat")
            .env("PAGER", "cat")
            .output()
            .unwrap();
        assert!(out.status.success(), "man -l {}", page.display());
        // Hyphens may come out as Unicode hyphen or minus signs.
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        return text.replace(['\u{2010}', '\u{2212}'], "-");
    }
    let out = Command::new("gzip").arg("-dc").arg(page).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn man_pages_render_without_warnings() {
    let dest = scratch("install-man");
    make("install-only", &dest, &["DEBIAN=1"]);
    let man_dir = dest.join("usr/share/man");
    if have("man") {
        for page in MAN_PAGES {
            let out = Command::new("man")
                .args(["-l", "--warnings"])
                .arg(man_dir.join(page))
                .env("MANWIDTH", "80")
                .env("MANPAGER", "cat")
                .env("PAGER", "cat")
                .stdin(Stdio::null())
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "man -l {page}: {stderr}");
            assert!(
                stderr.trim().is_empty(),
                "man warns about {page}:\n{stderr}"
            );
            assert!(out.stdout.len() > 500, "{page} renders almost nothing");
        }
    } else if have("groff") {
        for page in MAN_PAGES {
            let source = dest.join("man-build").join(
                Path::new(page)
                    .file_stem()
                    .unwrap()
                    .to_string_lossy()
                    .as_ref(),
            );
            let out = Command::new("groff")
                .args(["-man", "-ww", "-z"])
                .arg(&source)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                stderr.trim().is_empty(),
                "groff warns about {page}:\n{stderr}"
            );
        }
    } else {
        eprintln!("skipping: neither man nor groff is installed (make deps installs man-db)");
    }
    let _ = std::fs::remove_dir_all(&dest);
}

/// The text of one `.TP` entry of a page: from its tag line to the next entry or section.
fn entries(source: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = source.lines().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i] == ".TP" && i + 1 < lines.len() {
            let tag = lines[i + 1].to_string();
            let mut body = String::new();
            let mut j = i + 2;
            while j < lines.len() && lines[j] != ".TP" && !lines[j].starts_with(".SH") {
                body.push_str(lines[j]);
                body.push('\n');
                j += 1;
            }
            found.push((tag, body));
            i = j;
        } else {
            i += 1;
        }
    }
    found
}

fn man_source(name: &str) -> String {
    std::fs::read_to_string(repo().join("man").join(format!("{name}.in"))).unwrap()
}

#[test]
fn ctdb_conf_page_documents_every_option() {
    let source = man_source("ctdb.conf.5");
    let sections: Vec<(String, String)> = source
        .split("\n.SH ")
        .filter_map(|chunk| {
            let (title, body) = chunk.split_once('\n')?;
            let name = title.strip_prefix("\"[")?.strip_suffix("] SECTION\"")?;
            Some((name.to_string(), body.to_string()))
        })
        .collect();
    let mut documented = 0;
    for spec in CONF_OPTIONS {
        let (_, body) = sections
            .iter()
            .find(|(name, _)| name == spec.section)
            .unwrap_or_else(|| panic!("no \"[{}] SECTION\" in ctdb.conf.5", spec.section));
        let tag = format!(".BI \"{} = \" ", spec.key);
        let (_, text) = entries(body)
            .into_iter()
            .find(|(t, _)| t.starts_with(&tag))
            .unwrap_or_else(|| panic!("[{}] {} is not documented", spec.section, spec.key));
        let ty = format!("Type {};", spec.ty.name());
        assert!(
            text.starts_with(&ty),
            "[{}] {}: no \"{ty}\"",
            spec.section,
            spec.key
        );
        match spec.default {
            ConfDefault::Unset => assert!(
                text.contains("no default"),
                "[{}] {}: default should read \"no default\"",
                spec.section,
                spec.key
            ),
            default => {
                let shown = default
                    .to_string()
                    .replace("/var/lib/ctdb", "@STATEDIR@")
                    .replace("/var/log/ctdb", "@LOGDIR@");
                assert!(
                    text.contains(&format!("default\n.BR {shown} ")),
                    "[{}] {}: default {shown} not shown",
                    spec.section,
                    spec.key
                );
            }
        }
        documented += 1;
    }
    assert_eq!(documented, CONF_OPTIONS.len());
    assert!(source.contains(".SS Reloading"), "reload behaviour");
}

#[test]
fn tunables_page_documents_every_tunable() {
    let source = man_source("ctdb-tunables.7");
    let documented = entries(&source)
        .into_iter()
        .filter_map(|(tag, body)| {
            let name = tag.strip_prefix(".B ")?.to_string();
            body.starts_with("Default: ").then_some((name, body))
        })
        .collect::<Vec<_>>();
    assert_eq!(documented.len(), TUNABLES.len(), "one entry per tunable");
    for (spec, (name, body)) in TUNABLES.iter().zip(&documented) {
        assert_eq!(name, spec.name, "wire order");
        assert!(
            body.starts_with(&format!("Default: {}.", spec.default)),
            "{}: default {}",
            spec.name,
            spec.default
        );
        assert_eq!(
            body.contains("Obsolete"),
            spec.obsolete,
            "{}: obsolete marking",
            spec.name
        );
    }
}

#[test]
fn ctdbd_page_documents_interface() {
    let source = man_source("ctdbd.1");
    for needle in [
        "\\-\\-interactive",
        "\\-\\-help",
        "\\-\\-usage",
        ".B CTDB_BASE",
        ".B CTDB_TEST_MODE",
        ".B CTDB_SOCKET",
        ".B CTDB_EVENTD",
        "SIGTERM",
        "SIGINT",
        ".B SIGHUP",
        ".B 10\n",
        ".B 11\n",
        ".B 1\n",
    ] {
        assert!(source.contains(needle), "ctdbd.1 lacks {needle:?}");
    }
}

#[test]
fn systemd_unit_is_sound() {
    let unit = std::fs::read_to_string(repo().join("etc/ctdb.service")).unwrap();
    for key in [
        "Type=forking",
        "PIDFile=",
        "ExecStart=",
        "ExecReload=",
        "LimitCORE=",
        "Restart=",
    ] {
        assert!(
            unit.lines().any(|l| l.starts_with(key)),
            "ctdb.service lacks {key}"
        );
    }
    if !have("systemd-analyze") {
        eprintln!("skipping systemd-analyze verify: not installed");
        return;
    }
    // Verify the Debian-layout unit as installed; systemd-analyze checks that ExecStart exists
    // (stock's /usr/sbin/ctdbd on the test host) and that the Documentation= pages resolve.
    let dest = scratch("install-unit");
    make("install-only", &dest, &["DEBIAN=1"]);
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(dest.join("lib/systemd/system/ctdb.service"))
        .env(
            "MANPATH",
            format!("{}:/usr/share/man", dest.join("usr/share/man").display()),
        )
        .current_dir(&dest)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !Path::new("/usr/sbin/ctdbd").exists() {
        eprintln!("skipping systemd-analyze verify: no /usr/sbin/ctdbd on this host");
    } else {
        assert!(out.status.success(), "systemd-analyze verify:\n{stderr}");
        assert!(
            !stderr.contains("ctdb.service"),
            "systemd-analyze warns:\n{stderr}"
        );
    }
    let _ = std::fs::remove_dir_all(&dest);
}

/// Stops a daemon started by the test, by the pid it recorded.
struct DaemonGuard {
    pid_file: PathBuf,
}

impl DaemonGuard {
    fn pid(&self) -> Option<nix::unistd::Pid> {
        let text = std::fs::read_to_string(&self.pid_file).ok()?;
        Some(nix::unistd::Pid::from_raw(text.trim().parse().ok()?))
    }
}

impl Drop for DaemonGuard {
    #[allow(clippy::disallowed_methods)] // Test harness timing.
    fn drop(&mut self) {
        use nix::sys::signal::{kill, Signal};
        let Some(pid) = self.pid() else { return };
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while kill(pid, None).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = kill(pid, Signal::SIGKILL);
    }
}

/// The sample `ctdb.conf` as installed, with the commented-out `key = default` lines of the
/// given keys replaced by real settings.
fn adjust_sample(sample: &str, settings: &[(&str, &str, String)]) -> String {
    let mut section = String::new();
    let mut out = String::new();
    for line in sample.lines() {
        let trimmed = line.trim();
        if let Some(name) = trimmed.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            section = name.to_string();
        }
        let replaced = settings.iter().find(|(s, key, _)| {
            *s == section
                && trimmed
                    .strip_prefix('#')
                    .map(str::trim_start)
                    .and_then(|rest| rest.strip_prefix(key))
                    .is_some_and(|rest| rest.trim_start().starts_with('='))
        });
        match replaced {
            Some((_, key, value)) => out.push_str(&format!("\t{key} = {value}\n")),
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    for (s, key, _) in settings {
        assert!(
            out.contains(&format!("\t{key} = ")),
            "sample ctdb.conf has no commented [{s}] {key}"
        );
    }
    out
}

#[test]
#[allow(clippy::disallowed_methods)] // Test harness timing.
fn installed_daemon_serves_stock_tool() {
    let dest = scratch("install-run");
    make("install-only", &dest, &["DEBIAN=1"]);
    let base = dest.join("base");
    for d in [
        "run",
        "var",
        "events/legacy",
        "db/volatile",
        "db/persistent",
        "db/state",
    ] {
        std::fs::create_dir_all(base.join(d)).unwrap();
    }
    let db = |d: &str| base.join("db").join(d).display().to_string();
    let sample = read(&dest, "/etc/ctdb/ctdb.conf");
    let conf = adjust_sample(
        &sample,
        &[
            (
                "logging",
                "location",
                format!("file:{}/log.ctdb", base.display()),
            ),
            ("logging", "log level", "INFO".into()),
            ("cluster", "node address", "127.0.105.1".into()),
            ("database", "volatile database directory", db("volatile")),
            (
                "database",
                "persistent database directory",
                db("persistent"),
            ),
            ("database", "state database directory", db("state")),
            ("failover", "disabled", "true".into()),
        ],
    );
    std::fs::write(base.join("ctdb.conf"), conf).unwrap();
    std::fs::write(base.join("nodes"), "127.0.105.1\n").unwrap();
    std::fs::write(base.join("public_addresses"), "").unwrap();
    if Path::new("/etc/ctdb/functions").exists() {
        std::fs::copy("/etc/ctdb/functions", base.join("functions")).unwrap();
    }

    let helpers = dest.join("usr/libexec/ctdb");
    let guard = DaemonGuard {
        pid_file: base.join("run/ctdbd.pid"),
    };
    let status = Command::new(dest.join("usr/sbin/ctdbd"))
        .env_remove("CTDB_SOCKET")
        .env("CTDB_TEST_MODE", "yes")
        .env("CTDB_BASE", &base)
        .env("CTDB_EVENTD", helpers.join("ctdb-eventd"))
        .env(
            "CTDB_CLUSTER_MUTEX_HELPER",
            helpers.join("ctdb_mutex_fcntl_helper"),
        )
        .current_dir(&base)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    let log = || std::fs::read_to_string(base.join("log.ctdb")).unwrap_or_default();
    assert!(
        status.success(),
        "installed ctdbd failed to start:\n{}",
        log()
    );
    // The daemon writes its pid file after detaching, so it may lag the launcher's exit.
    let deadline = Instant::now() + Duration::from_secs(10);
    while guard.pid().is_none() {
        assert!(Instant::now() < deadline, "no pid file:\n{}", log());
        std::thread::sleep(Duration::from_millis(50));
    }

    let ctdb = |args: &[&str]| {
        Command::new(STOCK_CTDB)
            .args(args)
            .env("CTDB_TEST_MODE", "yes")
            .env("CTDB_BASE", &base)
            .env("CTDB_SOCKET", base.join("run/ctdbd.socket"))
            .output()
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pnn = ctdb(&["pnn"]);
        let status = ctdb(&["status"]);
        let seen = format!(
            "pnn: {}{}\nstatus: {}{}",
            String::from_utf8_lossy(&pnn.stdout),
            String::from_utf8_lossy(&pnn.stderr),
            String::from_utf8_lossy(&status.stdout),
            String::from_utf8_lossy(&status.stderr),
        );
        if pnn.status.success()
            && String::from_utf8_lossy(&pnn.stdout).trim() == "0"
            && String::from_utf8_lossy(&status.stdout).contains("pnn:0 127.0.105.1")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "stock ctdb never saw the node:\n{seen}\nlog:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(guard);
    // eventd and the recovery daemon may still be tidying up for a moment.
    for _ in 0..20 {
        if std::fs::remove_dir_all(&dest).is_ok() || !dest.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
