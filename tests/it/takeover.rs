//! Public IP failover on real clusters: ctdb-rs nodes host the addresses the takeover runs
//! give them, exactly as stock nodes would, and addresses move when nodes die, are disabled
//! or stopped. Addresses live on 127.0.8x clusters as `10.0.8x.101..` on `lo`, never in the
//! kernel (test mode).

use crate::cluster::{our_ctdbd, our_eventd, Flavour, LocalCluster};
use nix::sys::signal::Signal;
use std::collections::BTreeMap;
use std::time::Duration;

/// Last octet of each public address → the node that claims to host it.
pub(crate) type Assignment = BTreeMap<u8, u32>;

const SETTLE: Duration = Duration::from_secs(90);

fn public_addresses(c: &LocalCluster) -> Vec<u8> {
    std::fs::read_to_string(c.dir().join("public_addresses"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split('/').next()?.rsplit('.').next()?.parse().ok())
        .collect()
}

/// `|ip|pnn|...` rows of a `ctdb -X ip` listing as (last octet, pnn).
fn ip_rows(text: &str) -> Vec<(u8, u32)> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split('|').skip(1);
            let octet = f.next()?.rsplit('.').next()?.parse().ok()?;
            let pnn: i64 = f.next()?.parse().ok()?;
            Some((octet, u32::try_from(pnn).unwrap_or(u32::MAX)))
        })
        .collect()
}

/// Who hosts what, from each running node's claims about itself: `None` unless every public
/// address is claimed by exactly one node.
fn hosts(c: &LocalCluster, running: &[u32]) -> Option<Assignment> {
    let mut claims: BTreeMap<u8, Vec<u32>> = BTreeMap::new();
    for &n in running {
        let out = c.ctdb(n, &["-X", "ip"]);
        if !out.status.success() {
            return None;
        }
        for (octet, pnn) in ip_rows(&String::from_utf8_lossy(&out.stdout)) {
            let entry = claims.entry(octet).or_default();
            if pnn == n {
                entry.push(n);
            }
        }
    }
    let all = public_addresses(c);
    if claims.len() != all.len() || claims.values().any(|v| v.len() != 1) {
        return None;
    }
    Some(claims.into_iter().map(|(k, v)| (k, v[0])).collect())
}

/// Waits until every address is hosted exactly once, `done` holds, and the assignment has not
/// changed for two seconds; returns it.
pub(crate) fn settle(
    c: &LocalCluster,
    what: &str,
    running: &[u32],
    done: impl Fn(&Assignment) -> bool,
) -> Assignment {
    let mut last: Option<(Assignment, u32)> = None;
    let mut result = Assignment::new();
    c.wait_for(what, SETTLE, || {
        let Some(now) = hosts(c, running).filter(|a| done(a)) else {
            last = None;
            return false;
        };
        let stable = match &mut last {
            Some((prev, count)) if *prev == now => {
                *count += 1;
                *count >= 4
            }
            _ => {
                last = Some((now.clone(), 0));
                false
            }
        };
        std::thread::sleep(Duration::from_millis(450));
        if stable {
            result = now;
        }
        stable
    });
    // `ctdb ip all` (which merges the nodes' answers) agrees.
    let merged = ip_rows(&c.ctdb_stdout(running[0], &["-X", "ip", "all"]));
    assert_eq!(
        merged.into_iter().collect::<Assignment>(),
        result,
        "{what}: ctdb ip all disagrees"
    );
    result
}

pub(crate) fn on_only(nodes: &'static [u32]) -> impl Fn(&Assignment) -> bool {
    move |a| a.values().all(|p| nodes.contains(p))
}

