//! `ctdb_sock_addr`: the raw 28-byte `sockaddr` union (mirrors `ctdb_sock_addr_{len,push,pull}`).
//!
//! The family is host order, the port and address are network order, and every unused byte is
//! zero. Stock code compares whole unions with `memcmp`, so zero-filling is part of the format.

use super::basic::{Marshal, PullError, Reader, Writer};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
pub const SOCK_ADDR_LEN: usize = 28;

/// An IPv4 or IPv6 socket address as CTDB carries it. `scope_id` and `flowinfo` are kept so that
/// IPv6 link-local addresses survive a round trip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SockAddr {
    V4 {
        ip: Ipv4Addr,
        port: u16,
    },
    V6 {
        ip: Ipv6Addr,
        port: u16,
        flowinfo: u32,
        scope_id: u32,
    },
}

impl SockAddr {
    pub fn new(ip: IpAddr, port: u16) -> Self {
        match ip {
            IpAddr::V4(ip) => SockAddr::V4 { ip, port },
            IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
                // CTDB re-parses IPv4-mapped IPv6 addresses as AF_INET.
                Some(v4) => SockAddr::V4 { ip: v4, port },
                None => SockAddr::V6 {
                    ip,
                    port,
                    flowinfo: 0,
                    scope_id: 0,
                },
            },
        }
    }

    pub fn ip(&self) -> IpAddr {
        match *self {
            SockAddr::V4 { ip, .. } => IpAddr::V4(ip),
            SockAddr::V6 { ip, .. } => IpAddr::V6(ip),
        }
    }

    pub fn port(&self) -> u16 {
        match *self {
            SockAddr::V4 { port, .. } | SockAddr::V6 { port, .. } => port,
        }
    }

    pub fn with_port(self, port: u16) -> Self {
        match self {
            SockAddr::V4 { ip, .. } => SockAddr::V4 { ip, port },
            SockAddr::V6 {
                ip,
                flowinfo,
                scope_id,
                ..
            } => SockAddr::V6 {
                ip,
                port,
                flowinfo,
                scope_id,
            },
        }
    }

    pub fn to_socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip(), self.port())
    }
}

impl Default for SockAddr {
    fn default() -> Self {
        SockAddr::V4 {
            ip: Ipv4Addr::UNSPECIFIED,
            port: 0,
        }
    }
}

impl std::fmt::Display for SockAddr {
    /// The address alone, as `ctdb_sock_addr_to_string(..., false)` prints it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.ip())
    }
}

impl Marshal for SockAddr {
    fn wire_len(&self) -> usize {
        SOCK_ADDR_LEN
    }

    fn push(&self, out: &mut Vec<u8>) {
        let start = out.len();
        match *self {
            SockAddr::V4 { ip, port } => {
                out.put_u16(AF_INET);
                out.put_bytes(&port.to_be_bytes());
                out.put_bytes(&ip.octets());
            }
            SockAddr::V6 {
                ip,
                port,
                flowinfo,
                scope_id,
            } => {
                out.put_u16(AF_INET6);
                out.put_bytes(&port.to_be_bytes());
                out.put_u32(flowinfo);
                out.put_bytes(&ip.octets());
                out.put_u32(scope_id);
            }
        }
        out.put_zeros(SOCK_ADDR_LEN - (out.len() - start));
    }

    fn pull(buf: &[u8]) -> Result<(Self, usize), PullError> {
        let mut r = Reader::new(buf);
        let raw: [u8; SOCK_ADDR_LEN] = r.array()?;
        let family = u16::from_ne_bytes([raw[0], raw[1]]);
        let port = u16::from_be_bytes([raw[2], raw[3]]);
        let addr = match family {
            AF_INET => SockAddr::V4 {
                ip: Ipv4Addr::new(raw[4], raw[5], raw[6], raw[7]),
                port,
            },
            AF_INET6 => {
                let mut ip = [0u8; 16];
                ip.copy_from_slice(&raw[8..24]);
                SockAddr::V6 {
                    ip: Ipv6Addr::from(ip),
                    port,
                    flowinfo: u32::from_ne_bytes([raw[4], raw[5], raw[6], raw[7]]),
                    scope_id: u32::from_ne_bytes([raw[24], raw[25], raw[26], raw[27]]),
                }
            }
            other => {
                return Err(PullError::BadValue {
                    what: "address family",
                    value: u64::from(other),
                })
            }
        };
        Ok((addr, SOCK_ADDR_LEN))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_node_address_layout() {
        let a = SockAddr::new("127.0.199.1".parse().unwrap(), 4379);
        let b = a.to_bytes();
        assert_eq!(&b[..8], &[2, 0, 0x11, 0x1b, 127, 0, 199, 1]);
        assert!(b[8..].iter().all(|&x| x == 0));
        assert_eq!(SockAddr::from_bytes_exact(&b).unwrap(), a);
    }

    #[test]
    fn ipv6_round_trip_and_mapped_v4() {
        let a = SockAddr::V6 {
            ip: "fd00::1".parse().unwrap(),
            port: 7,
            flowinfo: 3,
            scope_id: 9,
        };
        assert_eq!(SockAddr::from_bytes_exact(&a.to_bytes()).unwrap(), a);
        let m = SockAddr::new("::ffff:10.1.2.3".parse().unwrap(), 0);
        assert_eq!(m, SockAddr::new("10.1.2.3".parse().unwrap(), 0));
    }

    #[test]
    fn unknown_family_is_an_error() {
        assert!(SockAddr::pull(&[0u8; 28]).is_err());
        assert!(SockAddr::pull(&[2u8; 27]).is_err());
    }
}
