//! The system side of IP failover for the real daemon (mirrors the parts of
//! `ctdb/common/system.c` and `ctdb/common/system_socket.c` that ctdbd uses for public
//! addresses). The core only sees these through [`super::FailoverConfig`] and effects.

use super::packets;
use crate::common::public_addresses;
use crate::protocol::SockAddr;
use crate::server::daemon::PublicAddress;
use nix::sys::socket::{
    bind, socket, AddressFamily, SockFlag, SockProtocol, SockType, SockaddrIn, SockaddrIn6,
};
use std::net::{SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// `ctdb_sys_have_ip`: the address is local exactly when a TCP socket can bind to it.
pub fn have_ip(addr: &SockAddr) -> bool {
    let bound = match *addr {
        SockAddr::V4 { ip, .. } => socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::Tcp,
        )
        .and_then(|fd| bind(fd.as_raw_fd(), &SockaddrIn::from(SocketAddrV4::new(ip, 0)))),
        SockAddr::V6 {
            ip,
            flowinfo,
            scope_id,
            ..
        } => socket(
            AddressFamily::Inet6,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::Tcp,
        )
        .and_then(|fd| {
            bind(
                fd.as_raw_fd(),
                &SockaddrIn6::from(SocketAddrV6::new(ip, 0, flowinfo, scope_id)),
            )
        }),
    };
    bound.is_ok()
}

/// `ctdb_sys_check_iface_exists`: the interface is in `if_nameindex()`, which asks the kernel
/// (netlink) and so sees the caller's network namespace even where `/sys` was mounted for
/// another one (`unshare -n`, `nsenter --net`).
pub fn iface_exists(iface: &str) -> bool {
    nix::net::if_::if_nameindex()
        .is_ok_and(|list| list.iter().any(|i| i.name().to_bytes() == iface.as_bytes()))
}

/// Re-reads the public addresses file as the RELOAD_PUBLIC_IPS child does (a missing file
/// means no addresses; unknown interfaces are errors).
pub fn read_public_addresses(path: &Path) -> Result<Vec<PublicAddress>, String> {
    public_addresses::load(path, iface_exists)
        .map(|list| {
            list.into_iter()
                .map(|p| PublicAddress {
                    addr: p.addr,
                    mask_bits: p.mask_bits,
                    ifaces: p.ifaces,
                })
                .collect()
        })
        .map_err(|e| e.to_string())
}

/// `ARPHRD_ETHER` and `ARPHRD_LOOPBACK`, the hardware types SIOCGIFHWADDR reports.
const ARPHRD_ETHER: u16 = 1;
const ARPHRD_LOOPBACK: u16 = 772;

