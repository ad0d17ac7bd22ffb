//! Our `ctdb_takeover_helper` on real clusters: it drives a ctdb-rs cluster through failures
//! exactly as stock's helper drives a stock cluster (with and without `NoIPFailback`), and the
//! two helpers are interchangeable: a stock ctdbd cluster running ours and a ctdb-rs cluster
//! running stock's end up with the same address assignments as stock with stock.
//!
//! Which address a node gets first depends on when the nodes came up, so histories are
//! checked step by step against the allocation stock computes from the previous step, and
//! compared across clusters whenever they start alike.
//!
//! Each helper is started through a small wrapper script that logs its command line, which
//! proves which helper the recovery daemon ran. Clusters live on 127.0.121 – 127.0.124.

use crate::cluster::{our_takeover_helper, Flavour, LocalCluster};
use crate::takeover::{history, ok, on_only, settle, Assignment};
use ctdb::server::ipalloc::{self, Algorithm, NoLog, Options, PublicIp, UNKNOWN_PNN};
use nix::sys::signal::Signal;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

const STOCK_TAKEOVER_HELPER: &str = "/usr/libexec/ctdb/ctdb_takeover_helper";

/// Two tests share 127.0.121 and 127.0.122; they take turns.
#[allow(clippy::disallowed_types)] // Test threads, not the single-threaded daemon.
static RANGES_121_122: std::sync::Mutex<()> = std::sync::Mutex::new(());
const START: Duration = Duration::from_secs(90);

/// Makes every node of `c` run `helper` through a wrapper that logs each run to
/// `<dir>/takeover-runs`; returns that log's path.
fn use_helper(c: &LocalCluster, helper: &Path) -> PathBuf {
    let log = c.dir().join("takeover-runs");
    let wrapper = c.dir().join("takeover-helper-wrapper");
    let script = format!(
        "#!/bin/sh\necho \"$0 $*\" >> '{}'\nexec '{}' \"$@\"\n",
        log.display(),
        helper.display()
    );
    std::fs::write(&wrapper, script).unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    for pnn in 0..c.nodes {
        let env = c.node_base(pnn).join("node.env");
        let mut text = std::fs::read_to_string(&env).unwrap_or_default();
        text.push_str(&format!(
            "export CTDB_TAKEOVER_HELPER='{}'\n",
            wrapper.display()
        ));
        std::fs::write(env, text).unwrap();
    }
    log
}

/// The helper ran at least once, with stock's argument shape (`<fd> <socket> [pnns]`).
fn assert_helper_ran(log: &Path) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let runs: Vec<&str> = text.lines().collect();
    assert!(!runs.is_empty(), "the takeover helper never ran");
    for run in runs {
        let words: Vec<&str> = run.split(' ').collect();
        assert!((3..=4).contains(&words.len()), "{run}");
        assert!(words[1].parse::<i32>().is_ok(), "{run}");
        assert!(words[2].ends_with("ctdbd.socket"), "{run}");
    }
}

fn start(clusters: &[&LocalCluster]) {
    for c in clusters {
        c.start();
    }
    for c in clusters {
        c.wait_all_ok(START);
    }
}

fn set_tunable_everywhere(c: &LocalCluster, name: &str, value: &str) {
    for pnn in 0..c.nodes {
        ok(c, pnn, &["setvar", name, value]);
    }
}

/// Waits long enough for any takeover run a change triggers to have finished, then for a
/// stable assignment satisfying `done`: for steps where nothing is supposed to move.
fn settle_after_pause(
    c: &LocalCluster,
    what: &str,
    running: &[u32],
    done: impl Fn(&Assignment) -> bool,
) -> Assignment {
    std::thread::sleep(Duration::from_secs(5));
    settle(c, what, running, done)
}

/// The failure history with `NoIPFailback` set: addresses leave failed, disabled and stopped
/// nodes but never come back to a node that recovers while the others can still host them.
fn history_without_failback(c: &LocalCluster) -> Vec<Assignment> {
    // Set once the addresses are spread: a node joining late would otherwise never get one.
    let mut steps = Vec::new();
    steps.push(settle(c, "all nodes host addresses", &[0, 1, 2], |a| {
        (0..3).all(|n| a.values().any(|&p| p == n))
    }));
    set_tunable_everywhere(c, "NoIPFailback", "1");

    c.signal(2, Signal::SIGKILL);
    steps.push(settle(
        c,
        "node 2's addresses moved",
        &[0, 1],
        on_only(&[0, 1]),
    ));

    ok(c, 1, &["disable"]);
    steps.push(settle(
        c,
        "disabled node 1 released",
        &[0, 1],
        on_only(&[0]),
    ));

    ok(c, 1, &["enable"]);
    steps.push(settle_after_pause(
        c,
        "enabled node 1 gets nothing back",
        &[0, 1],
        on_only(&[0]),
    ));

    ok(c, 0, &["stop"]);
    steps.push(settle(c, "stopped node 0 released", &[0, 1], on_only(&[1])));

    ok(c, 0, &["continue"]);
    steps.push(settle_after_pause(
        c,
        "continued node 0 gets nothing back",
        &[0, 1],
        on_only(&[1]),
    ));
    steps
}

