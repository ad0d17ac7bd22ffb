//! The raw packets a node sends when it takes over an address (mirrors the builders in
//! `ctdb/common/system_socket.c`): gratuitous ARPs, IPv6 neighbour advertisements and TCP
//! "tickle" ACKs. Pure byte building; [`super::system`] puts them on the wire.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};

pub const ETH_ALEN: usize = 6;
const ETHERTYPE_IP: u16 = 0x0800;
const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ARPHRD_ETHER: u16 = 1;
const ARPOP_REQUEST: u16 = 1;
const ARPOP_REPLY: u16 = 2;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_ICMPV6: u8 = 58;
const ND_NEIGHBOR_ADVERT: u8 = 136;
/// The Override flag, first byte of `nd_na_flags_reserved`.
const ND_NA_FLAG_OVERRIDE: u8 = 0x20;
const ND_OPT_TARGET_LINKADDR: u8 = 2;
const TH_ACK: u8 = 0x10;
/// The tickle's window: "makes it easier to spot in a sniffer".
pub const TICKLE_WINDOW: u16 = 1234;
/// Stock pads ARP frames to the 64-byte minimum it allocates.
pub const ARP_FRAME_LEN: usize = 64;
pub const NA_FRAME_LEN: usize = 14 + 40 + 24 + 2 + ETH_ALEN;
pub const TCP4_LEN: usize = 20 + 20;
pub const TCP6_LEN: usize = 40 + 20;

/// One's-complement sum of big-endian 16-bit words (odd trailing byte padded with zero).
fn sum16(data: &[u8]) -> u32 {
    data.chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])))
        .sum()
}

/// Folds a sum into the checksum field value; stock never sends 0 and uses 0xffff instead.
fn finish(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    match !(sum as u16) {
        0 => 0xffff,
        c => c,
    }
}

fn checksum4(segment: &[u8], src: Ipv4Addr, dst: Ipv4Addr, proto: u8) -> u16 {
    let pseudo = sum16(&src.octets()) + sum16(&dst.octets()) + u32::from(proto);
    finish(pseudo + segment.len() as u32 + sum16(segment))
}

fn checksum6(payload: &[u8], src: Ipv6Addr, dst: Ipv6Addr, next: u8) -> u16 {
    let len = payload.len() as u32;
    let pseudo = sum16(&src.octets())
        + sum16(&dst.octets())
        + (len >> 16)
        + (len & 0xffff)
        + u32::from(next);
    finish(pseudo + sum16(payload))
}

fn ethernet_header(out: &mut Vec<u8>, dst: [u8; ETH_ALEN], src: [u8; ETH_ALEN], ty: u16) {
    out.extend_from_slice(&dst);
    out.extend_from_slice(&src);
    out.extend_from_slice(&ty.to_be_bytes());
}

/// A broadcast gratuitous ARP for `ip` from `mac`: a request (target hardware address zero)
/// or an unsolicited reply (target hardware address ours), padded to 64 bytes.
pub fn arp_frame(ip: Ipv4Addr, mac: [u8; ETH_ALEN], reply: bool) -> Vec<u8> {
    let mut f = Vec::with_capacity(ARP_FRAME_LEN);
    ethernet_header(&mut f, [0xff; ETH_ALEN], mac, ETHERTYPE_ARP);
    f.extend_from_slice(&ARPHRD_ETHER.to_be_bytes());
    f.extend_from_slice(&ETHERTYPE_IP.to_be_bytes());
    f.push(ETH_ALEN as u8);
    f.push(4);
    let op = if reply { ARPOP_REPLY } else { ARPOP_REQUEST };
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ip.octets());
    f.extend_from_slice(&if reply { mac } else { [0; ETH_ALEN] });
    f.extend_from_slice(&ip.octets());
    f.resize(ARP_FRAME_LEN, 0);
    f
}

