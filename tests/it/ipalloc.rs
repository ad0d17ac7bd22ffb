//! IP allocation (`ctdb::server::ipalloc` and the `ctdb-ipalloc` driver):
//! * every test vector of stock's `ctdb/tests/UNIT/takeover` suite (`tests/ipalloc/*.txt`);
//! * the fast algorithms against a direct, slow transliteration of stock's loops on seeded
//!   random inputs, log lines included;
//! * address text against the C library's `inet_pton`/`inet_ntop`;
//! * with `CTDB_IPALLOC_REFERENCE=<path to a ctdb_takeover_tests built from Samba's source>`
//!   (see `bench/ipalloc_diff.sh`), our driver against stock's on seeded random inputs.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ctdb::server::ipalloc::addr::{ip_distance, ip_from_string, ip_key};
use ctdb::server::ipalloc::{ipalloc, Algorithm, CtdbIp, LineLog, Options, PublicIp, UNKNOWN_PNN};
use ctdb::testing::{seeds, Prng};

const OUR_DRIVER: &str = env!("CARGO_BIN_EXE_ctdb-ipalloc");

/// Every variable either driver reads; each run starts from none of them.
const DRIVER_ENV: [&str; 7] = [
    "CTDB_IP_ALGORITHM",
    "CTDB_SET_NoIPTakeover",
    "CTDB_SET_NoIPFailback",
    "CTDB_TEST_REBALANCE_NODES",
    "CTDB_TEST_RUNSTATE",
    "CTDB_TEST_LOGLEVEL",
    "CTDB_IPALLOC_TIMING",
];

/// One driver run: arguments after the program name, environment, standard input.
#[derive(Debug, Clone, Default)]
struct Case {
    args: Vec<String>,
    env: Vec<(String, String)>,
    input: String,
}

/// What the unit test harness compares: standard error then standard output (as
/// `$(prog 2>&1)` sees them from a program whose standard output is flushed at exit), with
/// trailing newlines dropped, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Outcome {
    output: String,
    status: String,
}

