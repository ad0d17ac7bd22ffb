//! The stock 4.17 `ctdb` CLI against ctdb-rs, compared with the same CLI against stock ctdbd.
//!
//! Both clusters run side by side with identical configuration and are compared once every
//! node of both is OK. Each command's output is normalised (addresses, pids, times, counters,
//! the random generation number and which node won the leader race) and must then be
//! identical: node states, recovery mode, runstate, public IP assignment and all formats.

use crate::cluster::{Flavour, LocalCluster};
use std::time::Duration;

/// Rewrites the parts of CLI output that legitimately differ between two clusters.
fn normalise(text: &str, cluster: &LocalCluster) -> String {
    let mut out = String::new();
    let dir = cluster.dir().display().to_string();
    for line in text.lines() {
        let mut l = line.replace(&dir, "<DIR>");
        l = l.replace(&format!("{}.", cluster.prefix), "<NET>.");
        let ten = cluster.prefix.replacen("127.", "10.", 1);
        l = l.replace(&format!("{ten}."), "<PUB>.");
        l = mask_times(&l);
        l = mask_race(&l);
        out.push_str(&l);
        out.push('\n');
    }
    out
}

/// Masks wall-clock times, durations and latencies.
fn mask_times(line: &str) -> String {
    let words: Vec<&str> = line.split(' ').collect();
    let mut out: Vec<String> = Vec::with_capacity(words.len());
    let days = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    let mut i = 0;
    while i < words.len() {
        let w = words[i];
        if days.contains(&w) {
            // "Thu Nov 26 12:04:52 2026" with a variable number of spaces before the day.
            let mut j = i + 1;
            let mut seen = 0;
            while j < words.len() && seen < 4 {
                if !words[j].is_empty() {
                    seen += 1;
                }
                j += 1;
            }
            out.push("<TIME>".into());
            i = j;
            continue;
        }
        out.push(w.to_string());
        i += 1;
    }
    let mut s = out.join(" ");
    // "(000 00:00:14)" durations, "0.030777 seconds", "time=0.000031 sec".
    s = replace_pattern(
        &s,
        |c| c.is_ascii_digit() || c == ':' || c == ' ',
        '(',
        ')',
        "(<DUR>)",
    );
    s = mask_numbers_before(&s, " seconds");
    s = mask_numbers_before(&s, " sec");
    s
}

