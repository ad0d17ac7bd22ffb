//! The nodes file (mirrors `ctdb_read_nodes_file` in `ctdb/common/ctdb_util.c`, the line
//! splitting of `file_lines_load` in `lib/util/util_file.c`, and `ip_from_string` in
//! `ctdb/protocol/protocol_util.c`).
//!
//! A node's PNN is its position among the non-blank lines: blank lines are skipped without
//! using a PNN, while a line starting with `#` is a *deleted* node that keeps its PNN so that
//! later nodes do not get renumbered. A `\r` ends a line's content (so CRLF files work) and
//! only spaces and tabs count as blanks. Stock does not reject duplicate addresses;
//! [`duplicate_addresses`] finds them so that callers can warn.

use crate::protocol::sock_addr::SockAddr;
use log::warn;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

/// `CTDB_PORT`; stock asks `getservbyname("ctdb", "tcp")` first, which Debian does not list.
pub const CTDB_PORT: u16 = 4379;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeEntry {
    pub pnn: u32,
    /// The node's transport address; `0.0.0.0` for a deleted node.
    pub addr: SockAddr,
    pub deleted: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodesError {
    pub file: String,
    /// 0 for errors not tied to a line.
    pub line: u32,
    pub text: String,
    pub reason: String,
}

impl fmt::Display for NodesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.reason)
        } else {
            write!(
                f,
                "{}:{}: {}: \"{}\"",
                self.file, self.line, self.reason, self.text
            )
        }
    }
}

impl std::error::Error for NodesError {}

/// `file_lines_load`: split at `\n`; a `\r` or NUL cuts the rest of its line.
pub(crate) fn file_lines(text: &str) -> impl Iterator<Item = (u32, &str)> {
    let mut lines: Vec<&str> = text.split('\n').collect();
    if text.ends_with('\n') {
        lines.pop();
    }
    lines.into_iter().zip(1u32..).map(|(line, number)| {
        let end = line.find(['\r', '\0']).unwrap_or(line.len());
        (number, &line[..end])
    })
}

/// `ip_from_string`: an IPv4 literal, or an IPv6 literal optionally in brackets. IPv4-mapped
/// IPv6 addresses come back as IPv4, re-read from the text after the last `:` (so the dotted
/// form `::ffff:1.2.3.4` works and the hex form `::ffff:102:304` is rejected, as in stock).
pub fn parse_ip_literal(text: &str) -> Option<IpAddr> {
    let Some(last_colon) = text.rfind(':') else {
        return text.parse::<Ipv4Addr>().ok().map(IpAddr::V4);
    };
    // Stock copies the text into a 64-byte buffer first.
    if text.len() >= 64 {
        return None;
    }
    let (inner, last_colon) = match text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        Some(inner) => (inner, inner.rfind(':')?),
        None => (text, last_colon),
    };
    let v6: std::net::Ipv6Addr = inner.parse().ok()?;
    if v6.to_ipv4_mapped().is_some() {
        return inner[last_colon + 1..]
            .parse::<Ipv4Addr>()
            .ok()
            .map(IpAddr::V4);
    }
    Some(IpAddr::V6(v6))
}

/// Parses a nodes file with the standard port.
pub fn parse(text: &str, file_name: &str) -> Result<Vec<NodeEntry>, NodesError> {
    parse_with_port(text, file_name, CTDB_PORT)
}

pub fn parse_with_port(
    text: &str,
    file_name: &str,
    port: u16,
) -> Result<Vec<NodeEntry>, NodesError> {
    let mut nodes = Vec::new();
    for (line, raw) in file_lines(text) {
        let entry = raw.trim_start_matches([' ', '\t']);
        let entry = match entry.trim_end_matches([' ', '\t']) {
            "" => continue,
            trimmed => trimmed,
        };
        let pnn = u32::try_from(nodes.len()).map_err(|_| NodesError {
            file: file_name.to_string(),
            line,
            text: entry.to_string(),
            reason: "too many nodes".to_string(),
        })?;
        let (ip, deleted) = if entry.starts_with('#') {
            (IpAddr::V4(Ipv4Addr::UNSPECIFIED), true)
        } else {
            let ip = parse_ip_literal(entry).ok_or_else(|| NodesError {
                file: file_name.to_string(),
                line,
                text: entry.to_string(),
                reason: "invalid node address".to_string(),
            })?;
            (ip, false)
        };
        nodes.push(NodeEntry {
            pnn,
            addr: SockAddr::new(ip, port),
            deleted,
        });
    }
    Ok(nodes)
}

/// Pairs `(first_pnn, later_pnn)` of live nodes sharing an address.
pub fn duplicate_addresses(nodes: &[NodeEntry]) -> Vec<(u32, u32)> {
    let mut pairs = Vec::new();
    for (i, a) in nodes.iter().enumerate() {
        if a.deleted {
            continue;
        }
        if let Some(b) = nodes[..i].iter().find(|b| !b.deleted && b.addr == a.addr) {
            pairs.push((b.pnn, a.pnn));
        }
    }
    pairs
}