/// The cluster's public addresses.
fn addresses(c: &LocalCluster) -> Vec<IpAddr> {
    std::fs::read_to_string(c.dir().join("public_addresses"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split('/').next()?.parse().ok())
        .collect()
}

fn last_octet(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(v4) => v4.octets()[3],
        IpAddr::V6(v6) => v6.octets()[15],
    }
}

/// What stock's allocation makes of `previous` when the nodes of `connected` answer and
/// those of `can_host` may host: every connected node knows every address and believes its
/// previous host holds it (the release messages of the last run told it so).
fn predict(
    addrs: &[IpAddr],
    previous: &Assignment,
    connected: &[u32],
    can_host: &[u32],
    no_failback: bool,
) -> Assignment {
    let beliefs: Vec<PublicIp> = addrs
        .iter()
        .map(|&addr| PublicIp {
            pnn: previous
                .get(&last_octet(addr))
                .copied()
                .unwrap_or(UNKNOWN_PNN),
            addr,
        })
        .collect();
    let known: Vec<Vec<PublicIp>> = (0..3)
        .map(|n| {
            if connected.contains(&n) {
                beliefs.clone()
            } else {
                Vec::new()
            }
        })
        .collect();
    let available: Vec<Vec<PublicIp>> = (0..3)
        .map(|n| {
            if can_host.contains(&n) {
                beliefs.clone()
            } else {
                Vec::new()
            }
        })
        .collect();
    let options = Options {
        algorithm: Algorithm::Lcp2,
        no_ip_failback: no_failback,
        ..Options::default()
    };
    ipalloc::ipalloc(&known, &available, &options, &mut NoLog)
        .into_iter()
        .filter(|ip| ip.pnn != UNKNOWN_PNN)
        .map(|ip| (last_octet(ip.addr), ip.pnn))
        .collect()
}

/// Checks each step of a failure history against the allocation stock computes from the
/// step before. The first step depends on when the nodes came up, so it only has to give
/// every node one address.
pub(crate) fn check_history(c: &LocalCluster, steps: &[Assignment], no_failback: bool) {
    let addrs = addresses(c);
    let first = &steps[0];
    for n in 0..3 {
        assert_eq!(first.values().filter(|&&p| p == n).count(), 1, "{first:?}");
    }
    // kill 2, disable 1, enable 1, stop 0, continue 0 (the last only in the long history).
    let transitions: [&[u32]; 5] = [&[0, 1], &[0], &[0, 1], &[1], &[0, 1]];
    for (i, can_host) in transitions.iter().enumerate().take(steps.len() - 1) {
        let want = predict(&addrs, &steps[i], &[0, 1], can_host, no_failback);
        assert_eq!(steps[i + 1], want, "step {} of {steps:?}", i + 1);
    }
}

#[test]
fn our_helper_drives_a_ctdb_rs_cluster_like_stock_drives_stock_without_failback() {
    let _ranges = RANGES_121_122.lock().unwrap_or_else(|e| e.into_inner());
    let args = ["--public-addresses"];
    let ours = LocalCluster::setup("tohelper-ours", Flavour::Ours, 3, "127.0.121", &args);
    let stock = LocalCluster::setup("tohelper-stock", Flavour::Stock, 3, "127.0.122", &args);
    let ours_log = use_helper(&ours, &our_takeover_helper());
    let stock_log = use_helper(&stock, Path::new(STOCK_TAKEOVER_HELPER));
    start(&[&ours, &stock]);
    let ours_history = history_without_failback(&ours);
    let stock_history = history_without_failback(&stock);
    assert_helper_ran(&ours_log);
    assert_helper_ran(&stock_log);
    check_history(&ours, &ours_history, true);
    check_history(&stock, &stock_history, true);
    if ours_history[0] == stock_history[0] {
        assert_eq!(ours_history, stock_history);
    }
}

/// Our helper run by stock ctdbd, and stock's helper run by ours, through the failure
/// history of `takeover.rs` (failback allowed): every address is hosted exactly once at every
/// step, each step is the allocation stock computes from the one before, and the two
/// histories are equal when they start alike.
#[test]
fn the_helpers_are_interchangeable_between_the_daemons() {
    let args = ["--public-addresses"];
    let stock = LocalCluster::setup("tohelper-x-stock", Flavour::Stock, 3, "127.0.123", &args);
    let ours = LocalCluster::setup("tohelper-x-ours", Flavour::Ours, 3, "127.0.124", &args);
    let stock_log = use_helper(&stock, &our_takeover_helper());
    let ours_log = use_helper(&ours, Path::new(STOCK_TAKEOVER_HELPER));
    start(&[&stock, &ours]);
    let stock_history = history(&stock);
    let ours_history = history(&ours);
    assert_helper_ran(&stock_log);
    assert_helper_ran(&ours_log);
    check_history(&stock, &stock_history, false);
    check_history(&ours, &ours_history, false);
    if ours_history[0] == stock_history[0] {
        assert_eq!(ours_history, stock_history);
    }
}