/// An unsolicited neighbour advertisement (Override set, target link-layer address option)
/// for `ip` from `mac`, to the all-nodes multicast address.
pub fn neighbour_advert_frame(ip: Ipv6Addr, mac: [u8; ETH_ALEN]) -> Vec<u8> {
    const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    let mut icmp = Vec::with_capacity(32);
    icmp.push(ND_NEIGHBOR_ADVERT);
    icmp.push(0);
    icmp.extend_from_slice(&[0, 0]);
    icmp.extend_from_slice(&[ND_NA_FLAG_OVERRIDE, 0, 0, 0]);
    icmp.extend_from_slice(&ip.octets());
    icmp.push(ND_OPT_TARGET_LINKADDR);
    icmp.push(1);
    icmp.extend_from_slice(&mac);
    let sum = checksum6(&icmp, ip, ALL_NODES, IPPROTO_ICMPV6);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());

    let mut f = Vec::with_capacity(NA_FRAME_LEN);
    ethernet_header(&mut f, [0x33, 0x33, 0, 0, 0, 1], mac, ETHERTYPE_IPV6);
    ipv6_header(&mut f, icmp.len(), IPPROTO_ICMPV6, 255, ip, ALL_NODES);
    f.extend_from_slice(&icmp);
    f
}

fn ipv6_header(out: &mut Vec<u8>, plen: usize, next: u8, hlim: u8, src: Ipv6Addr, dst: Ipv6Addr) {
    out.extend_from_slice(&[6 << 4, 0, 0, 0]);
    out.extend_from_slice(&(plen as u16).to_be_bytes());
    out.push(next);
    out.push(hlim);
    out.extend_from_slice(&src.octets());
    out.extend_from_slice(&dst.octets());
}

/// The bare TCP header of a tickle: ACK, seq 0, ack 0, window 1234.
fn tcp_header(sport: u16, dport: u16) -> Vec<u8> {
    let mut t = Vec::with_capacity(20);
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&0u32.to_be_bytes());
    t.extend_from_slice(&0u32.to_be_bytes());
    t.push(5 << 4);
    t.push(TH_ACK);
    t.extend_from_slice(&TICKLE_WINDOW.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 0]);
    t
}

/// An IPv4 tickle ACK (IP header included, TTL 255) from `src` to `dst`. The kernel fills in
/// the IP checksum and identification of a header-included raw packet.
pub fn tcp4_tickle(src: SocketAddrV4, dst: SocketAddrV4) -> Vec<u8> {
    let mut tcp = tcp_header(src.port(), dst.port());
    let sum = checksum4(&tcp, *src.ip(), *dst.ip(), IPPROTO_TCP);
    tcp[16..18].copy_from_slice(&sum.to_be_bytes());
    let mut p = Vec::with_capacity(TCP4_LEN);
    p.push(0x45);
    p.push(0);
    p.extend_from_slice(&(TCP4_LEN as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0]);
    p.push(255);
    p.push(IPPROTO_TCP);
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(&src.ip().octets());
    p.extend_from_slice(&dst.ip().octets());
    p.extend_from_slice(&tcp);
    p
}