fn run_driver(program: &str, case: &Case) -> Outcome {
    let mut command = Command::new(program);
    command
        .args(&case.args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for name in DRIVER_ENV {
        command.env_remove(name);
    }
    for (name, value) in &case.env {
        command.env(name, value);
    }
    let mut child = command.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // Stock stops reading at the first empty line; a closed pipe is not an error here.
    let _ = stdin.write_all(case.input.as_bytes());
    drop(stdin);
    let result = child.wait_with_output().unwrap();
    let mut output = String::from_utf8_lossy(&result.stderr).into_owned();
    output.push_str(&String::from_utf8_lossy(&result.stdout));
    let status = match (result.status.code(), result.status.signal()) {
        (Some(code), _) => format!("exit {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        (None, None) => "unknown".to_owned(),
    };
    Outcome {
        output: output.trim_end_matches('\n').to_owned(),
        status,
    }
}

fn vector_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ipalloc")
}

/// A vector file: `#` comment header, `args:` and `env:` lines, then `--- input` and
/// `--- expected` sections.
fn load_vector(path: &Path) -> (Case, String) {
    let text = std::fs::read_to_string(path).unwrap();
    let (head, rest) = text.split_once("--- input\n").unwrap();
    let (input, expected) = rest.split_once("--- expected\n").unwrap();
    let mut case = Case {
        input: input.to_owned(),
        ..Case::default()
    };
    for line in head.lines() {
        if let Some(args) = line.strip_prefix("args: ") {
            case.args = std::iter::once("ipalloc")
                .chain(args.split_whitespace())
                .map(str::to_owned)
                .collect();
        } else if let Some(setting) = line.strip_prefix("env: ") {
            let (name, value) = setting.split_once('=').unwrap();
            case.env.push((name.to_owned(), value.to_owned()));
        }
    }
    (case, expected.trim_end_matches('\n').to_owned())
}

#[test]
fn stock_takeover_unit_test_vectors() {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(vector_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 50, "test vectors missing");
    let mut failures = Vec::new();
    for path in &paths {
        let (case, expected) = load_vector(path);
        let outcome = run_driver(OUR_DRIVER, &case);
        if outcome.output != expected || outcome.status != "exit 0" {
            failures.push(format!(
                "{}: {}\n--- expected\n{expected}\n--- got\n{}",
                path.display(),
                outcome.status,
                outcome.output
            ));
        }
    }
    println!(
        "{} of {} stock vectors pass",
        paths.len() - failures.len(),
        paths.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

// ---------------------------------------------------------------------------------------------
// A slow model: stock's loops transliterated as directly as possible, recomputing every sum.

struct ModelIp {
    addr: IpAddr,
    pnn: u32,
    available: Vec<bool>,
}

struct Model {
    nodes: usize,
    ips: Vec<ModelIp>,
    no_ip_takeover: bool,
    log: Vec<(i32, String)>,
}

impl Model {
    fn new(known: &[Vec<PublicIp>], available: &[Vec<PublicIp>], options: &Options) -> Self {
        let nodes = known.len();
        let mut tree: BTreeMap<[u32; 4], (IpAddr, u32)> = BTreeMap::new();
        for (node, list) in known.iter().enumerate() {
            for ip in list {
                let own = if ip.pnn as usize == node {
                    ip.pnn
                } else {
                    UNKNOWN_PNN
                };
                let key = ip_key(&ip.addr);
                let pnn = match tree.get(&key) {
                    Some(&(_, old)) if own == UNKNOWN_PNN => old,
                    _ => own,
                };
                tree.insert(key, (ip.addr, pnn));
            }
        }
        let ips = tree
            .values()
            .rev()
            .map(|&(addr, pnn)| ModelIp {
                addr,
                pnn,
                available: (0..nodes)
                    .map(|n| {
                        available
                            .get(n)
                            .is_some_and(|l| l.iter().any(|a| a.addr == addr))
                    })
                    .collect(),
            })
            .collect();
        Model {
            nodes,
            ips,
            no_ip_takeover: options.no_ip_takeover,
            log: Vec::new(),
        }
    }

    fn say(&mut self, level: i32, line: String) {
        self.log.push((level, line));
    }

    /// The lines a log at `level` shows.
    fn lines(&self, level: i32) -> Vec<String> {
        self.log
            .iter()
            .filter(|(l, _)| *l <= level)
            .map(|(_, line)| line.clone())
            .collect()
    }

    fn can_takeover(&self, node: usize, ip: usize) -> bool {
        !self.no_ip_takeover && self.ips[ip].available[node]
    }

    fn coverage(&self, node: usize) -> i64 {
        i64::try_from(self.ips.iter().filter(|ip| ip.pnn as usize == node).count()).unwrap()
    }

    fn text(&self, ip: usize) -> String {
        CtdbIp(&self.ips[ip].addr).to_string()
    }

    fn unassign_unsuitable(&mut self) {
        for ip in 0..self.ips.len() {
            let pnn = self.ips[ip].pnn;
            if pnn != UNKNOWN_PNN && !self.ips[ip].available[pnn as usize] {
                let line = format!("Unassign IP: {} from {}", self.text(ip), pnn.cast_signed());
                self.say(10, line);
                self.ips[ip].pnn = UNKNOWN_PNN;
            }
        }
    }

    fn find_takeover_node(&mut self, ip: usize) -> bool {
        let mut best: Option<(usize, i64)> = None;
        for node in 0..self.nodes {
            if !self.can_takeover(node, ip) {
                continue;
            }
            let num = self.coverage(node);
            if best.is_none() || num < best.unwrap().1 {
                best = Some((node, num));
            }
        }
        match best {
            Some((node, _)) => {
                self.ips[ip].pnn = node as u32;
                true
            }
            None => {
                let line = format!(
                    "../../ctdb/server/ipalloc_common.c:110 Could not find node to take over \
                     public address '{}'",
                    self.text(ip)
                );
                self.say(1, line);
                false
            }
        }
    }

    fn basic_allocate_unassigned(&mut self) {
        for ip in 0..self.ips.len() {
            if self.ips[ip].pnn == UNKNOWN_PNN && !self.find_takeover_node(ip) {
                let line = format!("Failed to find node to cover ip {}", self.text(ip));
                self.say(1, line);
            }
        }
    }

    fn deterministic(&mut self, no_ip_failback: bool) {
        self.say(
            3,
            "Deterministic IPs enabled. Resetting all ip allocations".to_owned(),
        );
        let nodes = self.nodes;
        for (i, ip) in self.ips.iter_mut().enumerate() {
            ip.pnn = (i % nodes) as u32;
        }
        if no_ip_failback {
            self.say(
                1,
                "WARNING: 'NoIPFailback' set but ignored - incompatible with 'Deterministic IPs"
                    .to_owned(),
            );
        }
        self.unassign_unsuitable();
        self.basic_allocate_unassigned();
    }

    fn nondeterministic(&mut self, no_ip_failback: bool) {
        let num_ips = i64::try_from(self.ips.len()).unwrap();
        self.unassign_unsuitable();
        self.basic_allocate_unassigned();
        if no_ip_failback {
            return;
        }
        let mut retries = 0i64;
        'again: loop {
            for t in 0..self.ips.len() {
                if self.ips[t].pnn == UNKNOWN_PNN {
                    continue;
                }
                let (mut maxnode, mut maxnum, mut minnode, mut minnum) = (None, 0, None, 0);
                for node in 0..self.nodes {
                    if !self.can_takeover(node, t) {
                        continue;
                    }
                    let num = self.coverage(node);
                    if maxnode.is_none() || num > maxnum {
                        (maxnode, maxnum) = (Some(node), num);
                    }
                    if minnode.is_none() || num < minnum {
                        (minnode, minnum) = (Some(node), num);
                    }
                }
                let Some(maxnode) = maxnode else {
                    let line = format!(
                        "../../ctdb/server/ipalloc_nondeterministic.c:96 Could not find maxnode. \
                         May not be able to serve ip '{}'",
                        self.text(t)
                    );
                    self.say(1, line);
                    continue;
                };
                if maxnum > minnum + 1 && retries < num_ips + 5 {
                    for tt in 0..self.ips.len() {
                        if self.ips[tt].pnn as usize == maxnode {
                            self.find_takeover_node(tt);
                            retries += 1;
                            continue 'again;
                        }
                    }
                }
            }
            break;
        }
    }

    fn dsum(&self, ip: usize, node: usize) -> u32 {
        let key = ip_key(&self.ips[ip].addr);
        let mut sum = 0u32;
        for (t, other) in self.ips.iter().enumerate() {
            if other.pnn as usize == node && t != ip {
                let d = ip_distance(&key, &ip_key(&other.addr));
                sum = sum.wrapping_add(d * d);
            }
        }
        sum
    }

    fn lcp2(&mut self, no_ip_failback: bool, force: &[u32]) {
        const DASHES: &str = " ----------------------------------------";
        self.unassign_unsuitable();
        let n = self.nodes;
        let mut imbalance = vec![0u32; n];
        for (node, imb) in imbalance.iter_mut().enumerate() {
            for t in 0..self.ips.len() {
                if self.ips[t].pnn as usize != node {
                    continue;
                }
                let key = ip_key(&self.ips[t].addr);
                for other in &self.ips[t + 1..] {
                    if other.pnn as usize == node {
                        let d = ip_distance(&key, &ip_key(&other.addr));
                        *imb = imb.wrapping_add(d * d);
                    }
                }
            }
        }
        let mut candidate = vec![true; n];
        for ip in &self.ips {
            if ip.pnn != UNKNOWN_PNN {
                candidate[ip.pnn as usize] = false;
            }
        }
        for &pnn in force {
            if pnn as usize >= n {
                self.say(
                    0,
                    format!("../../ctdb/server/ipalloc_lcp2.c:183unknown node {pnn}"),
                );
                continue;
            }
            self.say(3, format!("Forcing rebalancing of IPs to node {pnn}"));
            candidate[pnn as usize] = true;
        }

        // lcp2_allocate_unassigned
        let mut have_unassigned = true;
        let mut should_loop = true;
        while have_unassigned && should_loop {
            should_loop = false;
            self.say(10, DASHES.to_owned());
            self.say(10, " CONSIDERING MOVES (UNASSIGNED)".to_owned());
            let mut best: Option<(usize, usize, u32)> = None;
            for t in 0..self.ips.len() {
                if self.ips[t].pnn != UNKNOWN_PNN {
                    continue;
                }
                for node in 0..n {
                    if !self.can_takeover(node, t) {
                        continue;
                    }
                    let dsum = self.dsum(t, node);
                    let line = format!(" {} -> {} [+{}]", self.text(t), node, dsum.cast_signed());
                    self.say(10, line);
                    if best.is_none() || dsum < best.unwrap().2 {
                        best = Some((t, node, dsum));
                        should_loop = true;
                    }
                }
            }
            self.say(10, DASHES.to_owned());
            if let Some((t, node, dsum)) = best {
                self.ips[t].pnn = node as u32;
                imbalance[node] = imbalance[node].wrapping_add(dsum);
                let line = format!(" {} -> {} [+{}]", self.text(t), node, dsum.cast_signed());
                self.say(5, line);
            }
            have_unassigned = self.ips.iter().any(|ip| ip.pnn == UNKNOWN_PNN);
        }
        if have_unassigned {
            for t in 0..self.ips.len() {
                if self.ips[t].pnn == UNKNOWN_PNN {
                    let line = format!("Failed to find node to cover ip {}", self.text(t));
                    self.say(1, line);
                }
            }
        }
        if no_ip_failback || !candidate.iter().any(|&c| c) {
            return;
        }

        // lcp2_failback
        loop {
            self.say(10, "+".repeat(41));
            self.say(10, "Selecting most imbalanced node from:".to_owned());
            for (node, imb) in imbalance.iter().enumerate() {
                self.say(10, format!(" {node} [{}]", imb.cast_signed()));
            }
            let mut order: Vec<(u32, usize)> = imbalance.iter().copied().zip(0..n).collect();
            order.sort_by_key(|o| std::cmp::Reverse(o.0));
            let mut again = false;
            for &(imb, src) in &order {
                if imb == 0 {
                    break;
                }
                self.say(10, DASHES.to_owned());
                self.say(
                    10,
                    format!(
                        " CONSIDERING MOVES FROM {src} [{}]",
                        imbalance[src].cast_signed()
                    ),
                );
                let mut best: Option<(usize, u32, usize, u32)> = None;
                for t in 0..self.ips.len() {
                    if self.ips[t].pnn as usize != src {
                        continue;
                    }
                    let srcdsum = self.dsum(t, src);
                    let srcimbl = imbalance[src].wrapping_sub(srcdsum);
                    for dst in 0..n {
                        if !candidate[dst] || !self.can_takeover(dst, t) {
                            continue;
                        }
                        let dstdsum = self.dsum(t, dst);
                        let dstimbl = imbalance[dst].wrapping_add(dstdsum);
                        let line = format!(
                            " {src} [{}] -> {} -> {dst} [+{}]",
                            srcdsum.wrapping_neg().cast_signed(),
                            self.text(t),
                            dstdsum.cast_signed()
                        );
                        self.say(10, line);
                        if dstimbl < imbalance[src]
                            && dstdsum < srcdsum
                            && (best.is_none() || {
                                let (_, ms, _, md) = best.unwrap();
                                srcimbl.wrapping_add(dstimbl) < ms.wrapping_add(md)
                            })
                        {
                            best = Some((t, srcimbl, dst, dstimbl));
                        }
                    }
                }
                self.say(10, DASHES.to_owned());
                if let Some((t, srcimbl, dst, dstimbl)) = best {
                    let line = format!(
                        "{src} [{}] -> {} -> {dst} [+{}]",
                        srcimbl.wrapping_sub(imbalance[src]).cast_signed(),
                        self.text(t),
                        dstimbl.wrapping_sub(imbalance[dst]).cast_signed()
                    );
                    self.say(5, line);
                    imbalance[src] = srcimbl;
                    imbalance[dst] = dstimbl;
                    self.ips[t].pnn = dst as u32;
                    again = true;
                    break;
                }
            }
            if !again {
                break;
            }
        }
    }
}

/// Addresses that exercise the orders and distances: IPv4 in a few subnets, IPv6 in one /96
/// (uniform high words) or spread out, and the IPv4-compatible form that shares a key with an
/// IPv4 address.
fn random_addr(rng: &mut Prng, style: u64) -> IpAddr {
    let v4 = |rng: &mut Prng| {
        let nets = [[10, 0], [10, 1], [192, 168], [172, 16]];
        let net = nets[rng.below(nets.len() as u64) as usize];
        Ipv4Addr::new(net[0], net[1], rng.below(4) as u8, rng.below(256) as u8)
    };
    match style {
        0 => IpAddr::V4(v4(rng)),
        1 => IpAddr::V6(Ipv6Addr::new(
            0xfd00,
            0,
            0,
            0,
            0,
            7,
            rng.below(8) as u16,
            rng.u16(),
        )),
        _ => match rng.below(6) {
            0 | 1 => IpAddr::V4(v4(rng)),
            2 => IpAddr::V6(Ipv6Addr::new(
                0xfd00,
                0,
                0,
                0,
                0,
                0,
                0,
                rng.below(64) as u16,
            )),
            3 => IpAddr::V6(Ipv6Addr::new(
                0x2001,
                0xdb8,
                rng.below(4) as u16,
                0,
                0,
                0,
                0,
                rng.u16(),
            )),
            4 => IpAddr::V6(v4(rng).to_ipv6_compatible()),
            _ => IpAddr::V6(Ipv6Addr::from(u128::from(rng.next_u64()) << 64)),
        },
    }
}

/// Known and available lists as the takeover helper would collect them.
fn random_lists(rng: &mut Prng) -> (Vec<Vec<PublicIp>>, Vec<Vec<PublicIp>>) {
    let nodes = 1 + rng.below(7) as usize;
    let count = 1 + rng.below(40) as usize;
    let style = rng.below(3);
    let pool: Vec<IpAddr> = (0..count).map(|_| random_addr(rng, style)).collect();
    let mut known = vec![Vec::new(); nodes];
    let mut available = vec![Vec::new(); nodes];
    let healthy: Vec<bool> = (0..nodes).map(|_| rng.below(4) != 0).collect();
    for &addr in &pool {
        let everywhere = rng.below(3) != 0;
        let holder = match rng.below(4) {
            0 => UNKNOWN_PNN,
            1 => rng.below(nodes as u64 + 2) as u32,
            _ => rng.below(nodes as u64) as u32,
        };
        for node in 0..nodes {
            if !everywhere && rng.bool() {
                continue;
            }
            // Nodes usually agree on the holder, sometimes not.
            let pnn = if rng.below(5) == 0 {
                rng.below(nodes as u64) as u32
            } else {
                holder
            };
            known[node].push(PublicIp { pnn, addr });
            if healthy[node] {
                available[node].push(PublicIp { pnn, addr });
            }
        }
    }
    (known, available)
}

fn random_options(rng: &mut Prng, nodes: usize) -> Options {
    Options {
        algorithm: match rng.below(4) {
            0 => Algorithm::Deterministic,
            1 => Algorithm::NonDeterministic,
            _ => Algorithm::Lcp2,
        },
        no_ip_takeover: rng.below(8) == 0,
        no_ip_failback: rng.below(6) == 0,
        force_rebalance_nodes: (0..rng.below(3))
            .map(|_| rng.below(nodes as u64 + 1) as u32)
            .collect(),
    }
}

#[test]
fn fast_algorithms_match_a_direct_transliteration() {
    for seed in seeds(600) {
        let mut rng = Prng::new(seed);
        let (known, available) = random_lists(&mut rng);
        let options = random_options(&mut rng, known.len());

        let mut log = LineLog::new(10);
        let result = ipalloc(&known, &available, &options, &mut log);
        // Below DEBUG, LCP2 searches without logging each candidate: same answer.
        let mut quiet = LineLog::new(5);
        let quiet_result = ipalloc(&known, &available, &options, &mut quiet);
        assert_eq!(quiet_result, result, "seed {seed}: {options:?}");

        let mut model = Model::new(&known, &available, &options);
        if !model.ips.is_empty() {
            match options.algorithm {
                Algorithm::Deterministic => model.deterministic(options.no_ip_failback),
                Algorithm::NonDeterministic => model.nondeterministic(options.no_ip_failback),
                Algorithm::Lcp2 => {
                    model.lcp2(options.no_ip_failback, &options.force_rebalance_nodes)
                }
            }
        }
        let ours: Vec<(IpAddr, u32)> = result.iter().map(|ip| (ip.addr, ip.pnn)).collect();
        let expected: Vec<(IpAddr, u32)> = model.ips.iter().map(|ip| (ip.addr, ip.pnn)).collect();
        assert_eq!(ours, expected, "seed {seed}: {options:?}");
        assert_eq!(log.lines, model.lines(10), "seed {seed}: {options:?}");
        assert_eq!(quiet.lines, model.lines(5), "seed {seed}: {options:?}");
    }
}

/// Many addresses on one node: its imbalance passes 2^32 and wraps, as in stock. The other node
/// may take only a few of them, which keeps the slow model quick.
#[test]
fn wrapping_imbalance_matches_the_transliteration() {
    let addrs: Vec<IpAddr> = (0..900u32)
        .map(|i| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)))
        .collect();
    let exact: u64 = (0..addrs.len())
        .flat_map(|i| (i + 1..addrs.len()).map(move |j| (i, j)))
        .map(|(i, j)| u64::from(ip_distance(&ip_key(&addrs[i]), &ip_key(&addrs[j]))).pow(2))
        .sum();
    assert!(
        exact > u64::from(u32::MAX),
        "imbalance {exact} does not wrap"
    );
    let known = vec![
        addrs
            .iter()
            .map(|&addr| PublicIp { pnn: 0, addr })
            .collect::<Vec<_>>(),
        addrs
            .iter()
            .step_by(97)
            .map(|&addr| PublicIp { pnn: 0, addr })
            .collect(),
    ];
    let options = Options::default();
    let mut log = LineLog::new(10);
    let result = ipalloc(&known, &known, &options, &mut log);
    let mut model = Model::new(&known, &known, &options);
    model.lcp2(false, &[]);
    let ours: Vec<u32> = result.iter().map(|ip| ip.pnn).collect();
    let expected: Vec<u32> = model.ips.iter().map(|ip| ip.pnn).collect();
    assert_eq!(ours, expected);
    assert_eq!(log.lines, model.lines(10));
    let mut quiet = LineLog::new(5);
    assert_eq!(ipalloc(&known, &known, &options, &mut quiet), result);
    assert_eq!(quiet.lines, model.lines(5));
    assert!(ours.contains(&1), "nothing moved");
}