pub(crate) fn ok(c: &LocalCluster, pnn: u32, args: &[&str]) {
    let out = c.ctdb(pnn, args);
    assert!(
        out.status.success(),
        "ctdb {args:?} on node {pnn}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The hosting node reports the address on `lo`, its other nodes on no interface.
fn check_active_interfaces(c: &LocalCluster, running: &[u32], hosts: &Assignment) {
    for &n in running {
        let text = c.ctdb_stdout(n, &["-X", "ip", "-v"]);
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split('|').collect();
            let octet: u8 = f[1].rsplit('.').next().unwrap().parse().unwrap();
            let active = if hosts[&octet] == n { "lo" } else { "" };
            assert_eq!(f[3], active, "node {n}: {line}");
            assert_eq!((f[4], f[5]), ("lo", "lo"), "node {n}: {line}");
        }
    }
}

/// One cluster's address assignment through a fixed history of failures.
pub(crate) fn history(c: &LocalCluster) -> Vec<Assignment> {
    let mut steps = Vec::new();
    let first = settle(c, "all nodes host addresses", &[0, 1, 2], |a| {
        (0..3).all(|n| a.values().any(|&p| p == n))
    });
    check_active_interfaces(c, &[0, 1, 2], &first);
    steps.push(first);

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
    steps.push(settle(c, "enabled node 1 hosts again", &[0, 1], |a| {
        a.values().any(|&p| p == 1)
    }));

    ok(c, 0, &["stop"]);
    let stopped = settle(c, "stopped node 0 released", &[0, 1], on_only(&[1]));
    check_active_interfaces(c, &[0, 1], &stopped);
    steps.push(stopped);
    ok(c, 0, &["continue"]);
    steps
}

#[test]
fn ctdb_rs_cluster_assigns_and_moves_addresses_exactly_like_stock() {
    let args = ["--public-addresses"];
    let stock = LocalCluster::setup("takeover-stock", Flavour::Stock, 3, "127.0.84", &args);
    let ours = LocalCluster::setup("takeover-ours", Flavour::Ours, 3, "127.0.85", &args);
    stock.start();
    ours.start();
    ours.wait_all_ok(Duration::from_secs(90));
    stock.wait_all_ok(Duration::from_secs(90));
    // One after the other: a history is a sequence of waits.
    let ours_history = history(&ours);
    let stock_history = history(&stock);
    // The first assignment depends on the order in which the nodes joined (in stock too), so
    // every later step is checked against the allocation stock computes from the step before,
    // and the two histories must be equal when they start alike.
    crate::takeover_helper::check_history(&ours, &ours_history, false);
    crate::takeover_helper::check_history(&stock, &stock_history, false);
    if ours_history[0] == stock_history[0] {
        assert_eq!(ours_history, stock_history);
    }
}

/// Node 2 runs ctdb-rs without the leader capability, so stock leads and stock's takeover
/// helper drives our node.
#[test]
fn mixed_cluster_with_a_stock_leader_hosts_addresses_on_ctdb_rs() {
    let c = LocalCluster::setup(
        "takeover-mixed",
        Flavour::Stock,
        3,
        "127.0.86",
        &["--public-addresses"],
    );
    let env = format!(
        "NODE_CTDBD={}\nexport CTDB_EVENTD={}\n",
        our_ctdbd().display(),
        our_eventd().display()
    );
    std::fs::write(c.node_base(2).join("node.env"), env).unwrap();
    let conf = c.node_base(2).join("ctdb.conf");
    let text = std::fs::read_to_string(&conf).unwrap();
    let text = text.replace("[cluster]\n", "[cluster]\n\tleader capability = false\n");
    std::fs::write(&conf, text).unwrap();
    c.start();
    c.wait_all_ok(Duration::from_secs(90));
    let leader = c.ctdb_stdout(0, &["leader"]);
    assert_ne!(leader.trim(), "2", "stock leads");
    let first = settle(&c, "every node hosts one address", &[0, 1, 2], |a| {
        (0..3).all(|n| a.values().filter(|&&p| p == n).count() == 1)
    });
    check_active_interfaces(&c, &[0, 1, 2], &first);

    // Our node dies: its address goes to a stock node.
    c.signal(2, Signal::SIGKILL);
    settle(&c, "node 2's address moved", &[0, 1], on_only(&[0, 1]));
    c.wait_for("node 2 reaped", Duration::from_secs(10), || {
        c.pid(2).is_none()
    });
    c.start_node(2);
    c.wait_all_ok(Duration::from_secs(90));
    settle(&c, "restarted node 2 hosts again", &[0, 1, 2], |a| {
        a.values().any(|&p| p == 2)
    });

    // A stock node dies: the survivors, ours included, share its addresses. (Not the leader:
    // re-electing a stock leader is not what this test is about.)
    let leader: u32 = c.ctdb_stdout(0, &["leader"]).trim().parse().unwrap();
    let (victim, survivor) = if leader == 0 { (1, 0) } else { (0, 1) };
    c.signal(victim, Signal::SIGKILL);
    let survivors: &'static [u32] = if survivor == 0 { &[0, 2] } else { &[1, 2] };
    let after = settle(
        &c,
        "a stock node's addresses moved",
        survivors,
        on_only(survivors),
    );
    assert!(after.values().any(|&p| p == 2));
}

/// The address, interface and tickle commands of the stock CLI, run against one cluster:
/// a transcript with the cluster's own prefixes replaced by placeholders.
fn address_commands_transcript(c: &LocalCluster) -> String {
    let p = c.prefix.rsplit('.').next().unwrap().to_string();
    let mut out = String::new();
    let run = |out: &mut String, args: &[String]| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = c.ctdb(0, &args);
        out.push_str(&format!("$ ctdb {}\n", args.join(" ")));
        out.push_str(&String::from_utf8_lossy(&o.stdout));
        out.push_str(&String::from_utf8_lossy(&o.stderr));
        out.push_str(&format!("rc={:?}\n", o.status.code()));
    };
    let script: &[&str] = &[
        "ip",
        "ifaces",
        "addip 10.0.P.110/24 lo",
        "addip 10.0.P.110/24 lo",
        "addip 10.0.P.111/24 nosuchif",
        "ip",
        "ifaces",
        "delip 10.0.P.110",
        "delip 10.0.P.199",
        "ip",
        "setifacelink lo down",
        "ifaces",
        // Node 0 gives up its addresses at the next takeover run (and drops the address whose
        // deletion was pending); both daemons get there within a second or two, so wait for
        // it instead of racing it: under load either side may or may not be there yet.
        "WAIT 101=1 102=1 110=-",
        "ip -v",
        "-X ip -v",
        "setifacelink lo up",
        "setifacelink nosuch up",
        "addtickle 10.0.P.101:445 192.168.7.1:5000",
        "addtickle 192.168.7.1:5000 10.0.P.101:445",
        "addtickle 192.168.7.2:5001 10.0.P.101:445",
        "addtickle 192.168.7.3:5002 10.0.P.101:139",
        "addtickle 192.168.7.3:5002 10.0.P.101:139",
        "gettickles 10.0.P.101",
        "gettickles 10.0.P.101 445",
        "-X gettickles 10.0.P.101",
        "deltickle 192.168.7.1:5000 10.0.P.101:445",
        "gettickles 10.0.P.101",
        "gettickles 10.0.P.199",
        "gratarp 10.0.P.101 lo",
        "ipinfo 10.0.P.101",
        "ipinfo 10.0.P.199",
        "moveip 10.0.P.101 1",
        "WAIT 101=1",
        "ip all",
        "moveip 10.0.P.101 0",
        "WAIT 101=0",
        "ip all",
        "-n 1 ip",
        "ifaces",
        "-n 1 ifaces",
    ];
    for line in script {
        if let Some(expected) = line.strip_prefix("WAIT ") {
            wait_for_addresses(c, expected);
            continue;
        }
        let args: Vec<String> = line
            .replace(".P.", &format!(".{p}."))
            .split(' ')
            .map(str::to_string)
            .collect();
        run(&mut out, &args);
    }
    // Tickle lists reach the other node with the periodic update (TickleUpdateInterval).
    let tickle_ip = format!("10.0.{p}.101");
    c.wait_for("node 1 to learn the tickles", SETTLE, || {
        c.ctdb_stdout(1, &["gettickles", &tickle_ip])
            .contains("Num connections: 2")
    });
    run(
        &mut out,
        &[
            "-n".into(),
            "1".into(),
            "gettickles".into(),
            format!("10.0.{p}.101"),
        ],
    );
    // Reloading: one address more, then two fewer.
    let node0 = c.node_base(0).join("public_addresses");
    let mut text = std::fs::read_to_string(c.dir().join("public_addresses")).unwrap();
    text.push_str(&format!("10.0.{p}.120/24 lo\n"));
    std::fs::write(&node0, &text).unwrap();
    run(&mut out, &["reloadips".into(), "0".into()]);
    wait_for_addresses(c, "120=*");
    run(&mut out, &["ip".into(), "all".into()]);
    let first: String = text.lines().take(1).map(|l| format!("{l}\n")).collect();
    std::fs::write(&node0, first).unwrap();
    run(&mut out, &["reloadips".into(), "0".into()]);
    wait_for_addresses(c, "101=* 120=-");
    run(&mut out, &["ip".into(), "all".into()]);
    run(&mut out, &["ifaces".into()]);
    out.replace(&format!("10.0.{p}."), "10.0.P.")
        .replace(&format!("127.0.{p}."), "127.0.P.")
}

