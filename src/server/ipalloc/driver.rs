//! The IP allocation test driver, `ctdb_takeover_tests ipalloc <node-flags> [multi]` (mirrors
//! `ctdb/tests/src/ctdb_takeover_tests.c` and `ipalloc_read_known_ips.c`), as a pure function
//! from arguments, environment and standard input to output and exit status. The
//! `ctdb-ipalloc` binary is a thin shell around [`run`].
//!
//! Input, read line by line as `fgets` into a 1024-byte buffer reads it (longer lines arrive in
//! pieces), up to the first empty line: `IP PNN [N,N,...]`. PNN is the node that node believes
//! hosts the address (-1 if missing); the optional list names the nodes that know the address
//! (default: all). With `multi`, each node instead gets its own section of `IP PNN` lines,
//! sections separated by empty lines.
//!
//! Environment: `CTDB_IP_ALGORITHM` (`lcp2`, `nondet`, `det`), `CTDB_SET_NoIPTakeover`,
//! `CTDB_TEST_RUNSTATE` (one value per node, or `1` for all; only RUNNING = 5 nodes have
//! addresses available), `CTDB_TEST_LOGLEVEL` (default DEBUG). Extensions stock's driver does not
//! have (it always passes false and no nodes): `CTDB_SET_NoIPFailback` and
//! `CTDB_TEST_REBALANCE_NODES` (comma-separated PNNs).
//!
//! Output: stock's log lines on standard error (no prefix), then `IP PNN` per address in list
//! order on standard output, PNN printed as a signed number.

use std::fmt::Write as _;

use super::addr::{ip_from_string, CtdbIp};
use super::{ipalloc, Algorithm, LineLog, Options, PublicIp, UNKNOWN_PNN};
use crate::common::logging::{debug_level_parse, DEBUG_DEBUG, DEBUG_ERR, DEBUG_WARNING};

pub const ENV_ALGORITHM: &str = "CTDB_IP_ALGORITHM";
pub const ENV_NO_IP_TAKEOVER: &str = "CTDB_SET_NoIPTakeover";
pub const ENV_NO_IP_FAILBACK: &str = "CTDB_SET_NoIPFailback";
pub const ENV_REBALANCE_NODES: &str = "CTDB_TEST_REBALANCE_NODES";
pub const ENV_RUNSTATE: &str = "CTDB_TEST_RUNSTATE";
pub const ENV_LOGLEVEL: &str = "CTDB_TEST_LOGLEVEL";

/// `CTDB_RUNSTATE_RUNNING`.
const RUNSTATE_RUNNING: u32 = 5;
/// `NODE_FLAGS_INACTIVE | NODE_FLAGS_DISABLED`: such nodes have nothing available.
const FLAGS_CANNOT_HOST: u32 = 0x3f;
/// `fgets` keeps one byte of its 1024-byte buffer for the terminating NUL.
const LINE_CHUNK: usize = 1023;

/// The driver's environment variables (`None` = unset), as raw bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Env {
    pub algorithm: Option<Vec<u8>>,
    pub no_ip_takeover: Option<Vec<u8>>,
    pub no_ip_failback: Option<Vec<u8>>,
    pub rebalance_nodes: Option<Vec<u8>>,
    pub runstate: Option<Vec<u8>>,
    pub loglevel: Option<Vec<u8>>,
}

impl Env {
    /// Reads the variables through `get`, e.g. `|name| std::env::var_os(name)` as bytes.
    pub fn from_lookup(mut get: impl FnMut(&str) -> Option<Vec<u8>>) -> Self {
        Env {
            algorithm: get(ENV_ALGORITHM),
            no_ip_takeover: get(ENV_NO_IP_TAKEOVER),
            no_ip_failback: get(ENV_NO_IP_FAILBACK),
            rebalance_nodes: get(ENV_REBALANCE_NODES),
            runstate: get(ENV_RUNSTATE),
            loglevel: get(ENV_LOGLEVEL),
        }
    }
}

/// How the driver ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    /// A failed `assert` (stock aborts; the shell should too).
    Abort,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit: Exit,
}

/// The whole program: `args` are the arguments after the program name.
pub fn run(program: &str, args: &[Vec<u8>], env: &Env, stdin: &[u8]) -> Output {
    let mut out = Output {
        stdout: Vec::new(),
        stderr: Vec::new(),
        exit: Exit::Code(0),
    };
    let multi = match args {
        [op, _] if op == b"ipalloc" => false,
        [op, _, m] if op == b"ipalloc" && m == b"multi" => true,
        _ => {
            let _ = writeln!(Sink(&mut out.stderr), "usage: {program} <op>");
            out.exit = Exit::Code(1);
            return out;
        }
    };
    let level = env
        .loglevel
        .as_deref()
        .and_then(|l| debug_level_parse(&String::from_utf8_lossy(l)))
        .unwrap_or(DEBUG_DEBUG);
    out.exit = ipalloc_test(program, &args[1], multi, env, stdin, level, &mut out);
    out
}