fn replace_pattern(
    s: &str,
    inner: impl Fn(char) -> bool,
    open: char,
    close: char,
    with: &str,
) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(start) = rest.find(open) {
        let after = &rest[start + 1..];
        match after.find(close) {
            Some(end) if end > 0 && after[..end].chars().all(&inner) => {
                out.push_str(&rest[..start]);
                out.push_str(with);
                rest = &after[end + 1..];
            }
            _ => {
                out.push_str(&rest[..=start]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Replaces a number (digits and dots) that ends right before `suffix`.
fn mask_numbers_before(s: &str, suffix: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(pos) = rest.find(suffix) {
        let head = &rest[..pos];
        let num_start = head
            .char_indices()
            .rev()
            .take_while(|(_, c)| c.is_ascii_digit() || *c == '.')
            .last()
            .map(|(i, _)| i);
        match num_start {
            Some(i) => {
                out.push_str(&head[..i]);
                out.push_str("<N>");
            }
            None => out.push_str(head),
        }
        out.push_str(suffix);
        rest = &rest[pos + suffix.len()..];
    }
    out.push_str(rest);
    out
}

/// Masks what legitimately differs between two healthy clusters: the random generation and
/// which node happened to take the cluster lock first.
fn mask_race(line: &str) -> String {
    for prefix in ["Generation:", "Leader:"] {
        if line.starts_with(prefix) {
            return format!("{prefix}<N>");
        }
    }
    line.to_string()
}

/// Masks every number: statistics counters differ between any two runs.
fn mask_all_numbers(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_number = false;
    for c in text.chars() {
        if c.is_ascii_digit() || (in_number && c == '.') {
            if !in_number {
                out.push('#');
                in_number = true;
            }
        } else {
            in_number = false;
            out.push(c);
        }
    }
    out
}

struct Check<'a> {
    args: &'a [&'a str],
    /// Node to run on.
    pnn: u32,
    /// Every number differs between runs (pids, counters).
    numbers_differ: bool,
}

const fn check<'a>(args: &'a [&'a str]) -> Check<'a> {
    Check {
        args,
        pnn: 0,
        numbers_differ: false,
    }
}

const fn numbers_differ<'a>(args: &'a [&'a str]) -> Check<'a> {
    Check {
        args,
        pnn: 0,
        numbers_differ: true,
    }
}

fn compare(stock: &LocalCluster, ours: &LocalCluster, c: &Check<'_>, mismatches: &mut Vec<String>) {
    let a = stock.ctdb(c.pnn, c.args);
    let b = ours.ctdb(c.pnn, c.args);
    let render = |cluster: &LocalCluster, out: &std::process::Output| {
        let text = format!(
            "exit={}\n{}--stderr--\n{}",
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let text = normalise(&text, cluster);
        if c.numbers_differ {
            // Column widths follow the digits, so blank runs are folded too.
            let masked = mask_all_numbers(&text);
            masked
                .lines()
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
                .collect::<Vec<_>>()
                .join("\n")
        } else {
            text
        }
    };
    let (sa, sb) = (render(stock, &a), render(ours, &b));
    if sa != sb {
        mismatches.push(format!(
            "ctdb {}:\n--- stock\n{sa}--- ctdb-rs\n{sb}",
            c.args.join(" ")
        ));
    }
}

#[test]
fn stock_cli_output_against_ctdb_rs_matches_stock() {
    let stock = LocalCluster::setup("cli-stock", Flavour::Stock, 3, "127.0.71", &[]);
    let ours = LocalCluster::setup("cli-ours", Flavour::Ours, 3, "127.0.72", &[]);
    stock.start();
    ours.start();
    for cluster in [&stock, &ours] {
        cluster.wait_all_ok(Duration::from_secs(60));
    }

    let checks = [
        check(&["status"]),
        check(&["-X", "nodestatus", "all"]),
        check(&["nodestatus"]),
        check(&["ping", "-n", "all"]),
        numbers_differ(&["ping"]),
        numbers_differ(&["getpid"]),
        Check {
            args: &["-n", "2", "getpid"],
            pnn: 0,
            numbers_differ: true,
        },
        check(&["pnn"]),
        Check {
            args: &["pnn"],
            pnn: 2,
            numbers_differ: false,
        },
        check(&["listnodes"]),
        check(&["-X", "listnodes"]),
        check(&["uptime"]),
        check(&["listvars"]),
        check(&["getvar", "RecoverTimeout"]),
        check(&["getvar", "bogus"]),
        check(&["setvar", "RecoverTimeout", "31"]),
        check(&["getvar", "RecoverTimeout"]),
        check(&["setvar", "VacuumLimit", "7"]),
        check(&["getdebug"]),
        check(&["setdebug", "DEBUG"]),
        check(&["getdebug"]),
        check(&["setdebug", "INFO"]),
        numbers_differ(&["statistics"]),
        check(&["statisticsreset"]),
        numbers_differ(&["-X", "statistics"]),
        check(&["runstate"]),
        check(&["getcapabilities"]),
        check(&["getreclock"]),
        check(&["ip"]),
        check(&["-X", "ip"]),
        check(&["ifaces"]),
        check(&["event", "status", "legacy", "monitor"]),
        check(&["leader"]),
        check(&["-X", "ifaces"]),
        check(&["event", "script", "list", "legacy"]),
        check(&["getdbmap"]),
        check(&["ctdbnonsense"]),
    ];
    let mut mismatches = Vec::new();
    for c in &checks {
        compare(&stock, &ours, c, &mut mismatches);
    }

    // Shutdown: the node goes away and the others see it disconnected.
    for cluster in [&stock, &ours] {
        let out = cluster.ctdb(2, &["shutdown"]);
        assert!(out.status.success(), "ctdb shutdown failed");
        cluster.wait_for("node 2 to exit", Duration::from_secs(20), || {
            cluster.pid(2).is_none()
        });
        cluster.wait_for("node 2 disconnected", Duration::from_secs(10), || {
            cluster
                .node_flags(0)
                .get(2)
                .and_then(|r| r.first().copied())
                == Some(true)
        });
    }
    compare(
        &stock,
        &ours,
        &check(&["-X", "nodestatus", "all"]),
        &mut mismatches,
    );

    assert!(
        mismatches.is_empty(),
        "{} mismatches:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

/// Public address and interface listings. Which node hosts each address (and so the interface
/// reference counts) depends on the order in which the nodes joined, in stock as in ours, so it
/// is masked here: each address must be hosted by some node, and the addresses, their order and
/// every format must match. Where the addresses go is checked by `takeover.rs`.
#[test]
fn ip_and_interface_listings_match_stock() {
    let args = ["--public-addresses"];
    let stock = LocalCluster::setup("ip-stock", Flavour::Stock, 3, "127.0.78", &args);
    let ours = LocalCluster::setup("ip-ours", Flavour::Ours, 3, "127.0.79", &args);
    stock.start();
    ours.start();
    stock.wait_all_ok(Duration::from_secs(60));
    ours.wait_all_ok(Duration::from_secs(60));
    for cluster in [&stock, &ours] {
        cluster.wait_for("every address hosted", Duration::from_secs(60), || {
            let text = cluster.ctdb_stdout(0, &["-X", "ip"]);
            let rows: Vec<&str> = text.lines().skip(1).collect();
            !rows.is_empty() && rows.iter().all(|r| r.split('|').nth(2) != Some("-1"))
        });
    }
    let mut mismatches = Vec::new();
    for args in [&["ip"][..], &["-X", "ip"], &["ifaces"], &["-X", "ifaces"]] {
        let render = |cluster: &LocalCluster| {
            let out = cluster.ctdb(0, args);
            let text = normalise(&String::from_utf8_lossy(&out.stdout), cluster);
            text.lines()
                .map(mask_assignment)
                .collect::<Vec<_>>()
                .join("\n")
        };
        let (a, b) = (render(&stock), render(&ours));
        if a != b {
            mismatches.push(format!(
                "ctdb {}:\n--- stock\n{a}\n--- ctdb-rs\n{b}",
                args.join(" ")
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

/// Masks the hosting node of an address and interface reference counts.
fn mask_assignment(line: &str) -> String {
    if line.starts_with("<PUB>.") {
        if let Some((ip, _)) = line.split_once(' ') {
            return format!("{ip} <PNN>");
        }
    }
    if line.starts_with("|<PUB>.") {
        if let Some((ip, _)) = line[1..].split_once('|') {
            return format!("|{ip}|<PNN>|");
        }
    }
    if line.starts_with("name:") {
        if let Some(pos) = line.find("references:") {
            return format!("{}references:<N>", &line[..pos]);
        }
    }
    if line.starts_with('|') && line.matches('|').count() == 4 && !line.starts_with("|Name") {
        let cols: Vec<&str> = line.split('|').collect();
        return format!("|{}|{}|<N>|", cols[1], cols[2]);
    }
    line.to_string()
}