/// Waits until `ctdb -X ip all` on node 0 shows every expectation of `expected`: words like
/// `101=1` (last octet hosted by node 1), `110=-` (not listed) or `120=*` (listed, any node).
fn wait_for_addresses(c: &LocalCluster, expected: &str) {
    let wanted: Vec<(u8, &str)> = expected
        .split(' ')
        .map(|w| {
            let (octet, pnn) = w.split_once('=').expect("octet=pnn");
            (octet.parse().expect("address octet"), pnn)
        })
        .collect();
    c.wait_for(&format!("addresses {expected}"), SETTLE, || {
        let rows = ip_rows(&c.ctdb_stdout(0, &["-X", "ip", "all"]));
        let met = wanted.iter().all(|&(octet, pnn)| {
            let row = rows.iter().find(|r| r.0 == octet);
            match pnn {
                "-" => row.is_none(),
                "*" => row.is_some(),
                _ => row.is_some_and(|r| r.1.to_string() == pnn),
            }
        });
        met
    });
}

#[test]
fn address_commands_of_the_stock_cli_behave_like_stock() {
    let args = ["--public-addresses"];
    let stock = LocalCluster::setup("takeover-cli-stock", Flavour::Stock, 2, "127.0.87", &args);
    let ours = LocalCluster::setup("takeover-cli-ours", Flavour::Ours, 2, "127.0.88", &args);
    // Which node gets which address first depends on which nodes the first takeover run
    // saw; starting node 0 alone, then node 1, makes it one LCP2 step that both sides must
    // take alike.
    for c in [&stock, &ours] {
        c.start_node(0);
    }
    for c in [&stock, &ours] {
        settle(c, "node 0 alone hosts every address", &[0], |a| {
            a.values().all(|&p| p == 0)
        });
        c.start_node(1);
    }
    stock.wait_all_ok(Duration::from_secs(90));
    ours.wait_all_ok(Duration::from_secs(90));
    for c in [&stock, &ours] {
        settle(c, "both nodes host an address", &[0, 1], |a| {
            a.values().any(|&p| p == 0) && a.values().any(|&p| p == 1)
        });
    }
    let (stock_text, ours_text) = std::thread::scope(|s| {
        let stock_run = s.spawn(|| address_commands_transcript(&stock));
        let ours_text = address_commands_transcript(&ours);
        (stock_run.join().unwrap(), ours_text)
    });
    crate::cluster::assert_same_transcript(ours.dir(), &ours_text, &stock_text);
}