/// Appends to a byte buffer through `fmt::Write`.
struct Sink<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Sink<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

fn log_line(out: &mut Output, level: i32, wanted: i32, parts: &[&[u8]]) {
    if level <= wanted {
        for part in parts {
            out.stderr.extend_from_slice(part);
        }
        out.stderr.push(b'\n');
    }
}

fn ipalloc_test(
    program: &str,
    node_states: &[u8],
    multi: bool,
    env: &Env,
    stdin: &[u8],
    level: i32,
    out: &mut Output,
) -> Exit {
    let flags: Vec<u32> = Tokens::new(node_states)
        .split(b",")
        .map(|tok| c_strtol(tok, 0) as u32)
        .collect();
    let num_nodes = flags.len();

    let algorithm = match env.algorithm.as_deref() {
        None | Some(b"lcp2") => Algorithm::Lcp2,
        Some(b"nondet") => Algorithm::NonDeterministic,
        Some(b"det") => Algorithm::Deterministic,
        Some(other) => {
            log_line(
                out,
                DEBUG_ERR,
                level,
                &[b"ERROR: unknown IP algorithm ", other],
            );
            return Exit::Code(1);
        }
    };
    let flag_set =
        |value: &Option<Vec<u8>>| value.as_deref().is_some_and(|v| c_strtol(v, 0) as u32 != 0);
    let rebalance_nodes: Vec<u32> = env
        .rebalance_nodes
        .as_deref()
        .map(|v| {
            Tokens::new(v)
                .split(b",")
                .map(|t| c_strtol(t, 0) as u32)
                .collect()
        })
        .unwrap_or_default();
    let options = Options {
        algorithm,
        no_ip_takeover: flag_set(&env.no_ip_takeover),
        no_ip_failback: flag_set(&env.no_ip_failback),
        force_rebalance_nodes: rebalance_nodes,
    };

    let Some(known) = read_known_ips(stdin, num_nodes, multi, level, out) else {
        let _ = writeln!(
            Sink(&mut out.stderr),
            "{program}: ../../ctdb/tests/src/ctdb_takeover_tests.c:64: read_ctdb_public_ip_info: \
             Assertion `*known != NULL' failed."
        );
        return Exit::Abort;
    };

    let runstate: Vec<u32> = match env.runstate.as_deref() {
        None => vec![RUNSTATE_RUNNING; num_nodes],
        Some(b"1") => vec![1; num_nodes],
        Some(list) => {
            let values: Vec<u32> = Tokens::new(list)
                .split(b",")
                .map(|t| c_strtol(t, 0) as u32)
                .collect();
            if values.len() != num_nodes {
                let _ = writeln!(
                    Sink(&mut out.stderr),
                    "ERROR: Wrong number of values in {ENV_RUNSTATE}"
                );
                return Exit::Code(1);
            }
            values
        }
    };
    let available: Vec<Vec<PublicIp>> = (0..num_nodes)
        .map(|n| {
            if runstate[n] == RUNSTATE_RUNNING && flags[n] & FLAGS_CANNOT_HOST == 0 {
                known[n].clone()
            } else {
                Vec::new()
            }
        })
        .collect();

    let mut log = LineLog::new(level);
    let result = ipalloc(&known, &available, &options, &mut log);
    for line in &log.lines {
        out.stderr.extend_from_slice(line.as_bytes());
        out.stderr.push(b'\n');
    }
    let mut text = String::new();
    for ip in &result {
        let _ = writeln!(text, "{} {}", CtdbIp(&ip.addr), ip.pnn.cast_signed());
    }
    out.stdout = text.into_bytes();
    Exit::Code(0)
}

/// `ipalloc_read_known_ips`: each node's known list, or `None` where stock gives up.
fn read_known_ips(
    stdin: &[u8],
    num_nodes: usize,
    multi: bool,
    level: i32,
    out: &mut Output,
) -> Option<Vec<Vec<PublicIp>>> {
    let mut lines = Lines::new(stdin);
    let mut known: Vec<Vec<PublicIp>> = vec![Vec::new(); num_nodes];
    if multi {
        for list in &mut known {
            *list = read_section(&mut lines, None, level, out)?;
        }
    } else {
        read_section(&mut lines, Some(&mut known), level, out)?;
    }
    Some(known)
}

