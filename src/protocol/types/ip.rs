//! Public address and TCP connection payloads (IP failover and tickles).

use crate::protocol::basic::{push_stringn, stringn_len, Marshal, PullError, Reader, Writer};
use crate::protocol::sock_addr::{SockAddr, SOCK_ADDR_LEN};

use super::{pull_item, pull_items, pull_stringn_lenient, text_until_nul, CTDB_IFACE_SIZE};

/// Size of `ctdb_iface.name` (`CTDB_IFACE_SIZE + 2`).
pub const IFACE_NAME_LEN: usize = CTDB_IFACE_SIZE + 2;

/// `ctdb_public_ip` (32 bytes, no hole): an address and the node believed to host it
/// ([`super::UNKNOWN_PNN`] if none). TAKEOVER_IP, RELEASE_IP, GET_PUBLIC_IPS entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PublicIp {
    pub pnn: u32,
    pub addr: SockAddr,
}

impl PublicIp {
    pub const WIRE_LEN: usize = 4 + SOCK_ADDR_LEN;
}

impl Marshal for PublicIp {
    fn wire_len(&self) -> usize {
        Self::WIRE_LEN
    }
    fn push(&self, out: &mut Vec<u8>) {
        out.put_u32(self.pnn);
        self.addr.push(out);
    }
    fn pull(buf: &[u8]) -> Result<(Self, usize), PullError> {
        let mut r = Reader::new(buf);
        let pnn = r.u32()?;
        let addr = pull_item(&mut r)?;
        Ok((PublicIp { pnn, addr }, r.pos()))
    }
}

/// `ctdb_public_ip_list`: the GET_PUBLIC_IPS reply.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PublicIpList {
    pub ips: Vec<PublicIp>,
}

impl Marshal for PublicIpList {
    fn wire_len(&self) -> usize {
        4 + PublicIp::WIRE_LEN * self.ips.len()
    }
    fn push(&self, out: &mut Vec<u8>) {
        out.put_len(self.ips.len());
        for ip in &self.ips {
            ip.push(out);
        }
    }
    fn pull(buf: &[u8]) -> Result<(Self, usize), PullError> {
        let mut r = Reader::new(buf);
        let num = r.count_u32("public_ip_list num", PublicIp::WIRE_LEN)?;
        let ips = pull_items(&mut r, num)?;
        Ok((PublicIpList { ips }, r.pos()))
    }
}

/// `ctdb_iface` (24 bytes): `name` in a NUL-padded `char[18]`, `link_state` (0 down, 1 up) and
/// the number of public addresses using it.
///
/// Stock forces the last byte of the name to NUL on pull, so at most 17 bytes of name survive;
/// [`Iface::push`] truncates longer names the same way.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Iface {
    pub name: String,
    pub link_state: u16,
    pub references: u32,
}

impl Iface {
    pub const WIRE_LEN: usize = IFACE_NAME_LEN + 2 + 4;
}

impl Marshal for Iface {
    fn wire_len(&self) -> usize {
        Self::WIRE_LEN
    }
    fn push(&self, out: &mut Vec<u8>) {
        let name = self.name.as_bytes();
        let kept = name.len().min(IFACE_NAME_LEN - 1);
        out.put_bytes(&name[..kept]);
        out.put_zeros(IFACE_NAME_LEN - kept);
        out.put_u16(self.link_state);
        out.put_u32(self.references);
    }
    fn pull(buf: &[u8]) -> Result<(Self, usize), PullError> {
        let mut r = Reader::new(buf);
        let raw = r.bytes(IFACE_NAME_LEN)?;
        let name = text_until_nul(&raw[..IFACE_NAME_LEN - 1]);
        let link_state = r.u16()?;
        let references = r.u32()?;
        let value = Iface {
            name,
            link_state,
            references,
        };
        Ok((value, r.pos()))
    }
}

/// `ctdb_iface_list`: the GET_IFACES reply.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IfaceList {
    pub ifaces: Vec<Iface>,
}

impl Marshal for IfaceList {
    fn wire_len(&self) -> usize {
        4 + Iface::WIRE_LEN * self.ifaces.len()
    }
    fn push(&self, out: &mut Vec<u8>) {
        out.put_len(self.ifaces.len());
        for iface in &self.ifaces {
            iface.push(out);
        }
    }
    fn pull(buf: &[u8]) -> Result<(Self, usize), PullError> {
        let mut r = Reader::new(buf);
        let num = r.count_u32("iface_list num", Iface::WIRE_LEN)?;
        let ifaces = pull_items(&mut r, num)?;
        Ok((IfaceList { ifaces }, r.pos()))
    }
}

