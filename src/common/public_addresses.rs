//! The public addresses file (mirrors `ctdb_set_public_addresses` and
//! `ctdb_add_public_address` in `ctdb/server/ctdb_takeover.c`).
//!
//! Each line is `<ip>/<bits> <iface>[,<iface>...]`, split at blanks; anything after the
//! interface list is ignored, as in stock. Leading blanks are allowed, and lines that are empty
//! or start with `#` are skipped; line numbers in errors are file lines. The list is returned in
//! file order: stock keeps its own list in *reverse* file order (trap 65), which is the
//! daemon's business.
//!
//! Deliberately stricter than stock: a mask longer than the address (stock takes `/99`, and
//! truncates huge values) and an interface list with no names (`,`) are errors.

use super::nodes::{file_lines, parse_ip_literal};
use crate::protocol::sock_addr::SockAddr;
use log::warn;
use std::fmt;
use std::net::IpAddr;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicAddress {
    /// Port 0, as stock stores it.
    pub addr: SockAddr,
    pub mask_bits: u32,
    /// In file order, empty names dropped.
    pub ifaces: Vec<String>,
    /// The file line it came from.
    pub line: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicAddressErrorKind {
    Io(String),
    MissingInterface,
    BadAddress,
    BadMask,
    Duplicate { first_line: u32 },
    UnknownInterface { iface: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicAddressError {
    pub file: String,
    /// 0 for errors not tied to a line.
    pub line: u32,
    pub text: String,
    pub kind: PublicAddressErrorKind,
}

impl fmt::Display for PublicAddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use PublicAddressErrorKind as K;
        if let K::Io(e) = &self.kind {
            return write!(f, "{}: {}", self.file, e);
        }
        write!(f, "{}:{}: ", self.file, self.line)?;
        match &self.kind {
            K::Io(_) => Ok(()),
            K::MissingInterface => write!(f, "no interface specified: \"{}\"", self.text),
            K::BadAddress => write!(f, "invalid address: \"{}\"", self.text),
            K::BadMask => write!(f, "invalid netmask: \"{}\"", self.text),
            K::Duplicate { first_line } => write!(
                f,
                "duplicate public address \"{}\" (first on line {})",
                self.text, first_line
            ),
            K::UnknownInterface { iface } => write!(
                f,
                "unknown interface {} for public address \"{}\"",
                iface, self.text
            ),
        }
    }
}

impl std::error::Error for PublicAddressError {}

/// `smb_strtoul(.., 10, SMB_STR_FULL_STR_CONV)` then a range check against the family.
fn parse_mask(text: &str, ip: IpAddr) -> Option<u32> {
    let digits = text.strip_prefix('+').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let bits: u32 = digits.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (bits <= max).then_some(bits)
}

/// Parses a public addresses file without looking at the host's interfaces.
pub fn parse(text: &str, file_name: &str) -> Result<Vec<PublicAddress>, PublicAddressError> {
    let mut list: Vec<PublicAddress> = Vec::new();
    for (line, raw) in file_lines(text) {
        let content = raw.trim_start_matches([' ', '\t']);
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let error = |kind: PublicAddressErrorKind, text: &str| PublicAddressError {
            file: file_name.to_string(),
            line,
            text: text.to_string(),
            kind,
        };
        let mut fields = content.split([' ', '\t']).filter(|f| !f.is_empty());
        let (Some(addr_text), Some(iface_text)) = (fields.next(), fields.next()) else {
            return Err(error(PublicAddressErrorKind::MissingInterface, content));
        };
        let (ip_text, mask_text) = addr_text
            .rsplit_once('/')
            .ok_or_else(|| error(PublicAddressErrorKind::BadMask, addr_text))?;
        let ip = parse_ip_literal(ip_text)
            .ok_or_else(|| error(PublicAddressErrorKind::BadAddress, addr_text))?;
        let mask_bits = parse_mask(mask_text, ip)
            .ok_or_else(|| error(PublicAddressErrorKind::BadMask, addr_text))?;
        let ifaces: Vec<String> = iface_text
            .split(',')
            .filter(|i| !i.is_empty())
            .map(str::to_string)
            .collect();
        if ifaces.is_empty() {
            return Err(error(PublicAddressErrorKind::MissingInterface, content));
        }
        let addr = SockAddr::new(ip, 0);
        if let Some(first) = list.iter().find(|p| p.addr == addr) {
            return Err(error(
                PublicAddressErrorKind::Duplicate {
                    first_line: first.line,
                },
                &addr.to_string(),
            ));
        }
        list.push(PublicAddress {
            addr,
            mask_bits,
            ifaces,
            line,
        });
    }
    Ok(list)
}

/// The daemon's check that every interface exists (`ctdb_sys_check_iface_exists`); the
/// predicate is supplied by the caller so that this module stays free of system calls.
pub fn check_interfaces(
    list: &[PublicAddress],
    file_name: &str,
    iface_exists: impl Fn(&str) -> bool,
) -> Result<(), PublicAddressError> {
    for p in list {
        if let Some(iface) = p.ifaces.iter().find(|i| !iface_exists(i)) {
            return Err(PublicAddressError {
                file: file_name.to_string(),
                line: p.line,
                text: p.addr.to_string(),
                kind: PublicAddressErrorKind::UnknownInterface {
                    iface: iface.clone(),
                },
            });
        }
    }
    Ok(())
}

/// A Linux stand-in for `if_nameindex()`: the interface has an entry in `/sys/class/net`.
pub fn interface_exists_in_sysfs(iface: &str) -> bool {
    !iface.is_empty()
        && !iface.contains('/')
        && iface != "."
        && iface != ".."
        && Path::new("/sys/class/net").join(iface).exists()
}

/// Reads the file as ctdbd does: a missing file means no public addresses (with a warning).
pub fn load(
    path: &Path,
    iface_exists: impl Fn(&str) -> bool,
) -> Result<Vec<PublicAddress>, PublicAddressError> {
    let file_name = path.display().to_string();
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            warn!("Not loading public addresses, no file {file_name}");
            return Ok(Vec::new());
        }
        Err(e) => {
            return Err(PublicAddressError {
                file: file_name,
                line: 0,
                text: String::new(),
                kind: PublicAddressErrorKind::Io(e.to_string()),
            })
        }
    };
    let list = parse(&String::from_utf8_lossy(&bytes), &file_name)?;
    check_interfaces(&list, &file_name, iface_exists)?;
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;
    use PublicAddressErrorKind as K;

    fn entry(ip: &str, bits: u32, ifaces: &[&str], line: u32) -> PublicAddress {
        PublicAddress {
            addr: SockAddr::new(ip.parse().unwrap(), 0),
            mask_bits: bits,
            ifaces: ifaces.iter().map(|s| s.to_string()).collect(),
            line,
        }
    }

    #[test]
    fn typical_file() {
        let text = "\
# public addresses
192.168.100.1/24 lo
  192.168.200.1/24\teth0,eth1

\t# indented comment
fd00::10/64 eth2 trailing words are ignored\r
[fd00::11]/64 ,eth3,,
::ffff:10.0.0.5/8 eth0";
        assert_eq!(
            parse(text, "public_addresses").unwrap(),
            vec![
                entry("192.168.100.1", 24, &["lo"], 2),
                entry("192.168.200.1", 24, &["eth0", "eth1"], 3),
                entry("fd00::10", 64, &["eth2"], 6),
                entry("fd00::11", 64, &["eth3"], 7),
                entry("10.0.0.5", 8, &["eth0"], 8),
            ]
        );
    }

    #[test]
    fn empty_and_comment_only_files() {
        assert!(parse("", "p").unwrap().is_empty());
        assert!(parse("# nothing\n\n   \n", "p").unwrap().is_empty());
    }

    fn error(text: &str) -> PublicAddressError {
        parse(text, "/etc/ctdb/public_addresses").unwrap_err()
    }

    #[test]
    fn errors_name_file_and_line() {
        let e = error("10.0.0.1/24 eth0\n\n10.0.0.2/24\n");
        assert_eq!((e.line, &e.kind), (3, &K::MissingInterface));
        assert_eq!(
            e.to_string(),
            "/etc/ctdb/public_addresses:3: no interface specified: \"10.0.0.2/24\""
        );
        assert_eq!(error("10.0.0.2/24 \n").kind, K::MissingInterface);
        assert_eq!(error("10.0.0.2/24 ,\n").kind, K::MissingInterface);
        assert_eq!(error("10.0.0/24 eth0\n").kind, K::BadAddress);
        assert_eq!(error("fe80::1%eth0/64 eth0\n").kind, K::BadAddress);
        assert_eq!(error("host/24 eth0\n").kind, K::BadAddress);
        for mask in [
            "10.0.0.1 eth0",
            "10.0.0.1/ eth0",
            "10.0.0.1/2x eth0",
            "10.0.0.1/-1 eth0",
        ] {
            assert_eq!(error(mask).kind, K::BadMask, "{mask}");
        }
        assert_eq!(error("10.0.0.1/33 eth0").kind, K::BadMask);
        assert_eq!(error("fd00::1/129 eth0").kind, K::BadMask);
        assert!(parse("fd00::1/128 eth0\n10.0.0.1/+32 eth0\n", "p").is_ok());
        let e = error("10.0.0.1/24 eth0\n10.0.0.1/16 eth1\n");
        assert_eq!((e.line, &e.kind), (2, &K::Duplicate { first_line: 1 }));
        assert_eq!(
            e.to_string(),
            "/etc/ctdb/public_addresses:2: duplicate public address \"10.0.0.1\" (first on line 1)"
        );
        let e = error("::ffff:10.0.0.1/24 eth0\n10.0.0.1/24 eth0\n");
        assert_eq!(e.kind, K::Duplicate { first_line: 1 });
    }

    #[test]
    fn interface_hook() {
        let list = parse("10.0.0.1/24 eth0\n\n10.0.0.2/24 eth0,bogus\n", "p").unwrap();
        assert!(check_interfaces(&list, "p", |_| true).is_ok());
        let e = check_interfaces(&list, "p", |i| i == "eth0").unwrap_err();
        assert_eq!(e.line, 3);
        assert_eq!(
            e.kind,
            K::UnknownInterface {
                iface: "bogus".into()
            }
        );
        assert!(interface_exists_in_sysfs("lo") || !Path::new("/sys/class/net").exists());
        assert!(!interface_exists_in_sysfs("../net"));
        assert!(!interface_exists_in_sysfs("no-such-if0"));
    }

    #[test]
    fn missing_file_is_no_addresses() {
        assert!(load(Path::new("/nonexistent/public_addresses"), |_| true)
            .unwrap()
            .is_empty());
    }
}