/// Runs a takeover helper with a pipe as its result fd: exit status, bytes written to the
/// pipe, standard error with the program path replaced by `HELPER`.
fn run_helper(
    helper: &Path,
    args: &[&str],
    logging: Option<&Path>,
) -> (Option<i32>, Vec<u8>, String) {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    let (read_end, write_end) = nix::unistd::pipe().unwrap();
    let mut cmd = std::process::Command::new(helper);
    cmd.args(
        args.iter()
            .map(|a| a.replace("FD", &write_end.as_raw_fd().to_string())),
    )
    .env_remove("CTDB_LOGGING")
    .env("CTDB_DEBUGLEVEL", "NOTICE")
    .stdin(std::process::Stdio::null())
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped());
    if let Some(log) = logging {
        cmd.env("CTDB_LOGGING", format!("file:{}", log.display()));
    }
    let child = cmd.spawn().unwrap();
    drop(write_end);
    let out = child.wait_with_output().unwrap();
    let mut written = Vec::new();
    std::fs::File::from(read_end)
        .read_to_end(&mut written)
        .unwrap();
    let stderr =
        String::from_utf8_lossy(&out.stderr).replace(&helper.display().to_string(), "HELPER");
    (out.status.code(), written, stderr)
}

/// Without a cluster: wrong argument counts, an unusable log target and a missing socket give
/// the same exit status, result bytes and messages as stock's helper.
#[test]
fn command_line_and_result_fd_behave_like_stock() {
    let dir = std::env::temp_dir().join(format!("ctdb-rs-it-tohelper-args-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("no-such-socket").display().to_string();
    let log = dir.join("log");
    let cases: Vec<(Vec<&str>, Option<&Path>)> = vec![
        (vec!["FD"], Some(&log)),
        (vec!["FD", &socket, "1", "2"], Some(&log)),
        (vec!["FD", &socket], None),
        (vec!["FD", &socket], Some(&log)),
        (vec!["FD", &socket, "1,2"], Some(&log)),
    ];
    for (args, logging) in cases {
        let stock = run_helper(Path::new(STOCK_TAKEOVER_HELPER), &args, logging);
        let ours = run_helper(&our_takeover_helper(), &args, logging);
        assert_eq!(ours, stock, "{args:?} logging={logging:?}");
    }
    // The missing socket is reported as ENOENT, in the result and the exit status.
    let (code, written, _) = run_helper(&our_takeover_helper(), &["FD", &socket], Some(&log));
    assert_eq!(code, Some(libc::ENOENT));
    assert_eq!(written, libc::ENOENT.to_ne_bytes());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("ctdb-takeover["), "{text}");
    assert!(text.contains("ctdb_client_init() failed, ret=2"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Node 1 of a two-node cluster fails every `takeip` event. Our helper blames it for the
/// failed TAKEOVER_IP, names it to the recovery daemon with a `BANNING` message after each
/// failed run, and the recovery daemon (stock's or ours) bans it; node 0 then hosts every
/// address. (Stock's daemon and ours both answer the failed event with status 8, and both
/// recovery daemons ban after the second failed run.)
fn failing_takeip_gets_the_node_banned(c: &LocalCluster) {
    let log = use_helper(c, &our_takeover_helper());
    c.write_event_script(
        1,
        "10.failtakeip.script",
        "#!/bin/sh\n[ \"$1\" = takeip ] && exit 1\nexit 0\n",
    );
    c.start();
    let banned = || c.node_flags(0).get(1).and_then(|row| row.get(2).copied()) == Some(true);
    c.wait_for("node 1 banned", Duration::from_secs(120), banned);
    assert_helper_ran(&log);
    settle(c, "node 0 hosts everything", &[0], on_only(&[0]));
    let text: String = (0..2)
        .map(|n| std::fs::read_to_string(c.node_base(n).join("log.ctdb")).unwrap_or_default())
        .collect();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("ctdb-takeover["))
        .collect();
    let has = |needle: &str| lines.iter().any(|l| l.contains(needle));
    assert!(has("Assigning banning credits to node 1"), "{lines:#?}");
    assert!(has("failed on node 1, ret="), "{lines:#?}");
    assert!(has("takeover run failed, ret="), "{lines:#?}");
    assert!(
        text.lines().any(|l| l.contains("Banning node 1 for")),
        "no ban in the recovery daemon's log"
    );
}

#[test]
fn failed_takeovers_get_a_node_banned_through_either_recovery_daemon() {
    let _ranges = RANGES_121_122.lock().unwrap_or_else(|e| e.into_inner());
    let args = ["--public-addresses"];
    let stock = LocalCluster::setup("tohelper-ban-stock", Flavour::Stock, 2, "127.0.121", &args);
    let ours = LocalCluster::setup("tohelper-ban-ours", Flavour::Ours, 2, "127.0.122", &args);
    failing_takeip_gets_the_node_banned(&stock);
    failing_takeip_gets_the_node_banned(&ours);
}