// ---------------------------------------------------------------------------------------------
// Address text against the C library.

// The libc crate does not bind these two.
extern "C" {
    fn inet_pton(af: libc::c_int, src: *const libc::c_char, dst: *mut libc::c_void) -> libc::c_int;
    fn inet_ntop(
        af: libc::c_int,
        src: *const libc::c_void,
        dst: *mut libc::c_char,
        size: libc::socklen_t,
    ) -> *const libc::c_char;
}

fn libc_pton(text: &str) -> Option<IpAddr> {
    let c = CString::new(text).ok()?;
    let mut v4 = [0u8; 4];
    let mut v6 = [0u8; 16];
    // SAFETY: `c` is NUL-terminated and each destination is as large as its family needs.
    let (r4, r6) = unsafe {
        (
            inet_pton(libc::AF_INET, c.as_ptr(), v4.as_mut_ptr().cast()),
            inet_pton(libc::AF_INET6, c.as_ptr(), v6.as_mut_ptr().cast()),
        )
    };
    match (r4, r6) {
        (1, _) => Some(IpAddr::V4(Ipv4Addr::from(v4))),
        (_, 1) => Some(IpAddr::V6(Ipv6Addr::from(v6))),
        _ => None,
    }
}

fn libc_ntop6(octets: [u8; 16]) -> String {
    let mut buf = [0 as libc::c_char; 64];
    // SAFETY: the source is 16 bytes and the buffer is larger than INET6_ADDRSTRLEN.
    let p = unsafe { inet_ntop(libc::AF_INET6, octets.as_ptr().cast(), buf.as_mut_ptr(), 64) };
    assert!(!p.is_null());
    // SAFETY: inet_ntop succeeded, so the buffer holds a NUL-terminated string.
    unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

#[test]
fn address_text_matches_glibc() {
    use ctdb::server::ipalloc::addr::{parse_ipv4, parse_ipv6};
    let alphabet = b"0123456789abcdefABCDEF:.:.:x ";
    for seed in seeds(20000) {
        let mut rng = Prng::new(seed);
        let len = rng.below(24) as usize;
        let text: String = (0..len)
            .map(|_| alphabet[rng.below(alphabet.len() as u64) as usize] as char)
            .collect();
        let c = CString::new(text.clone()).unwrap();
        let mut v4 = [0u8; 4];
        let mut v6 = [0u8; 16];
        // SAFETY: as in libc_pton.
        let (r4, r6) = unsafe {
            (
                inet_pton(libc::AF_INET, c.as_ptr(), v4.as_mut_ptr().cast()),
                inet_pton(libc::AF_INET6, c.as_ptr(), v6.as_mut_ptr().cast()),
            )
        };
        assert_eq!(
            parse_ipv4(text.as_bytes()),
            (r4 == 1).then_some(v4),
            "{text:?}"
        );
        assert_eq!(
            parse_ipv6(text.as_bytes()),
            (r6 == 1).then_some(v6),
            "{text:?}"
        );

        // Printing: addresses with runs of zero groups in random places.
        let mut words = [0u16; 8];
        for w in &mut words {
            *w = match rng.below(4) {
                0 | 1 => 0,
                2 => 0xffff,
                _ => rng.u16(),
            };
        }
        let addr = Ipv6Addr::from(words);
        let ip = IpAddr::V6(addr);
        assert_eq!(
            CtdbIp(&ip).to_string(),
            libc_ntop6(addr.octets()),
            "{words:x?}"
        );
    }
    // ip_from_string on well-formed text agrees with the C library, except for the re-read
    // of IPv4-mapped addresses, which CTDB does itself.
    for text in [
        "1.2.3.4",
        "::1",
        "fe80::1",
        "::ffff:1.2.3.4",
        "::1.2.3.4",
        "[::2]",
    ] {
        let ours = ip_from_string(text.as_bytes());
        let libc = libc_pton(text.trim_start_matches('[').trim_end_matches(']'));
        match libc {
            Some(IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_some() => {
                assert_eq!(ours, v6.to_ipv4_mapped().map(IpAddr::V4), "{text}");
            }
            other => assert_eq!(ours, other, "{text}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Driver against stock's driver.

/// Address text for driver input, including forms the driver rejects or rewrites.
fn random_addr_text(rng: &mut Prng, style: u64) -> String {
    match rng.below(40) {
        0 => "1.2.3".to_owned(),
        1 => "bogus".to_owned(),
        2 => format!("::ffff:10.0.0.{}", rng.below(8)),
        3 => format!("[fd00::{:x}]", rng.below(8)),
        4 => format!("010.0.0.{}", rng.below(8)),
        _ => CtdbIp(&random_addr(rng, style)).to_string(),
    }
}

fn random_node_list(rng: &mut Prng, nodes: usize) -> String {
    let count = 1 + rng.below(nodes as u64) as usize;
    (0..count)
        .map(|_| rng.below(nodes as u64).to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn random_case(rng: &mut Prng, extensions: bool) -> Case {
    let nodes = 1 + rng.below(8) as usize;
    let flags: Vec<String> = (0..nodes)
        .map(|_| {
            let f = [0u32, 0, 0, 0, 1, 2, 4, 8, 0x10, 0x20, 0x22, 0x40][rng.below(12) as usize];
            if rng.below(3) == 0 {
                format!("0x{f:x}")
            } else {
                f.to_string()
            }
        })
        .collect();
    let multi = rng.below(5) == 0;
    let mut case = Case {
        args: vec!["ipalloc".to_owned(), flags.join(",")],
        ..Case::default()
    };
    if multi {
        case.args.push("multi".to_owned());
    }
    let algorithm = match rng.below(50) {
        0 => "best",
        n => ["lcp2", "lcp2", "nondet", "det"][n as usize % 4],
    };
    case.env
        .push(("CTDB_IP_ALGORITHM".to_owned(), algorithm.to_owned()));
    let level = ["ERR", "WARNING", "NOTICE", "INFO", "DEBUG", "3", "junk", ""];
    match rng.below(10) {
        0 => {}
        i => {
            let l = level[(i as usize - 1) % level.len()];
            case.env
                .push(("CTDB_TEST_LOGLEVEL".to_owned(), l.to_owned()));
        }
    }
    if rng.below(8) == 0 {
        case.env
            .push(("CTDB_SET_NoIPTakeover".to_owned(), "1".to_owned()));
    }
    if rng.below(30) == 0 {
        // One value too many: both drivers refuse.
        let states: Vec<&str> = (0..=nodes).map(|_| "5").collect();
        case.env
            .push(("CTDB_TEST_RUNSTATE".to_owned(), states.join(",")));
    } else if rng.below(4) == 0 {
        let states: Vec<&str> = (0..nodes)
            .map(|_| ["4", "5", "5", "5"][rng.below(4) as usize])
            .collect();
        case.env
            .push(("CTDB_TEST_RUNSTATE".to_owned(), states.join(",")));
    }
    if extensions {
        if rng.below(5) == 0 {
            case.env
                .push(("CTDB_SET_NoIPFailback".to_owned(), "1".to_owned()));
        }
        if rng.below(4) == 0 {
            let list: Vec<String> = (0..1 + rng.below(2))
                .map(|_| rng.below(nodes as u64 + 1).to_string())
                .collect();
            case.env
                .push(("CTDB_TEST_REBALANCE_NODES".to_owned(), list.join(",")));
        }
    }

    let style = rng.below(3);
    let most = if rng.below(10) == 0 { 300 } else { 40 };
    let count = 1 + rng.below(most) as usize;
    let pool: Vec<String> = (0..count).map(|_| random_addr_text(rng, style)).collect();
    let pnn_text = |rng: &mut Prng| match rng.below(6) {
        0 => "-1".to_owned(),
        1 => (nodes + rng.below(3) as usize).to_string(),
        _ => rng.below(nodes as u64).to_string(),
    };
    let mut input = String::new();
    if multi {
        for _ in 0..nodes {
            for addr in &pool {
                if rng.below(4) != 0 {
                    let _ = write!(input, "{addr} {}", pnn_text(rng));
                    // Node lists are not allowed here: both drivers fail an assertion.
                    if rng.below(400) == 0 {
                        let _ = write!(input, " 0");
                    }
                    input.push('\n');
                }
            }
            input.push('\n');
        }
    } else {
        for addr in &pool {
            let _ = write!(input, "{addr} {}", pnn_text(rng));
            match rng.below(6) {
                0 => {
                    let _ = write!(input, " {}", random_node_list(rng, nodes));
                }
                1 => {
                    let _ = write!(input, " # comment");
                }
                _ => {}
            }
            input.push('\n');
        }
        if rng.below(20) == 0 {
            input.push_str("\n10.99.99.99 0\n");
        }
    }
    case.input = input;
    case
}

/// A few fixed cases that random ones rarely reach: large LCP2 runs and wrapping sums.
fn fixed_cases() -> Vec<Case> {
    let lcp2 = |flags: &str, input: String, level: &str| Case {
        args: vec!["ipalloc".to_owned(), flags.to_owned()],
        env: vec![
            ("CTDB_IP_ALGORITHM".to_owned(), "lcp2".to_owned()),
            ("CTDB_TEST_LOGLEVEL".to_owned(), level.to_owned()),
        ],
        input,
    };
    let mut cases = Vec::new();
    // 1100 addresses on node 0, then two more nodes: node 0's imbalance has wrapped.
    let input: String = (0..1100u32)
        .map(|i| format!("{} 0\n", Ipv4Addr::from(0x0a00_0000 + i * 7)))
        .collect();
    cases.push(lcp2("0,0,0", input, "INFO"));
    // IPv6 in one /96 and mixed with IPv4, all unassigned.
    let input: String = (0..300u32)
        .map(|i| format!("fd00::7:{:x}:{:x} -1\n", i / 17, i * 97 % 65536))
        .collect();
    cases.push(lcp2("0,0,0,0", input, "INFO"));
    let input: String = (0..300u32)
        .map(|i| {
            if i % 3 == 0 {
                format!("2001:db8:{:x}::{:x} -1\n", i % 5, i)
            } else {
                format!("192.168.{}.{} -1\n", i % 7, i)
            }
        })
        .collect();
    cases.push(lcp2("0,0,0,0,0", input, "INFO"));
    cases
}

#[test]
fn differential_against_stock_reference() {
    let Some(reference) = std::env::var_os("CTDB_IPALLOC_REFERENCE") else {
        println!("CTDB_IPALLOC_REFERENCE not set: comparison with stock skipped");
        return;
    };
    let reference = reference.to_string_lossy().into_owned();
    let extensions = std::env::var_os("CTDB_IPALLOC_REFERENCE_EXTENSIONS").is_some();
    let count: u64 = std::env::var("CTDB_IPALLOC_DIFF_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(300);
    let mut cases: Vec<(String, Case)> = fixed_cases()
        .into_iter()
        .enumerate()
        .map(|(i, c)| (format!("fixed case {i}"), c))
        .collect();
    for seed in seeds(count) {
        let mut rng = Prng::new(seed);
        cases.push((format!("seed {seed}"), random_case(&mut rng, extensions)));
    }
    let mut failures = Vec::new();
    let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
    for (name, case) in &cases {
        let mut ours = run_driver(OUR_DRIVER, case);
        // The one place a program name shows: the failed assertion.
        ours.output = ours.output.replace("ctdb-ipalloc:", "ctdb_takeover_tests:");
        let stock = run_driver(&reference, case);
        *by_status.entry(stock.status.clone()).or_default() += 1;
        if ours != stock {
            failures.push(format!(
                "{name}: {:?} {:?}\n--- input\n{}--- stock ({})\n{}\n--- ours ({})\n{}",
                case.args,
                case.env,
                case.input,
                stock.status,
                stock.output,
                ours.status,
                ours.output
            ));
        }
    }
    println!(
        "{} of {} cases identical to stock (stock outcomes: {by_status:?})",
        cases.len() - failures.len(),
        cases.len()
    );
    assert!(
        failures.is_empty(),
        "{} cases differ; first:\n{}",
        failures.len(),
        failures[0]
    );
}