/// `ctdb_public_ip_info`: the GET_PUBLIC_IP_INFO reply. `active_idx` indexes `ifaces`
/// (`0xffffffff` when no interface carries the address); the interface list starts at 40.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PublicIpInfo {
    pub ip: PublicIp,
    pub active_idx: u32,
    pub ifaces: Vec<Iface>,
}

impl Marshal for PublicIpInfo {
    fn wire_len(&self) -> usize {
        PublicIp::WIRE_LEN + 4 + 4 + Iface::WIRE_LEN * self.ifaces.len()
    }
    fn push(&self, out: &mut Vec<u8>) {
        self.ip.push(out);
        out.put_u32(self.active_idx);
        out.put_len(self.ifaces.len());
        for iface in &self.ifaces {
            iface.push(out);
        }
    }
    fn pull(buf: &[u8]) -> Result<(Self, usize), PullError> {
        let mut r = Reader::new(buf);
        let ip = pull_item(&mut r)?;
        let active_idx = r.u32()?;
        let IfaceList { ifaces } = pull_item(&mut r)?;
        let value = PublicIpInfo {
            ip,
            active_idx,
            ifaces,
        };
        Ok((value, r.pos()))
    }
}

/// `ctdb_connection` (56 bytes): a TCP connection to a public address. `src` is the client and
/// `dst` the public (server) address, whatever the C union aliases suggest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Connection {
    pub src: SockAddr,
    pub dst: SockAddr,
}

impl Connection {
    pub const WIRE_LEN: usize = 2 * SOCK_ADDR_LEN;
}

impl Marshal for Connection {
    fn wire_len(&self) -> usize {
        Self::WIRE_LEN
    }
    fn push(&self, out: &mut Vec<u8>) {
        self.src.push(out);
        self.dst.push(out);
    }
    fn pull(buf: &[u8]) -> Result<(Self, usize), PullError> {
        let mut r = Reader::new(buf);
        let src = pull_item(&mut r)?;
        let dst = pull_item(&mut r)?;
        Ok((Connection { src, dst }, r.pos()))
    }
}

/// `ctdb_tickle_list`: the connections to one public address (GET/SET_TCP_TICKLE_LIST).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TickleList {
    pub addr: SockAddr,
    pub connections: Vec<Connection>,
}

impl Marshal for TickleList {
    fn wire_len(&self) -> usize {
        SOCK_ADDR_LEN + 4 + Connection::WIRE_LEN * self.connections.len()
    }
    fn push(&self, out: &mut Vec<u8>) {
        self.addr.push(out);
        out.put_len(self.connections.len());
        for conn in &self.connections {
            conn.push(out);
        }
    }
    fn pull(buf: &[u8]) -> Result<(Self, usize), PullError> {
        let mut r = Reader::new(buf);
        let addr = pull_item(&mut r)?;
        let num = r.count_u32("tickle_list num", Connection::WIRE_LEN)?;
        let connections = pull_items(&mut r, num)?;
        Ok((TickleList { addr, connections }, r.pos()))
    }
}

/// `ctdb_addr_info`: an address, its netmask bits and its interface, as a u32 length (NUL
/// included) and the name (ADD_PUBLIC_IP, DEL_PUBLIC_IP, SEND_GRATUITOUS_ARP). `None` is the
/// NULL string (length 0).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AddrInfo {
    pub addr: SockAddr,
    pub mask: u32,
    pub iface: Option<String>,
}