/// `read_ctdb_public_ip_info_node`: lines up to an empty one. In single mode each address is
/// added straight to the nodes that know it; the section's own list is what multi mode keeps.
fn read_section(
    lines: &mut Lines<'_>,
    mut known: Option<&mut Vec<Vec<PublicIp>>>,
    level: i32,
    out: &mut Output,
) -> Option<Vec<PublicIp>> {
    let mut section = Vec::new();
    while let Some(line) = lines.next_line() {
        if line.is_empty() {
            break;
        }
        let mut tokens = Tokens::new(line);
        let Some(addr_text) = tokens.next(b" \t") else {
            log_line(
                out,
                DEBUG_WARNING,
                level,
                &[b"WARNING, bad line ignored :", line],
            );
            continue;
        };
        let Some(addr) = ip_from_string(addr_text) else {
            log_line(out, DEBUG_ERR, level, &[b"ERROR, bad address :", addr_text]);
            continue;
        };
        let pnn = tokens
            .next(b" \t")
            .map_or(UNKNOWN_PNN, |t| c_strtol(t, 10) as i32 as u32);
        let ip = PublicIp { pnn, addr };
        section.push(ip);
        let allowed = tokens.next(b" \t#");
        let Some(known) = known.as_deref_mut() else {
            if allowed.is_some() {
                log_line(out, DEBUG_ERR, level, &[b"ERROR, bad token"]);
                return None;
            }
            continue;
        };
        match allowed {
            None => known.iter_mut().for_each(|list| list.push(ip)),
            Some(list) => {
                for node_text in Tokens::new(list).split(b",") {
                    let node = c_strtol(node_text, 10) as i32;
                    // Stock writes out of bounds here; refuse instead.
                    let Some(list) = usize::try_from(node).ok().and_then(|n| known.get_mut(n))
                    else {
                        log_line(
                            out,
                            DEBUG_ERR,
                            level,
                            &[b"ERROR, no such node: ", node_text],
                        );
                        return None;
                    };
                    list.push(ip);
                }
            }
        }
    }
    Some(section)
}

/// `fgets(line, 1024, stdin)` with the newline removed, as C strings (stopping at a NUL).
struct Lines<'a> {
    rest: &'a [u8],
}

impl<'a> Lines<'a> {
    fn new(input: &'a [u8]) -> Self {
        Lines { rest: input }
    }

    fn next_line(&mut self) -> Option<&'a [u8]> {
        if self.rest.is_empty() {
            return None;
        }
        let limit = self.rest.len().min(LINE_CHUNK);
        let len = self.rest[..limit]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(limit, |i| i + 1);
        let (chunk, rest) = self.rest.split_at(len);
        self.rest = rest;
        let end = chunk
            .iter()
            .position(|&b| b == b'\0' || b == b'\n')
            .unwrap_or(chunk.len());
        Some(&chunk[..end])
    }
}

/// `strtok` over one string: tokens are maximal runs of non-delimiters.
struct Tokens<'a> {
    rest: &'a [u8],
}

impl<'a> Tokens<'a> {
    fn new(text: &'a [u8]) -> Self {
        let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
        Tokens { rest: &text[..end] }
    }

    fn next(&mut self, delims: &[u8]) -> Option<&'a [u8]> {
        let start = self
            .rest
            .iter()
            .position(|b| !delims.contains(b))
            .unwrap_or(self.rest.len());
        let text = &self.rest[start..];
        if text.is_empty() {
            self.rest = text;
            return None;
        }
        match text.iter().position(|b| delims.contains(b)) {
            Some(end) => {
                self.rest = &text[end + 1..];
                Some(&text[..end])
            }
            None => {
                self.rest = &text[text.len()..];
                Some(text)
            }
        }
    }

    fn split(mut self, delims: &'a [u8]) -> impl Iterator<Item = &'a [u8]> {
        std::iter::from_fn(move || self.next(delims))
    }
}