/// SIOCGIFHWADDR on `fd`: the interface's hardware type and (first six bytes of) address. Like
/// stock, this asks the socket's network namespace rather than `/sys`, which may show another.
fn hardware_address(fd: &OwnedFd, iface: &str) -> Result<(u16, [u8; packets::ETH_ALEN]), String> {
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    if iface.len() >= request.ifr_name.len() || iface.contains('\0') {
        return Err(format!("Interface '{iface}' not found"));
    }
    for (to, from) in request.ifr_name.iter_mut().zip(iface.bytes()) {
        *to = from.cast_signed();
    }
    // SAFETY: SIOCGIFHWADDR reads the NUL-terminated name from `request` and writes the
    // hardware address into it; `request` is live and writable for the call.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFHWADDR, &raw mut request) };
    if ret < 0 {
        return Err(format!(
            "ioctl failed on interface '{iface}': {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: a successful SIOCGIFHWADDR filled the union's hardware address member.
    let hwaddr = unsafe { request.ifr_ifru.ifru_hwaddr };
    let mut mac = [0u8; packets::ETH_ALEN];
    for (to, from) in mac.iter_mut().zip(hwaddr.sa_data.iter()) {
        *to = from.cast_unsigned();
    }
    Ok((hwaddr.sa_family, mac))
}

/// Opens a raw socket; the descriptor closes when the result is dropped.
fn raw_socket(domain: i32, ty: i32, protocol: i32) -> Result<OwnedFd, String> {
    // SAFETY: socket(2) takes plain integers and returns a new descriptor or -1.
    let fd = unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, protocol) };
    if fd < 0 {
        return Err(format!(
            "Failed to open raw socket: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// sendto(2) of a whole packet to a `sockaddr_*` value of type `T`.
fn send_to<T>(fd: &OwnedFd, packet: &[u8], addr: &T) -> Result<(), String> {
    // SAFETY: `packet` and `addr` are live for the call and their lengths are passed with
    // them; the kernel only reads from both.
    let sent = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            packet.as_ptr().cast(),
            packet.len(),
            0,
            std::ptr::from_ref(addr).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return Err(format!(
            "Failed sendto: {}",
            std::io::Error::last_os_error()
        ));
    }
    if sent as usize != packet.len() {
        return Err("Failed sendto - didn't send full packet".to_string());
    }
    Ok(())
}

/// `ctdb_sys_send_arp`: a gratuitous ARP request and reply (IPv4) or an unsolicited
/// neighbour advertisement (IPv6) on `iface`. Loopback interfaces are skipped silently,
/// other non-Ethernet ones are an error.
pub fn send_arp(addr: &SockAddr, iface: &str) -> Result<(), String> {
    let fd = raw_socket(libc::AF_PACKET, libc::SOCK_RAW, 0)?;
    let ifindex = nix::net::if_::if_nametoindex(iface)
        .map_err(|e| format!("Interface '{iface}' not found: {e}"))?;
    let (hwtype, mac) = hardware_address(&fd, iface)?;
    if hwtype == ARPHRD_LOOPBACK {
        log::debug!("Ignoring loopback arp request");
        return Ok(());
    }
    if hwtype != ARPHRD_ETHER {
        return Err(format!("Not an ethernet address family (0x{hwtype:x})"));
    }
    let frames = match *addr {
        SockAddr::V4 { ip, .. } => vec![
            packets::arp_frame(ip, mac, false),
            packets::arp_frame(ip, mac, true),
        ],
        SockAddr::V6 { ip, .. } => vec![packets::neighbour_advert_frame(ip, mac)],
    };
    for frame in frames {
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sll.sll_ifindex = ifindex.cast_signed();
        sll.sll_halen = packets::ETH_ALEN as u8;
        sll.sll_addr[..packets::ETH_ALEN].copy_from_slice(&frame[..packets::ETH_ALEN]);
        send_to(&fd, &frame, &sll)?;
    }
    Ok(())
}

/// `ctdb_sys_send_tcp` with seq 0, ack 0 and no RST: a tickle ACK from `src` (the public
/// address) to `dst` (the client), through a header-including raw socket.
pub fn send_tickle_ack(src: &SockAddr, dst: &SockAddr) -> Result<(), String> {
    match (*src, *dst) {
        (
            SockAddr::V4 {
                ip: sip,
                port: sport,
            },
            SockAddr::V4 {
                ip: dip,
                port: dport,
            },
        ) => {
            let packet =
                packets::tcp4_tickle(SocketAddrV4::new(sip, sport), SocketAddrV4::new(dip, dport));
            let fd = raw_socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW)?;
            let one: libc::c_int = 1;
            // SAFETY: IP_HDRINCL takes an int, passed by pointer with its size.
            let ret = unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::IPPROTO_IP,
                    libc::IP_HDRINCL,
                    std::ptr::from_ref(&one).cast(),
                    size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if ret != 0 {
                return Err(format!(
                    "Failed to setup IP headers: {}",
                    std::io::Error::last_os_error()
                ));
            }
            let to = SockaddrIn::from(SocketAddrV4::new(dip, dport));
            send_to(&fd, &packet, to.as_ref())
        }
        (
            SockAddr::V6 {
                ip: sip,
                port: sport,
                ..
            },
            SockAddr::V6 {
                ip: dip,
                flowinfo,
                scope_id,
                port: dport,
            },
        ) => {
            let packet = packets::tcp6_tickle(
                SocketAddrV6::new(sip, sport, 0, 0),
                SocketAddrV6::new(dip, dport, 0, 0),
            );
            let fd = raw_socket(libc::AF_INET6, libc::SOCK_RAW, libc::IPPROTO_RAW)?;
            // An IPv6 raw socket wants port 0 (or a protocol number) in the destination.
            let to = SockaddrIn6::from(SocketAddrV6::new(dip, 0, flowinfo, scope_id));
            send_to(&fd, &packet, to.as_ref())
        }
        _ => Err("Not an ipv4/v6 address pair".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_on_local_interfaces_are_found() {
        assert!(have_ip(&SockAddr::new("127.0.0.1".parse().unwrap(), 4379)));
        assert!(!have_ip(&SockAddr::new("192.0.2.77".parse().unwrap(), 0)));
        assert!(iface_exists("lo"));
        assert!(!iface_exists("no/such"));
        assert!(!iface_exists(""));
    }

    /// Needs CAP_NET_RAW (stock opens the packet socket before it looks at the interface);
    /// skipped without it. Frames on a real Ethernet link are checked by the integration
    /// test `netns::announcements_and_tickles_on_the_wire`.
    #[test]
    fn loopback_arps_are_skipped_and_unknown_interfaces_fail() {
        if raw_socket(libc::AF_PACKET, libc::SOCK_RAW, 0).is_err() {
            eprintln!("no CAP_NET_RAW: skipped");
            return;
        }
        let addr = SockAddr::new("10.0.0.1".parse().unwrap(), 0);
        assert_eq!(send_arp(&addr, "lo"), Ok(()));
        assert!(send_arp(&addr, "nosuchif0").is_err());
        assert!(send_arp(&addr, "a-name-far-too-long-for-ifreq").is_err());
        let fd = raw_socket(libc::AF_PACKET, libc::SOCK_RAW, 0).unwrap();
        assert_eq!(hardware_address(&fd, "lo"), Ok((ARPHRD_LOOPBACK, [0; 6])));
    }

    /// Needs CAP_NET_RAW; skipped without it. A raw TCP listener on loopback sees the tickle.
    #[test]
    fn tickle_ack_reaches_loopback() {
        let Ok(listener) = raw_socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_TCP) else {
            eprintln!("no CAP_NET_RAW: skipped");
            return;
        };
        let src = SockAddr::new("127.0.0.1".parse().unwrap(), 44445);
        let dst = SockAddr::new("127.0.0.1".parse().unwrap(), 44446);
        send_tickle_ack(&src, &dst).unwrap();
        let mut buf = [0u8; 256];
        for _ in 0..64 {
            // SAFETY: `buf` is writable for its length; MSG_DONTWAIT keeps the test from hanging.
            let n = unsafe {
                libc::recv(
                    listener.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                std::thread::sleep(std::time::Duration::from_millis(10));
                continue;
            }
            let p = &buf[..n as usize];
            if p.len() >= 40 && p[20..24] == [0xad, 0x9d, 0xad, 0x9e] {
                assert_eq!(u16::from_be_bytes([p[34], p[35]]), packets::TICKLE_WINDOW);
                assert_eq!(p[33], 0x10, "ACK only");
                return;
            }
        }
        panic!("tickle not seen");
    }
}