impl Marshal for AddrInfo {
    fn wire_len(&self) -> usize {
        SOCK_ADDR_LEN + 4 + stringn_len(self.iface.as_deref())
    }
    fn push(&self, out: &mut Vec<u8>) {
        self.addr.push(out);
        out.put_u32(self.mask);
        push_stringn(out, self.iface.as_deref());
    }
    fn pull(buf: &[u8]) -> Result<(Self, usize), PullError> {
        let mut r = Reader::new(buf);
        let addr = pull_item(&mut r)?;
        let mask = r.u32()?;
        let iface = pull_stringn_lenient(&mut r)?;
        Ok((AddrInfo { addr, mask, iface }, r.pos()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::types::check::all_seeds;
    use crate::protocol::types::fill;

    #[test]
    fn seeded_round_trips_and_truncations() {
        all_seeds("PublicIp", fill::public_ip);
        all_seeds("PublicIpList", fill::public_ip_list);
        all_seeds("Iface", fill::iface);
        all_seeds("IfaceList", fill::iface_list);
        all_seeds("PublicIpInfo", fill::public_ip_info);
        all_seeds("Connection", fill::connection);
        all_seeds("TickleList", fill::tickle_list);
        all_seeds("AddrInfo", fill::addr_info);
    }

    #[test]
    fn get_ifaces_reply_from_stock() {
        // Appendix A: one interface "lo", link up, no references (28 bytes).
        let mut bytes = 1u32.to_ne_bytes().to_vec();
        bytes.extend_from_slice(b"lo");
        bytes.extend_from_slice(&[0u8; 16]);
        bytes.extend_from_slice(&[1, 0, 0, 0, 0, 0]);
        let list = IfaceList::from_bytes_exact(&bytes).unwrap();
        assert_eq!(
            list.ifaces,
            vec![Iface {
                name: "lo".into(),
                link_state: 1,
                references: 0
            }]
        );
        assert_eq!(list.to_bytes(), bytes);
    }

    #[test]
    fn get_public_ips_reply_from_stock() {
        // Appendix A: two unassigned addresses, in reverse file order.
        let mut bytes = 2u32.to_ne_bytes().to_vec();
        for ip in [[192, 168, 200, 1], [192, 168, 100, 1]] {
            bytes.extend_from_slice(&[0xff; 4]);
            bytes.extend_from_slice(&[2, 0, 0, 0]);
            bytes.extend_from_slice(&ip);
            bytes.extend_from_slice(&[0u8; 20]);
        }
        let list = PublicIpList::from_bytes_exact(&bytes).unwrap();
        assert_eq!(list.ips.len(), 2);
        assert_eq!(list.ips[0].pnn, super::super::UNKNOWN_PNN);
        assert_eq!(list.ips[0].addr.to_string(), "192.168.200.1");
        assert_eq!(list.ips[1].addr.to_string(), "192.168.100.1");
        assert_eq!(list.to_bytes(), bytes);
    }

    #[test]
    fn public_ip_info_puts_ifaces_at_40() {
        let info = PublicIpInfo {
            ip: PublicIp {
                pnn: 3,
                addr: SockAddr::new("10.0.0.1".parse().unwrap(), 0),
            },
            active_idx: 0,
            ifaces: vec![Iface {
                name: "eth0".into(),
                link_state: 1,
                references: 2,
            }],
        };
        let bytes = info.to_bytes();
        assert_eq!(bytes.len(), 64);
        assert_eq!(&bytes[32..36], &0u32.to_ne_bytes());
        assert_eq!(&bytes[36..40], &1u32.to_ne_bytes());
        assert_eq!(&bytes[40..44], b"eth0");
    }

    #[test]
    fn iface_name_keeps_at_most_17_bytes() {
        let long = Iface {
            name: "abcdefghijklmnopqrstu".into(),
            link_state: 0,
            references: 0,
        };
        let bytes = long.to_bytes();
        assert_eq!(bytes.len(), 24);
        assert_eq!(bytes[17], 0);
        assert_eq!(
            Iface::from_bytes_exact(&bytes).unwrap().name,
            "abcdefghijklmnopq"
        );
        // A name that fills all 18 bytes loses its last byte, as stock's pull does.
        let mut raw = [b'x'; 24];
        raw[18..].fill(0);
        assert_eq!(Iface::from_bytes_exact(&raw).unwrap().name.len(), 17);
    }

    #[test]
    fn addr_info_layout_and_lenient_name() {
        let info = AddrInfo {
            addr: SockAddr::new("10.1.1.1".parse().unwrap(), 0),
            mask: 24,
            iface: Some("eth1".into()),
        };
        let bytes = info.to_bytes();
        assert_eq!(bytes.len(), 36 + 5);
        assert_eq!(&bytes[28..32], &24u32.to_ne_bytes());
        assert_eq!(&bytes[32..36], &5u32.to_ne_bytes());
        assert_eq!(&bytes[36..], b"eth1\0");
        // Stock keeps the text up to the first NUL and does not require one.
        let mut odd = bytes[..32].to_vec();
        odd.extend_from_slice(&3u32.to_ne_bytes());
        odd.extend_from_slice(b"eth");
        assert_eq!(
            AddrInfo::pull(&odd).unwrap().0.iface.as_deref(),
            Some("eth")
        );
    }

    #[test]
    fn huge_counts_are_rejected_without_allocating() {
        for pull in [
            |b: &[u8]| PublicIpList::pull(b).is_err(),
            |b: &[u8]| IfaceList::pull(b).is_err(),
        ] {
            assert!(pull(&u32::MAX.to_ne_bytes()));
        }
        let mut tickles = SockAddr::default().to_bytes();
        tickles.extend_from_slice(&u32::MAX.to_ne_bytes());
        assert!(TickleList::pull(&tickles).is_err());
    }
}