/// glibc `strtol(text, NULL, base)` for base 0 or 10: leading blanks, one sign, then digits
/// (base 0: `0x` hex, leading `0` octal); stops at the first non-digit, no digits is 0, and
/// overflow saturates to the `long` range.
pub fn c_strtol(text: &[u8], base: u32) -> i64 {
    let mut at = text
        .iter()
        .take_while(|&&b| matches!(b, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r'))
        .count();
    let negative = match text.get(at) {
        Some(b'-') => {
            at += 1;
            true
        }
        Some(b'+') => {
            at += 1;
            false
        }
        _ => false,
    };
    let rest = &text[at..];
    let hex_prefix = rest.len() > 2
        && rest[0] == b'0'
        && (rest[1] | 0x20) == b'x'
        && rest[2].is_ascii_hexdigit();
    let (radix, digits) = match base {
        0 | 16 if hex_prefix => (16, &rest[2..]),
        0 if rest.first() == Some(&b'0') => (8, rest),
        0 => (10, rest),
        other => (other, rest),
    };
    let mut magnitude: u64 = 0;
    let mut overflow = false;
    for &b in digits {
        let Some(digit) = char::from(b).to_digit(radix) else {
            break;
        };
        match magnitude
            .checked_mul(u64::from(radix))
            .and_then(|m| m.checked_add(u64::from(digit)))
        {
            Some(m) => magnitude = m,
            None => overflow = true,
        }
    }
    if negative {
        if overflow || magnitude > i64::MIN.unsigned_abs() {
            i64::MIN
        } else {
            0i64.wrapping_sub_unsigned(magnitude)
        }
    } else if overflow {
        i64::MAX
    } else {
        i64::try_from(magnitude).unwrap_or(i64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strtol_like_glibc() {
        for (text, base, value) in [
            ("12", 10, 12),
            ("  -7x", 10, -7),
            ("0x20", 0, 32),
            ("0x", 0, 0),
            ("010", 0, 8),
            ("010", 10, 10),
            ("", 0, 0),
            ("abc", 10, 0),
            ("99999999999999999999", 10, i64::MAX),
            ("-99999999999999999999", 10, i64::MIN),
        ] {
            assert_eq!(
                c_strtol(text.as_bytes(), base),
                value,
                "{text:?} base {base}"
            );
        }
    }

    #[test]
    fn strtok_and_fgets() {
        let mut t = Tokens::new(b"  1.2.3.4\t0 # 1,2");
        assert_eq!(t.next(b" \t"), Some(&b"1.2.3.4"[..]));
        assert_eq!(t.next(b" \t"), Some(&b"0"[..]));
        // A comment marker is a delimiter of the third token, so "# 1,2" yields "1,2".
        assert_eq!(t.next(b" \t#"), Some(&b"1,2"[..]));
        assert_eq!(t.next(b" \t#"), None);

        let long = [b'x'; 1030];
        let mut input = long.to_vec();
        input.extend_from_slice(b"\nnext\n\nafter");
        let mut lines = Lines::new(&input);
        assert_eq!(lines.next_line().map(<[u8]>::len), Some(1023));
        assert_eq!(lines.next_line().map(<[u8]>::len), Some(7));
        assert_eq!(lines.next_line(), Some(&b"next"[..]));
        assert_eq!(lines.next_line(), Some(&b""[..]));
        assert_eq!(lines.next_line(), Some(&b"after"[..]));
        assert_eq!(lines.next_line(), None);
    }

    fn drive(args: &[&str], env: Env, stdin: &str) -> Output {
        let args: Vec<Vec<u8>> = args.iter().map(|a| a.as_bytes().to_vec()).collect();
        run("ctdb-ipalloc", &args, &env, stdin.as_bytes())
    }

    #[test]
    fn allowed_nodes_and_comments() {
        let env = Env {
            loglevel: Some(b"ERR".to_vec()),
            ..Env::default()
        };
        let out = drive(
            &["ipalloc", "0,0,0"],
            env,
            "10.0.0.1 -1 2\n10.0.0.2 -1 #\nbogus 1\n   \n",
        );
        assert_eq!(out.exit, Exit::Code(0));
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            "ERROR, bad address :bogus\n"
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "10.0.0.2 0\n10.0.0.1 2\n"
        );
    }

    #[test]
    fn errors_match_stock() {
        let out = drive(&["ipalloc"], Env::default(), "");
        assert_eq!(out.exit, Exit::Code(1));
        let env = Env {
            algorithm: Some(b"best".to_vec()),
            ..Env::default()
        };
        let out = drive(&["ipalloc", "0"], env, "");
        assert_eq!(out.exit, Exit::Code(1));
        assert_eq!(out.stderr, b"ERROR: unknown IP algorithm best\n");
        let env = Env {
            runstate: Some(b"5,5".to_vec()),
            ..Env::default()
        };
        let out = drive(&["ipalloc", "0"], env, "1.1.1.1 0\n");
        assert_eq!(out.exit, Exit::Code(1));
        let out = drive(
            &["ipalloc", "0,0", "multi"],
            Env::default(),
            "1.1.1.1 0 1\n",
        );
        assert_eq!(out.exit, Exit::Abort);
    }
}
