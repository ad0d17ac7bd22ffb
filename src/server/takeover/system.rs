//! The system side of IP failover for the real daemon (mirrors the parts of
//! `ctdb/common/system.c` and `ctdb/common/system_socket.c` that ctdbd uses for public
//! addresses). The core only sees these through [`super::FailoverConfig`] and effects.

use crate::common::public_addresses;
use crate::protocol::SockAddr;
use crate::server::daemon::PublicAddress;
use nix::sys::socket::{
    bind, socket, AddressFamily, SockFlag, SockProtocol, SockType, SockaddrIn, SockaddrIn6,
};
use std::net::{SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;
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

/// `ctdb_sys_check_iface_exists`.
pub fn iface_exists(iface: &str) -> bool {
    public_addresses::interface_exists_in_sysfs(iface)
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

/// `ctdb_sys_send_arp`.
pub fn send_arp(addr: &SockAddr, iface: &str) -> Result<(), String> {
    let _ = (addr, iface);
    Err("not implemented".to_string())
}

/// `ctdb_sys_send_tcp` with seq 0, ack 0 and no RST: a tickle ACK from `src` to `dst`.
pub fn send_tickle_ack(src: &SockAddr, dst: &SockAddr) -> Result<(), String> {
    let _ = (src, dst);
    Err("not implemented".to_string())
}
