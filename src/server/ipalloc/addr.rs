//! Addresses as IP allocation sees them: the allocation key and distance (`ip_key` in
//! `ipalloc_common.c`, `ip_distance` in `ipalloc_lcp2.c`), and address text with glibc's
//! `inet_pton`/`inet_ntop` rules as `ctdb_sock_addr_from_string`/`ctdb_sock_addr_to_string`
//! (`protocol_util.c`) use them.
//!
//! The text rules are reimplemented rather than borrowed from `std::net` because the two differ
//! in places that show up in allocation output: glibc writes `::1.2.3.4` where Rust writes
//! `::102:304`, and the parsers disagree on some malformed input.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The 128-bit key CTDB orders and measures addresses by: IPv4 sits in the last word with the
/// first three zero, so `1.2.3.4` and the IPv6 address `::1.2.3.4` share a key.
pub type IpKey = [u32; 4];

/// `ip_key`: the address as four host-order words.
pub fn ip_key(addr: &IpAddr) -> IpKey {
    match addr {
        IpAddr::V4(v4) => [0, 0, 0, u32::from(*v4)],
        IpAddr::V6(v6) => {
            let o = v6.octets();
            let word = |i: usize| u32::from_be_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
            [word(0), word(4), word(8), word(12)]
        }
    }
}

/// `ip_distance`: the common-prefix length summed word by word. Every word counts (32 when
/// equal), even after the first difference, so two IPv4 keys are always at least 96 apart.
#[inline]
pub fn ip_distance(a: &IpKey, b: &IpKey) -> u32 {
    (a[0] ^ b[0]).leading_zeros()
        + (a[1] ^ b[1]).leading_zeros()
        + (a[2] ^ b[2]).leading_zeros()
        + (a[3] ^ b[3]).leading_zeros()
}

/// glibc `inet_pton(AF_INET)`: exactly four dotted decimal parts, each at most 255, with no
/// leading zeros and nothing else.
pub fn parse_ipv4(text: &[u8]) -> Option<[u8; 4]> {
    let mut out = [0u8; 4];
    let mut part = 0usize;
    let mut saw_digit = false;
    let mut parts = 0usize;
    for &ch in text {
        if ch.is_ascii_digit() {
            let current = out[part];
            if saw_digit && current == 0 {
                return None;
            }
            let value = u32::from(current) * 10 + u32::from(ch - b'0');
            out[part] = u8::try_from(value).ok()?;
            if !saw_digit {
                parts += 1;
                if parts > 4 {
                    return None;
                }
                saw_digit = true;
            }
        } else if ch == b'.' && saw_digit {
            if parts == 4 {
                return None;
            }
            part += 1;
            saw_digit = false;
        } else {
            return None;
        }
    }
    (parts == 4).then_some(out)
}

/// glibc `inet_pton(AF_INET6)`: groups of one to four hex digits, at most one `::`, and an
/// optional dotted IPv4 tail in place of the last two groups.
pub fn parse_ipv6(text: &[u8]) -> Option<[u8; 16]> {
    let mut out = [0u8; 16];
    let mut filled = 0usize;
    let mut gap_at: Option<usize> = None;
    let mut src = text;
    if src.is_empty() {
        return None;
    }
    if src[0] == b':' {
        if src.get(1) != Some(&b':') {
            return None;
        }
        src = &src[1..];
    }
    let mut group_start = 0usize;
    let mut digits = 0usize;
    let mut value: u32 = 0;
    let mut at = 0usize;
    while at < src.len() {
        let ch = src[at];
        at += 1;
        if let Some(digit) = char::from(ch).to_digit(16) {
            if digits == 4 {
                return None;
            }
            value = (value << 4) | digit;
            digits += 1;
            continue;
        }
        if ch == b':' {
            group_start = at;
            if digits == 0 {
                if gap_at.is_some() {
                    return None;
                }
                gap_at = Some(filled);
                continue;
            }
            if at == src.len() || filled + 2 > 16 {
                return None;
            }
            out[filled..filled + 2].copy_from_slice(&(value as u16).to_be_bytes());
            filled += 2;
            digits = 0;
            value = 0;
            continue;
        }
        if ch == b'.' && filled + 4 <= 16 {
            if let Some(v4) = parse_ipv4(&src[group_start..]) {
                out[filled..filled + 4].copy_from_slice(&v4);
                filled += 4;
                digits = 0;
                break;
            }
        }
        return None;
    }
    if digits > 0 {
        if filled + 2 > 16 {
            return None;
        }
        out[filled..filled + 2].copy_from_slice(&(value as u16).to_be_bytes());
        filled += 2;
    }
    if let Some(gap) = gap_at {
        if filled == 16 {
            return None;
        }
        let tail = filled - gap;
        out.copy_within(gap..filled, 16 - tail);
        out[gap..16 - tail].fill(0);
        filled = 16;
    }
    (filled == 16).then_some(out)
}