/// Reads a nodes file. Unlike the config file it must exist (stock exits otherwise).
/// Duplicate addresses are logged, not rejected.
pub fn load(path: &Path) -> Result<Vec<NodeEntry>, NodesError> {
    let file_name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| NodesError {
        file: file_name.clone(),
        line: 0,
        text: String::new(),
        reason: format!("failed to read nodes file: {e}"),
    })?;
    let nodes = parse(&String::from_utf8_lossy(&bytes), &file_name)?;
    for (first, again) in duplicate_addresses(&nodes) {
        warn!("{file_name}: node {again} has the same address as node {first}");
    }
    Ok(nodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SockAddr {
        SockAddr::new(s.parse().unwrap(), CTDB_PORT)
    }

    fn live(pnn: u32, s: &str) -> NodeEntry {
        NodeEntry {
            pnn,
            addr: addr(s),
            deleted: false,
        }
    }

    fn deleted(pnn: u32) -> NodeEntry {
        NodeEntry {
            pnn,
            addr: addr("0.0.0.0"),
            deleted: true,
        }
    }

    #[test]
    fn blank_lines_skip_and_comments_delete() {
        let text = "\n10.0.0.1\n  \n\t10.0.0.2  \n#10.0.0.3\n   # anything\nfd00::5357:5f04\n\n\n";
        assert_eq!(
            parse(text, "nodes").unwrap(),
            vec![
                live(0, "10.0.0.1"),
                live(1, "10.0.0.2"),
                deleted(2),
                deleted(3),
                live(4, "fd00::5357:5f04"),
            ]
        );
    }

    #[test]
    fn port_and_layout() {
        let nodes = parse("127.0.0.1\n", "nodes").unwrap();
        assert_eq!(nodes[0].addr.port(), 4379);
        let nodes = parse_with_port("127.0.0.1\n#\n", "nodes", 9999).unwrap();
        assert_eq!(
            nodes[1].addr,
            SockAddr::new("0.0.0.0".parse().unwrap(), 9999)
        );
    }

    #[test]
    fn crlf_and_no_final_newline() {
        assert_eq!(
            parse("10.0.0.1\r\n10.0.0.2", "nodes").unwrap(),
            vec![live(0, "10.0.0.1"), live(1, "10.0.0.2")]
        );
    }

    #[test]
    fn empty_file_has_no_nodes() {
        assert!(parse("", "nodes").unwrap().is_empty());
        assert!(parse("\n\n  \n", "nodes").unwrap().is_empty());
    }

    #[test]
    fn bad_address_names_file_and_line() {
        for bad in [
            "10.0.0",
            "10.0.0.1 # node 1",
            "host.example",
            "10.0.0.1:4379",
            "fe80::1%eth0",
            "010.0.0.1",
            "::ffff:102:304",
        ] {
            let e = parse(&format!("10.0.0.9\n\n{bad}\n"), "/etc/ctdb/nodes").unwrap_err();
            assert_eq!(e.line, 3, "{bad}");
            assert_eq!(
                e.to_string(),
                format!("/etc/ctdb/nodes:3: invalid node address: \"{bad}\"")
            );
        }
    }

    #[test]
    fn address_forms() {
        assert_eq!(
            parse_ip_literal("[fd00::1]"),
            Some("fd00::1".parse().unwrap())
        );
        assert_eq!(
            parse_ip_literal("::ffff:10.1.2.3"),
            Some("10.1.2.3".parse().unwrap())
        );
        assert_eq!(
            parse_ip_literal("[::ffff:10.1.2.3]"),
            Some("10.1.2.3".parse().unwrap())
        );
        assert_eq!(parse_ip_literal("[10.1.2.3]"), None);
        assert_eq!(parse_ip_literal(""), None);
        let nodes = parse("::ffff:10.1.2.3\n", "nodes").unwrap();
        assert_eq!(nodes, vec![live(0, "10.1.2.3")]);
    }

    #[test]
    fn duplicates_are_reported_not_rejected() {
        let nodes = parse("10.0.0.1\n#\n#\n10.0.0.2\n10.0.0.1\n", "nodes").unwrap();
        assert_eq!(nodes.len(), 5);
        assert_eq!(duplicate_addresses(&nodes), vec![(0, 4)]);
    }

    #[test]
    fn load_missing_file_is_an_error() {
        let e = load(Path::new("/nonexistent/nodes")).unwrap_err();
        assert_eq!(e.line, 0);
        assert!(e
            .to_string()
            .starts_with("/nonexistent/nodes: failed to read"));
    }

    /// Cross-check with stock `ctdb -X listnodes`, which reads the file without a daemon.
    #[test]
    fn agrees_with_stock_listnodes() {
        let tool = Path::new("/usr/bin/ctdb");
        if !tool.exists() {
            return;
        }
        let dir = std::env::temp_dir().join(format!("ctdb-nodes-stock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let files = [
            "\n10.0.0.1\n  \n\t10.0.0.2  \n#10.0.0.3\n::ffff:10.1.2.3\n[fd00::1]\n10.0.0.1\r\n",
            "10.0.0.1 # x\n",
            "#\n#\nfd00::5357:5f01\n",
            "10.0.0.1\n10.0.0\n",
        ];
        for text in files {
            std::fs::write(dir.join("nodes"), text).unwrap();
            let out = std::process::Command::new(tool)
                .args(["-X", "listnodes"])
                .env("CTDB_BASE", &dir)
                .env("CTDB_SOCKET", dir.join("no.socket"))
                .output()
                .unwrap();
            match parse(text, "nodes") {
                Ok(nodes) => {
                    assert!(out.status.success(), "stock rejected {text:?}");
                    let ours: String = nodes
                        .iter()
                        .filter(|n| !n.deleted)
                        .map(|n| format!("|{}|{}|\n", n.pnn, n.addr))
                        .collect();
                    assert_eq!(ours, String::from_utf8_lossy(&out.stdout), "{text:?}");
                }
                Err(e) => assert!(!out.status.success(), "stock accepted {text:?}, we: {e}"),
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