/// An IPv6 tickle ACK (IP header included, hop limit 64) from `src` to `dst`.
pub fn tcp6_tickle(src: SocketAddrV6, dst: SocketAddrV6) -> Vec<u8> {
    let mut tcp = tcp_header(src.port(), dst.port());
    let sum = checksum6(&tcp, *src.ip(), *dst.ip(), IPPROTO_TCP);
    tcp[16..18].copy_from_slice(&sum.to_be_bytes());
    let mut p = Vec::with_capacity(TCP6_LEN);
    ipv6_header(&mut p, tcp.len(), IPPROTO_TCP, 64, *src.ip(), *dst.ip());
    p.extend_from_slice(&tcp);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];

    /// A received checksum verifies when the sum over pseudo header and data folds to 0xffff.
    fn verifies4(segment: &[u8], src: Ipv4Addr, dst: Ipv4Addr, proto: u8) -> bool {
        let mut s = sum16(&src.octets()) + sum16(&dst.octets()) + u32::from(proto);
        s += segment.len() as u32 + sum16(segment);
        s = (s & 0xffff) + (s >> 16);
        s = (s & 0xffff) + (s >> 16);
        s == 0xffff
    }

    fn verifies6(payload: &[u8], src: Ipv6Addr, dst: Ipv6Addr, next: u8) -> bool {
        let mut s = sum16(&src.octets()) + sum16(&dst.octets()) + u32::from(next);
        s += payload.len() as u32 + sum16(payload);
        s = (s & 0xffff) + (s >> 16);
        s = (s & 0xffff) + (s >> 16);
        s == 0xffff
    }

    #[test]
    fn gratuitous_arp_request_and_reply() {
        let ip = Ipv4Addr::new(10, 0, 0, 7);
        let req = arp_frame(ip, MAC, false);
        assert_eq!(req.len(), 64);
        assert_eq!(&req[0..6], &[0xff; 6]);
        assert_eq!(&req[6..12], &MAC);
        assert_eq!(&req[12..14], &[0x08, 0x06]);
        assert_eq!(&req[14..22], &[0, 1, 8, 0, 6, 4, 0, 1]);
        assert_eq!(&req[22..28], &MAC, "sender hardware address");
        assert_eq!(&req[28..32], &[10, 0, 0, 7]);
        assert_eq!(&req[32..38], &[0; 6], "target hardware address");
        assert_eq!(&req[38..42], &[10, 0, 0, 7]);
        assert!(req[42..].iter().all(|&b| b == 0));
        let reply = arp_frame(ip, MAC, true);
        assert_eq!(&reply[20..22], &[0, 2]);
        assert_eq!(&reply[32..38], &MAC);
    }

    #[test]
    fn neighbour_advertisement_layout_and_checksum() {
        let ip: Ipv6Addr = "fd00::7".parse().unwrap();
        let f = neighbour_advert_frame(ip, MAC);
        assert_eq!(f.len(), NA_FRAME_LEN);
        assert_eq!(&f[0..6], &[0x33, 0x33, 0, 0, 0, 1]);
        assert_eq!(&f[12..14], &[0x86, 0xdd]);
        assert_eq!(f[14] >> 4, 6);
        assert_eq!(u16::from_be_bytes([f[18], f[19]]), 32, "payload length");
        assert_eq!((f[20], f[21]), (IPPROTO_ICMPV6, 255));
        assert_eq!(&f[22..38], &ip.octets());
        let all_nodes: Ipv6Addr = "ff02::1".parse().unwrap();
        assert_eq!(&f[38..54], &all_nodes.octets());
        let icmp = &f[54..];
        assert_eq!((icmp[0], icmp[1], icmp[4]), (136, 0, 0x20));
        assert_eq!(&icmp[8..24], &ip.octets());
        assert_eq!(&icmp[24..26], &[2, 1]);
        assert_eq!(&icmp[26..32], &MAC);
        assert!(verifies6(icmp, ip, all_nodes, IPPROTO_ICMPV6));
    }

    #[test]
    fn ipv4_tickle_is_a_bare_ack_with_window_1234() {
        let src = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 445);
        let dst = SocketAddrV4::new(Ipv4Addr::new(192, 168, 1, 9), 40000);
        let p = tcp4_tickle(src, dst);
        assert_eq!(p.len(), 40);
        assert_eq!((p[0], p[8], p[9]), (0x45, 255, 6));
        assert_eq!(&p[12..16], &[10, 0, 0, 1]);
        assert_eq!(&p[16..20], &[192, 168, 1, 9]);
        let tcp = &p[20..];
        assert_eq!(u16::from_be_bytes([tcp[0], tcp[1]]), 445);
        assert_eq!(u16::from_be_bytes([tcp[2], tcp[3]]), 40000);
        assert_eq!(&tcp[4..12], &[0; 8], "seq and ack 0");
        assert_eq!((tcp[12], tcp[13]), (0x50, 0x10));
        assert_eq!(u16::from_be_bytes([tcp[14], tcp[15]]), 1234);
        assert!(verifies4(tcp, *src.ip(), *dst.ip(), IPPROTO_TCP));
    }

    #[test]
    fn ipv6_tickle_checksum_covers_the_pseudo_header() {
        let src = SocketAddrV6::new("fd00::1".parse().unwrap(), 445, 0, 0);
        let dst = SocketAddrV6::new("fd00::99".parse().unwrap(), 50000, 0, 0);
        let p = tcp6_tickle(src, dst);
        assert_eq!(p.len(), 60);
        assert_eq!((p[6], p[7]), (IPPROTO_TCP, 64));
        assert!(verifies6(&p[40..], *src.ip(), *dst.ip(), IPPROTO_TCP));
    }

    #[test]
    fn checksums_are_never_zero() {
        assert_eq!(finish(0xffff), 0xffff);
        assert_eq!(finish(0), 0xffff);
        assert_eq!(finish(0x1_fffe), 0xffff);
        assert_eq!(finish(0x1234), !0x1234);
    }
}