/// `ip_from_string` (what `ctdb_sock_addr_from_string(text, addr, false)` does): text without
/// a `:` is IPv4; otherwise IPv6, optionally in brackets, and an IPv4-mapped result is read
/// again as IPv4 from the text after the last `:` (so `::ffff:1.2.3.4` is `1.2.3.4` but
/// `::ffff:102:304` is rejected).
pub fn ip_from_string(text: &[u8]) -> Option<IpAddr> {
    let Some(mut last_colon) = text.iter().rposition(|&b| b == b':') else {
        return parse_ipv4(text).map(|o| IpAddr::V4(Ipv4Addr::from(o)));
    };
    // Stock copies the text into a 64-byte buffer first and gives up if it does not fit.
    if text.len() >= 64 {
        return None;
    }
    let mut inner = text;
    if text.len() >= 2 && text[0] == b'[' && text[text.len() - 1] == b']' {
        inner = &text[1..text.len() - 1];
        last_colon = inner.iter().rposition(|&b| b == b':')?;
    }
    let octets = parse_ipv6(inner)?;
    if octets[..12] == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff] {
        return parse_ipv4(&inner[last_colon + 1..]).map(|o| IpAddr::V4(Ipv4Addr::from(o)));
    }
    Some(IpAddr::V6(Ipv6Addr::from(octets)))
}

/// An address printed as `ctdb_sock_addr_to_string(addr, false)` prints it (glibc
/// `inet_ntop`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CtdbIp<'a>(pub &'a IpAddr);

impl fmt::Display for CtdbIp<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                write!(f, "{}.{}.{}.{}", o[0], o[1], o[2], o[3])
            }
            IpAddr::V6(v6) => write_ipv6(f, v6),
        }
    }
}

/// glibc `inet_ntop6`: the first longest run of two or more zero groups becomes `::`, and an
/// address whose first six groups are zero (with a nonzero seventh), or that is IPv4-mapped,
/// ends in dotted IPv4.
fn write_ipv6(f: &mut fmt::Formatter<'_>, v6: &Ipv6Addr) -> fmt::Result {
    let words = v6.segments();
    let mut best: Option<(usize, usize)> = None;
    let mut current: Option<(usize, usize)> = None;
    for (i, &w) in words.iter().enumerate() {
        if w == 0 {
            current = Some(match current {
                Some((base, len)) => (base, len + 1),
                None => (i, 1),
            });
        } else if let Some(run) = current.take() {
            if best.is_none_or(|b| run.1 > b.1) {
                best = Some(run);
            }
        }
    }
    if let Some(run) = current {
        if best.is_none_or(|b| run.1 > b.1) {
            best = Some(run);
        }
    }
    let best = best.filter(|&(_, len)| len >= 2);
    let mut i = 0usize;
    while i < 8 {
        if let Some((base, len)) = best {
            if i >= base && i < base + len {
                if i == base {
                    f.write_str(":")?;
                }
                i += 1;
                continue;
            }
        }
        if i != 0 {
            f.write_str(":")?;
        }
        if i == 6 {
            if let Some((0, len)) = best {
                if len == 6 || (len == 5 && words[5] == 0xffff) {
                    let o = v6.octets();
                    return write!(f, "{}.{}.{}.{}", o[12], o[13], o[14], o[15]);
                }
            }
        }
        write!(f, "{:x}", words[i])?;
        i += 1;
    }
    if let Some((base, len)) = best {
        if base + len == 8 {
            f.write_str(":")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(addr: &IpAddr) -> String {
        CtdbIp(addr).to_string()
    }

    #[test]
    fn keys_and_distances() {
        let a: IpAddr = "192.168.20.1".parse().unwrap();
        let b: IpAddr = "192.168.20.2".parse().unwrap();
        assert_eq!(ip_key(&a), [0, 0, 0, 0xc0a8_1401]);
        assert_eq!(ip_distance(&ip_key(&a), &ip_key(&a)), 128);
        assert_eq!(ip_distance(&ip_key(&a), &ip_key(&b)), 96 + 30);
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(ip_key(&v6), [0x2001_0db8, 0, 0, 1]);
        // Word 0 differs at bit 2; words 1 and 2 are equal; word 3 differs at bit 0 (1 vs ip).
        assert_eq!(ip_distance(&ip_key(&v6), &ip_key(&a)), 2 + 32 + 32);
    }

    #[test]
    fn glibc_text_forms() {
        for (input, output) in [
            ("::1.2.3.4", "::1.2.3.4"),
            ("::5", "::5"),
            ("::", "::"),
            ("1::", "1::"),
            ("1:0:0:2:0:0:0:3", "1:0:0:2::3"),
            ("1:0:0:2:0:0:3:4", "1::2:0:0:3:4"),
            ("0:1:0:1:0:1:0:1", "0:1:0:1:0:1:0:1"),
            ("fe80::ABCD:1", "fe80::abcd:1"),
        ] {
            let addr = ip_from_string(input.as_bytes()).unwrap();
            assert_eq!(text(&addr), output, "{input}");
        }
        assert_eq!(
            ip_from_string(b"::ffff:10.1.2.3"),
            Some(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)))
        );
        assert_eq!(ip_from_string(b"::ffff:a01:203"), None);
        assert_eq!(
            ip_from_string(b"[fd00::1]"),
            Some("fd00::1".parse().unwrap())
        );
        for bad in [
            "01.2.3.4",
            "1.2.3",
            "1.2.3.4.5",
            "256.1.1.1",
            "",
            "1:2",
            ":::",
            "1::2::3",
        ] {
            assert_eq!(ip_from_string(bad.as_bytes()), None, "{bad}");
        }
    }
}
