//! The node side of public IP failover (mirrors `ctdb/server/ctdb_takeover.c` and the
//! release-all parts of `ctdb/server/ctdb_recover.c`).
//!
//! [`Takeover`] owns the per-address state ("vnn": current owner, active interface, update in
//! flight, pending deletion, tickle list), the interfaces with their link state and reference
//! counts, and the TCP connections local clients registered. It is sans-IO like the daemon core:
//! every control handler gets a [`NodeView`] of the daemon's own state and appends the work it
//! wants done (event runs, messages, broadcasts, ARP packets) to an [`Action`] list that the
//! daemon carries out. Questions about the kernel go through the plain function pointers in
//! [`FailoverConfig`], so tests substitute tables for them.
//!
//! Orders follow stock exactly, because `ctdb ip`, `ctdb ifaces` and the takeover helper's
//! tie-breaks depend on them: the address list is in reverse file order (each new address goes
//! to the front), the interface list has the newest interface first, each address keeps its
//! interfaces in configured order.

pub mod packets;
pub mod system;

use crate::common::clock::Instant;
use crate::protocol::basic::Marshal;
use crate::protocol::opcode::ControlOpcode;
use crate::protocol::packet::PUBLIC_IP_FLAGS_ONLY_AVAILABLE;
use crate::protocol::types::node_flags::{
    DISABLED as NODE_FLAGS_DISABLED, INACTIVE as NODE_FLAGS_INACTIVE,
};
use crate::protocol::types::{
    Connection, Iface, IfaceList, PublicIp, PublicIpInfo, PublicIpList, TickleList,
    CTDB_IFACE_SIZE, UNKNOWN_PNN,
};
use crate::protocol::{srvid, SockAddr};
use crate::server::daemon::PublicAddress;
use crate::server::effect::{ClientId, Pnn};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Rounds of gratuitous ARPs (and tickle ACKs) after a takeover (`CTDB_ARP_REPEAT`).
pub const ARP_REPEAT: u32 = 3;
/// Between announce rounds after a takeover: `CTDB_ARP_INTERVAL` plus 100 ms.
const ANNOUNCE_INTERVAL: Duration = Duration::from_millis(1100);
/// Between rounds of a SEND_GRATUITOUS_ARP control.
const GRATUITOUS_ARP_INTERVAL: Duration = Duration::from_secs(1);
/// What stock logs and passes for "no interface".
const NO_IFACE: &str = "__none__";
const ETIMEDOUT: i32 = 110;

/// How the daemon was configured for IP failover, and how to ask the system about it.
#[derive(Debug, Clone)]
pub struct FailoverConfig {
    /// `[failover] disabled`: addresses are still loaded and reported, but the kernel is never
    /// consulted and nothing is released when the node becomes inactive.
    pub disabled: bool,
    /// `do_checkpublicip`: false in test mode, where stock neither asks the kernel during
    /// takeover/release nor announces taken addresses.
    pub check_public_ips: bool,
    /// `ctdb_sys_have_ip`: the address is configured on a local interface.
    pub have_ip: fn(&SockAddr) -> bool,
    /// `ctdb_sys_check_iface_exists`.
    pub iface_exists: fn(&str) -> bool,
    /// The public addresses file, re-read by RELOAD_PUBLIC_IPS.
    pub public_addresses_file: Option<PathBuf>,
    /// Reads (and checks) a public addresses file.
    pub read_public_addresses: fn(&Path) -> Result<Vec<PublicAddress>, String>,
}

impl FailoverConfig {
    /// A configuration that asks nothing of the system: no address is ever on an interface,
    /// every interface exists, and reloading finds no file.
    pub fn detached() -> Self {
        FailoverConfig {
            disabled: false,
            check_public_ips: false,
            have_ip: |_| false,
            iface_exists: |_| true,
            public_addresses_file: None,
            read_public_addresses: |_| Err("no public addresses file".to_string()),
        }
    }
}

/// The daemon's own state that failover decisions depend on, sampled at each call.
#[derive(Debug, Clone, Copy)]
pub struct NodeView {
    pub pnn: Pnn,
    /// Runstate is RUNNING.
    pub running: bool,
    /// This node's flags.
    pub flags: u32,
    /// Recovery mode is ACTIVE (takeip and updateip may not run).
    pub recovery_active: bool,
    /// `TickleUpdateInterval`, seconds.
    pub tickle_update_interval: u32,
    /// `RecoveryDropAllIPs`, seconds.
    pub recovery_drop_all_ips: u32,
}

/// Work for the daemon, in the order it was decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Run an event; its completion goes back through [`Takeover::event_done`] with `op`.
    RunEvent {
        op: u64,
        event: &'static str,
        args: Vec<String>,
    },
    /// A message to this node's own clients (`ctdb_daemon_send_message` to our PNN).
    LocalMessage { srvid: u64, data: Vec<u8> },
    /// A message to every connected node, this one included.
    BroadcastMessage { srvid: u64, data: Vec<u8> },
    /// A NOREPLY control to the other nodes a broadcast address covers. This node has
    /// already applied whatever the control means locally.
    BroadcastControl {
        destnode: u32,
        opcode: ControlOpcode,
        data: Vec<u8>,
    },
    /// Complete the deferred control `token` with `status`.
    Finish { token: u64, status: i32 },
    /// A gratuitous ARP (IPv4) or unsolicited neighbour advertisement (IPv6) on `iface`.
    SendArp { addr: SockAddr, iface: String },
    /// A tickle ACK from the public address `src` to the client `dst`.
    SendTickleAck { src: SockAddr, dst: SockAddr },
}

/// The answer of a control handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Reply now.
    Done { status: i32, data: Vec<u8> },
    /// The reply comes with an [`Action::Finish`] for the token.
    Pending,
    /// TAKEOVER_IP found the address on a local interface while another node owns it: the
    /// daemon bans itself (`ctdb_ban_self`) and the control fails with -1.
    BanSelf,
}

impl Outcome {
    fn status(status: i32) -> Self {
        Outcome::Done {
            status,
            data: Vec::new(),
        }
    }
    fn data(data: Vec<u8>) -> Self {
        Outcome::Done { status: 0, data }
    }
}

#[derive(Debug, Clone)]
struct Interface {
    name: String,
    link_up: bool,
    references: u32,
}

/// Gratuitous ARPs and tickles still to send for a freshly taken address.
#[derive(Debug, Clone)]
struct Announce {
    due: Instant,
    count: u32,
    tickles: Option<Vec<Connection>>,
}

/// One public address (`struct ctdb_vnn`).
#[derive(Debug, Clone)]
struct Vnn {
    addr: SockAddr,
    mask_bits: u32,
    /// Candidate interfaces, in configured order.
    ifaces: Vec<String>,
    /// The interface carrying the address on this node.
    iface: Option<String>,
    /// The node believed to host the address.
    pnn: Pnn,
    /// Known client connections; `None` and an empty list differ as in stock (a received
    /// empty list is announced again after a takeover).
    tcp: Option<Vec<Connection>>,
    tcp_update_needed: bool,
    update_in_flight: bool,
    delete_pending: bool,
    announce: Option<Announce>,
}

/// A SEND_GRATUITOUS_ARP in progress.
#[derive(Debug, Clone)]
struct GratuitousArp {
    addr: SockAddr,
    iface: String,
    count: u32,
    due: Instant,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum OpKind {
    Take,
    Update { old: Option<String> },
    Release { target: Pnn },
    ReleaseAll,
}

/// An event run on behalf of an address.
#[derive(Debug, Clone)]
struct PendingOp {
    addr: SockAddr,
    kind: OpKind,
    token: Option<u64>,
}

/// The node's public addresses and everything that hangs off them.
#[derive(Debug)]
pub struct Takeover {
    config: FailoverConfig,
    vnns: Vec<Vnn>,
    ifaces: Vec<Interface>,
    /// Connections each local client registered with TCP_CLIENT, newest first.
    client_tcp: BTreeMap<ClientId, Vec<Connection>>,
    ops: BTreeMap<u64, PendingOp>,
    next_op: u64,
    arps: Vec<GratuitousArp>,
    tickle_due: Option<Instant>,
    drop_all_due: Option<Instant>,
}

impl Takeover {
    /// Loads the public addresses (in file order) the way stock builds its lists. An address
    /// whose interface name is too long is skipped with an error, as stock refuses it.
    pub fn new(addresses: &[PublicAddress], config: FailoverConfig) -> Self {
        let mut takeover = Takeover {
            config,
            vnns: Vec::new(),
            ifaces: Vec::new(),
            client_tcp: BTreeMap::new(),
            ops: BTreeMap::new(),
            next_op: 1,
            arps: Vec::new(),
            tickle_due: None,
            drop_all_due: None,
        };
        for pa in addresses {
            if let Err(e) = takeover.add_public_address(pa.addr, pa.mask_bits, &pa.ifaces, false) {
                log::error!("Failed to add public address {}: {e}", pa.addr);
            }
        }
        takeover
    }

    /// Starts the periodic tickle-list update (`ctdb_start_tcp_tickle_update`).
    pub fn start(&mut self, now: Instant, node: &NodeView) {
        self.tickle_due = Some(now.saturating_add(secs(node.tickle_update_interval)));
    }

    pub fn has_addresses(&self) -> bool {
        !self.vnns.is_empty()
    }

    /// The addresses as GET_PUBLIC_IPS lists them (all of them, reverse file order).
    pub fn public_ips(&self) -> PublicIpList {
        PublicIpList {
            ips: self
                .vnns
                .iter()
                .map(|v| PublicIp {
                    pnn: v.pnn,
                    addr: v.addr,
                })
                .collect(),
        }
    }

    /// The interfaces as GET_IFACES lists them.
    pub fn iface_list(&self) -> IfaceList {
        IfaceList {
            ifaces: self.ifaces.iter().map(wire_iface).collect(),
        }
    }

    // ------------------------------------------------------------------------------------
    // Lists and interfaces

    fn find_vnn(&self, addr: &SockAddr) -> Option<usize> {
        self.vnns.iter().position(|v| same_ip(&v.addr, addr))
    }

    fn find_iface(&self, name: &str) -> Option<usize> {
        self.ifaces.iter().position(|i| i.name == name)
    }

    /// `ctdb_add_public_address`: interfaces are created as they are named (and stay even if
    /// a later one fails), the address goes to the front of the list.
    fn add_public_address(
        &mut self,
        addr: SockAddr,
        mask_bits: u32,
        ifaces: &[String],
        check_exists: bool,
    ) -> Result<(), String> {
        if self
            .vnns
            .iter()
            .any(|v| same_ip(&v.addr, &addr) && v.addr.port() == addr.port())
        {
            return Err(format!("Duplicate public IP address '{addr}'"));
        }
        let mut names = Vec::with_capacity(ifaces.len());
        for name in ifaces {
            if check_exists && !(self.config.iface_exists)(name) {
                return Err(format!(
                    "Unknown interface {name} for public address {addr}"
                ));
            }
            self.add_local_iface(name)?;
            names.push(name.clone());
        }
        self.vnns.insert(
            0,
            Vnn {
                addr,
                // Stock keeps the mask in a uint8_t.
                mask_bits: mask_bits & 0xff,
                ifaces: names,
                iface: None,
                pnn: UNKNOWN_PNN,
                tcp: None,
                tcp_update_needed: false,
                update_in_flight: false,
                delete_pending: false,
                announce: None,
            },
        );
        Ok(())
    }

    fn add_local_iface(&mut self, name: &str) -> Result<(), String> {
        if name.len() > CTDB_IFACE_SIZE {
            return Err(format!("Interface name too long \"{name}\""));
        }
        if self.find_iface(name).is_none() {
            self.ifaces.insert(
                0,
                Interface {
                    name: name.to_string(),
                    link_up: true,
                    references: 0,
                },
            );
        }
        Ok(())
    }

    /// `ctdb_vnn_best_iface`: the first link-up candidate with the fewest references.
    fn best_iface(&self, vnn: usize) -> Option<usize> {
        let mut best: Option<usize> = None;
        for name in &self.vnns[vnn].ifaces {
            let Some(cur) = self.find_iface(name) else {
                continue;
            };
            if !self.ifaces[cur].link_up {
                continue;
            }
            match best {
                None => best = Some(cur),
                Some(b) if self.ifaces[cur].references < self.ifaces[b].references => {
                    best = Some(cur);
                }
                Some(_) => {}
            }
        }
        best
    }

    /// `ctdb_vnn_assign_iface`: taking an interface also claims the address for this node.
    fn assign_iface(&mut self, vnn: usize, pnn: Pnn) -> Result<(), ()> {
        if self.vnns[vnn].iface.is_some() {
            return Ok(());
        }
        let Some(best) = self.best_iface(vnn) else {
            log::error!(
                "public address '{}' cannot assign to iface any iface",
                self.vnns[vnn].addr
            );
            return Err(());
        };
        self.ifaces[best].references += 1;
        let v = &mut self.vnns[vnn];
        v.iface = Some(self.ifaces[best].name.clone());
        v.pnn = pnn;
        log::info!(
            "public address '{}' now assigned to iface '{}' refs[{}]",
            v.addr,
            self.ifaces[best].name,
            self.ifaces[best].references
        );
        Ok(())
    }

    /// `ctdb_vnn_unassign_iface`.
    fn unassign_iface(&mut self, vnn: usize, pnn: Pnn) {
        if let Some(name) = self.vnns[vnn].iface.take() {
            if let Some(i) = self.find_iface(&name) {
                self.ifaces[i].references = self.ifaces[i].references.saturating_sub(1);
            }
        }
        let v = &mut self.vnns[vnn];
        if v.pnn == pnn {
            v.pnn = UNKNOWN_PNN;
        }
    }

    fn iface_link_up(&self, name: &str) -> bool {
        self.find_iface(name)
            .is_some_and(|i| self.ifaces[i].link_up)
    }

    fn iface_refs(&self, name: &str) -> u32 {
        self.find_iface(name)
            .map_or(0, |i| self.ifaces[i].references)
    }

    /// `ctdb_vnn_available`: whether this node may be given the address. Unhealthy and
    /// disabled nodes never host addresses.
    fn available(&self, vnn: usize, node: &NodeView) -> bool {
        if !node.running || node.flags & (NODE_FLAGS_INACTIVE | NODE_FLAGS_DISABLED) != 0 {
            return false;
        }
        let v = &self.vnns[vnn];
        if v.delete_pending {
            return false;
        }
        if v.iface.as_deref().is_some_and(|i| self.iface_link_up(i)) {
            return true;
        }
        v.ifaces.iter().any(|i| self.iface_link_up(i))
    }

    /// `do_delete_ip`: the address goes, and so do interfaces nothing else names.
    fn delete_vnn(&mut self, vnn: usize, pnn: Pnn) {
        self.unassign_iface(vnn, pnn);
        let gone = self.vnns.remove(vnn);
        self.ifaces.retain(|i| {
            !gone.ifaces.contains(&i.name) || self.vnns.iter().any(|v| v.ifaces.contains(&i.name))
        });
    }

    fn kernel_checks(&self) -> bool {
        !self.config.disabled && self.config.check_public_ips
    }

    fn have_ip(&self, addr: &SockAddr) -> bool {
        (self.config.have_ip)(addr)
    }

    fn new_op(&mut self, addr: SockAddr, kind: OpKind, token: Option<u64>) -> u64 {
        let op = self.next_op;
        self.next_op += 1;
        self.ops.insert(op, PendingOp { addr, kind, token });
        op
    }

    // ------------------------------------------------------------------------------------
    // Controls

    /// Every control this module answers; `flags` is the control header's flags word.
    #[allow(clippy::too_many_arguments)]
    pub fn control(
        &mut self,
        now: Instant,
        node: &NodeView,
        opcode: ControlOpcode,
        flags: u32,
        data: &[u8],
        client: Option<ClientId>,
        token: u64,
        actions: &mut Vec<Action>,
    ) -> Outcome {
        use ControlOpcode as Op;
        match opcode {
            Op::TakeoverIp => self.takeover_ip(node, data, token, actions),
            Op::ReleaseIp => self.release_ip(node, data, token, actions),
            Op::GetPublicIps => self.get_public_ips(node, flags, data),
            Op::GetPublicIpInfo => self.get_public_ip_info(data),
            Op::GetIfaces => {
                if !data.is_empty() {
                    return Outcome::status(-1);
                }
                Outcome::data(self.iface_list().to_bytes())
            }
            Op::SetIfaceLinkState => self.set_iface_link_state(data),
            Op::AddPublicIp => self.add_public_ip_control(data),
            Op::DelPublicIp => self.del_public_ip_control(node, data),
            Op::ReloadPublicIps => self.reload_public_ips(node, data, actions),
            Op::SendGratuitousArp => self.send_gratuitous_arp(now, data, actions),
            Op::TcpClient => self.tcp_client(node, client, data, actions),
            Op::TcpAdd => self.tcp_add_control(data, false),
            Op::TcpAddDelayedUpdate => self.tcp_add_control(data, true),
            Op::TcpRemove => self.tcp_remove(data),
            Op::GetTcpTickleList => self.get_tcp_tickle_list(data),
            Op::SetTcpTickleList => self.set_tcp_tickle_list(node, data),
            Op::Startup => {
                if !data.is_empty() {
                    return Outcome::status(-1);
                }
                self.send_tickles_for_all(node, true, actions);
                Outcome::status(0)
            }
            _ => Outcome::status(-1),
        }
    }

    /// The opcodes [`Takeover::control`] answers.
    pub fn handles(opcode: ControlOpcode) -> bool {
        use ControlOpcode as Op;
        matches!(
            opcode,
            Op::TakeoverIp
                | Op::ReleaseIp
                | Op::GetPublicIps
                | Op::GetPublicIpInfo
                | Op::GetIfaces
                | Op::SetIfaceLinkState
                | Op::AddPublicIp
                | Op::DelPublicIp
                | Op::ReloadPublicIps
                | Op::SendGratuitousArp
                | Op::TcpClient
                | Op::TcpAdd
                | Op::TcpAddDelayedUpdate
                | Op::TcpRemove
                | Op::GetTcpTickleList
                | Op::SetTcpTickleList
                | Op::Startup
        )
    }

    /// Mirrors `ctdb_control_takeover_ip`.
    fn takeover_ip(
        &mut self,
        node: &NodeView,
        data: &[u8],
        token: u64,
        actions: &mut Vec<Action>,
    ) -> Outcome {
        let Some((pnn, addr)) = public_ip_arg(data) else {
            return Outcome::status(-1);
        };
        if pnn != node.pnn {
            log::error!(
                "takeoverip called for an ip '{}' with pnn {}, but we're node {}",
                display_addr(addr.as_ref()),
                pnn.cast_signed(),
                node.pnn
            );
            return Outcome::status(-1);
        }
        let Some(vnn) = addr.as_ref().and_then(|a| self.find_vnn(a)) else {
            log::info!(
                "takeoverip called for an ip '{}' that is not a public address",
                display_addr(addr.as_ref())
            );
            return Outcome::status(0);
        };
        let vaddr = self.vnns[vnn].addr;
        let have_ip = self.kernel_checks() && self.have_ip(&vaddr);
        let Some(best) = self.best_iface(vnn) else {
            log::error!(
                "takeoverip of IP {}/{} failed to find a usable interface (old {}, have_ip {})",
                vaddr,
                self.vnns[vnn].mask_bits,
                self.vnns[vnn].iface.as_deref().unwrap_or(NO_IFACE),
                i32::from(have_ip)
            );
            return Outcome::status(-1);
        };
        let owner = self.vnns[vnn].pnn;
        if owner != node.pnn && have_ip && owner != UNKNOWN_PNN {
            log::error!(
                "takeoverip of IP {vaddr} is known to the kernel, and we have it on iface[{}], but it was assigned to node {} and we are node {}, banning ourself",
                self.vnns[vnn].iface.as_deref().unwrap_or(NO_IFACE),
                owner,
                node.pnn
            );
            return Outcome::BanSelf;
        }
        let mut do_update = false;
        if owner == UNKNOWN_PNN && have_ip {
            log::warn!("Doing updateip for IP {vaddr} already on an interface");
            do_update = true;
        }
        if let Some(cur) = self.vnns[vnn].iface.clone() {
            let best_name = &self.ifaces[best].name;
            if &cur != best_name {
                if !self.iface_link_up(&cur) {
                    do_update = true;
                } else if self.iface_refs(&cur) > self.ifaces[best].references + 1 {
                    // Only move when the rebalance gains something.
                    do_update = true;
                }
            }
        }
        if !have_ip {
            if do_update {
                self.unassign_iface(vnn, node.pnn);
            }
            return self.do_takeip(node, vnn, token, actions);
        }
        if do_update {
            return self.do_updateip(node, vnn, token, actions);
        }
        log::info!(
            "Redundant takeover of IP {vaddr}/{} on interface {} (ip already held)",
            self.vnns[vnn].mask_bits,
            self.vnns[vnn].iface.as_deref().unwrap_or(NO_IFACE)
        );
        Outcome::status(0)
    }

    /// Mirrors `ctdb_do_takeip`. A refused event leaves the address assigned, as in stock.
    fn do_takeip(
        &mut self,
        node: &NodeView,
        vnn: usize,
        token: u64,
        actions: &mut Vec<Action>,
    ) -> Outcome {
        let addr = self.vnns[vnn].addr;
        let bits = self.vnns[vnn].mask_bits;
        if self.vnns[vnn].update_in_flight {
            log::info!(
                "Takeover of IP {addr}/{bits} rejected update for this IP already in flight"
            );
            return Outcome::status(-1);
        }
        if self.assign_iface(vnn, node.pnn).is_err() {
            log::error!("Takeover of IP {addr}/{bits} failed to assign a usable interface");
            return Outcome::status(-1);
        }
        let iface = self.vnns[vnn].iface.clone().unwrap_or_default();
        log::info!("Takeover of IP {addr}/{bits} on interface {iface}");
        if node.recovery_active {
            log::error!("Refusing to run event 'takeip' while in recovery");
            log::error!("Failed to takeover IP {addr} on interface {iface}");
            return Outcome::status(-1);
        }
        self.vnns[vnn].update_in_flight = true;
        let op = self.new_op(addr, OpKind::Take, Some(token));
        actions.push(Action::RunEvent {
            op,
            event: "takeip",
            args: vec![iface, addr.to_string(), bits.to_string()],
        });
        Outcome::Pending
    }

    /// Mirrors `ctdb_do_updateip`: moves the address to the best interface.
    fn do_updateip(
        &mut self,
        node: &NodeView,
        vnn: usize,
        token: u64,
        actions: &mut Vec<Action>,
    ) -> Outcome {
        let addr = self.vnns[vnn].addr;
        let bits = self.vnns[vnn].mask_bits;
        if self.vnns[vnn].update_in_flight {
            log::info!("Update of IP {addr}/{bits} rejected update for this IP already in flight");
            return Outcome::status(-1);
        }
        let old = self.vnns[vnn].iface.clone();
        let old_name = old.clone().unwrap_or_else(|| NO_IFACE.to_string());
        self.unassign_iface(vnn, node.pnn);
        if self.assign_iface(vnn, node.pnn).is_err() {
            log::error!(
                "Update of IP {addr}/{bits} failed to assign a usable interface (old iface '{old_name}')"
            );
            return Outcome::status(-1);
        }
        let new_name = self.vnns[vnn].iface.clone().unwrap_or_default();
        if old.as_deref() == Some(new_name.as_str()) {
            // Moving onto the same interface needs no event.
            return Outcome::status(0);
        }
        log::info!("Update of IP {addr}/{bits} from interface {old_name} to {new_name}");
        if node.recovery_active {
            log::error!("Refusing to run event 'updateip' while in recovery");
            return Outcome::status(-1);
        }
        self.vnns[vnn].update_in_flight = true;
        let op = self.new_op(addr, OpKind::Update { old }, Some(token));
        actions.push(Action::RunEvent {
            op,
            event: "updateip",
            args: vec![old_name, new_name, addr.to_string(), bits.to_string()],
        });
        Outcome::Pending
    }

    /// Mirrors `ctdb_control_release_ip`. `pnn` is the new owner; nodes that do not hold
    /// the address just learn where it went ("redundant release").
    fn release_ip(
        &mut self,
        node: &NodeView,
        data: &[u8],
        token: u64,
        actions: &mut Vec<Action>,
    ) -> Outcome {
        let Some((target, addr)) = public_ip_arg(data) else {
            return Outcome::status(-1);
        };
        let Some(vnn) = addr.as_ref().and_then(|a| self.find_vnn(a)) else {
            log::info!(
                "releaseip called for an ip '{}' that is not a public address",
                display_addr(addr.as_ref())
            );
            return Outcome::status(0);
        };
        let vaddr = self.vnns[vnn].addr;
        let bits = self.vnns[vnn].mask_bits;
        // Any announcement still going out for the address stops.
        self.vnns[vnn].announce = None;
        if self.kernel_checks() {
            if !self.have_ip(&vaddr) {
                log::debug!("Redundant release of IP {vaddr}/{bits} (ip not held)");
                self.vnns[vnn].pnn = target;
                self.unassign_iface(vnn, node.pnn);
                return Outcome::status(0);
            }
        } else if self.vnns[vnn].iface.is_none() {
            log::debug!("Redundant release of IP {vaddr}/{bits} (ip not held)");
            self.vnns[vnn].pnn = target;
            return Outcome::status(0);
        }
        if self.vnns[vnn].update_in_flight {
            log::info!(
                "Release of IP {vaddr}/{bits} rejected update for this IP already in flight"
            );
            return Outcome::status(-1);
        }
        let iface = self.vnns[vnn]
            .iface
            .clone()
            .unwrap_or_else(|| NO_IFACE.to_string());
        log::info!(
            "Release of IP {vaddr}/{bits} on interface {iface}  node:{}",
            target.cast_signed()
        );
        self.vnns[vnn].update_in_flight = true;
        let op = self.new_op(vaddr, OpKind::Release { target }, Some(token));
        actions.push(Action::RunEvent {
            op,
            event: "releaseip",
            args: vec![iface, vaddr.to_string(), bits.to_string()],
        });
        Outcome::Pending
    }

    /// Mirrors `release_ip_post`: tells local clients (smbd drops its connections), frees the
    /// interface, and deletes an address whose deletion waited for the release.
    fn release_ip_post(&mut self, node: &NodeView, vnn: usize, actions: &mut Vec<Action>) {
        let addr = self.vnns[vnn].addr;
        log::info!("Sending RELEASE_IP message for {addr}");
        actions.push(Action::LocalMessage {
            srvid: srvid::RELEASE_IP,
            data: ip_string(&addr),
        });
        self.unassign_iface(vnn, node.pnn);
        if self.vnns[vnn].delete_pending {
            self.delete_vnn(vnn, node.pnn);
        }
    }

    /// Mirrors `ctdb_release_all_ips`, run when the node becomes inactive or has been in
    /// recovery too long: every address the kernel has is released. Stock runs the events
    /// one after the other inside the call; here they are all started and finish later.
    pub fn release_all(&mut self, node: &NodeView, actions: &mut Vec<Action>) {
        if self.config.disabled {
            return;
        }
        let addrs: Vec<SockAddr> = self.vnns.iter().map(|v| v.addr).collect();
        let mut count = 0;
        for addr in addrs {
            let Some(vnn) = self.find_vnn(&addr) else {
                continue;
            };
            if !self.have_ip(&addr) {
                self.unassign_iface(vnn, node.pnn);
                continue;
            }
            let bits = self.vnns[vnn].mask_bits;
            let iface = self.vnns[vnn]
                .iface
                .clone()
                .unwrap_or_else(|| NO_IFACE.to_string());
            if self.vnns[vnn].update_in_flight {
                log::warn!(
                    "Not releasing IP {addr}/{bits} on interface {iface}, an update is already in progress"
                );
                continue;
            }
            self.vnns[vnn].update_in_flight = true;
            log::info!("Release of IP {addr}/{bits} on interface {iface} node:-1");
            let op = self.new_op(addr, OpKind::ReleaseAll, None);
            actions.push(Action::RunEvent {
                op,
                event: "releaseip",
                args: vec![iface, addr.to_string(), bits.to_string()],
            });
            count += 1;
        }
        log::info!("Releasing {count} public IPs");
    }

    /// An event run by this module finished with `result` (0, a script status, or an errno).
    pub fn event_done(
        &mut self,
        now: Instant,
        node: &NodeView,
        op: u64,
        result: i32,
        actions: &mut Vec<Action>,
    ) {
        let Some(pending) = self.ops.remove(&op) else {
            return;
        };
        // Hung takeip/releaseip scripts do not fail the operation (stock's event layer turns
        // their timeouts into success).
        let result = match pending.kind {
            OpKind::Take | OpKind::Release { .. } | OpKind::ReleaseAll if result == ETIMEDOUT => {
                log::error!("Ignoring hung script for {} event", op_event(&pending.kind));
                0
            }
            _ => result,
        };
        let finish = |actions: &mut Vec<Action>, status: i32| {
            if let Some(token) = pending.token {
                actions.push(Action::Finish { token, status });
            }
        };
        let Some(vnn) = self.find_vnn(&pending.addr) else {
            // The address was deleted meanwhile; stock would not reply at all.
            finish(actions, -1);
            return;
        };
        self.vnns[vnn].update_in_flight = false;
        let addr = self.vnns[vnn].addr;
        match pending.kind {
            OpKind::Take => {
                if result != 0 {
                    log::error!(
                        "Failed to takeover IP {addr} on interface {}",
                        self.vnns[vnn].iface.as_deref().unwrap_or(NO_IFACE)
                    );
                    finish(actions, result);
                    return;
                }
                if self.config.check_public_ips {
                    self.announce(now, vnn);
                }
                log::info!("sending TAKE_IP for '{addr}'");
                actions.push(Action::LocalMessage {
                    srvid: srvid::TAKE_IP,
                    data: ip_string(&addr),
                });
                finish(actions, 0);
            }
            OpKind::Update { old } => {
                if result != 0 {
                    log::error!(
                        "Failed update of IP {addr} from interface {} to {}",
                        old.as_deref().unwrap_or(NO_IFACE),
                        self.vnns[vnn].iface.as_deref().unwrap_or(NO_IFACE)
                    );
                    // Back to the old interface; the next takeover run sorts it out.
                    self.unassign_iface(vnn, node.pnn);
                    if let Some(old) = old {
                        if let Some(i) = self.find_iface(&old) {
                            self.ifaces[i].references += 1;
                        }
                        self.vnns[vnn].iface = Some(old);
                    }
                    finish(actions, result);
                    return;
                }
                finish(actions, 0);
            }
            OpKind::Release { target } => {
                if self.kernel_checks() && self.have_ip(&addr) {
                    log::error!("IP {addr} still hosted during release IP callback, failing");
                    finish(actions, -1);
                    return;
                }
                self.vnns[vnn].pnn = target;
                self.release_ip_post(node, vnn, actions);
                finish(actions, 0);
            }
            OpKind::ReleaseAll => {
                if self.have_ip(&addr) {
                    log::error!("IP address {addr} not released");
                    return;
                }
                self.release_ip_post(node, vnn, actions);
            }
        }
    }

    /// `ctdb_announce_vnn_iface`: gratuitous ARPs and tickle ACKs for every known connection,
    /// three rounds; the tickle list moves to the announcement and must be sent again.
    fn announce(&mut self, now: Instant, vnn: usize) {
        let v = &mut self.vnns[vnn];
        let tickles = v.tcp.take();
        if tickles.is_some() {
            v.tcp_update_needed = true;
        }
        v.announce = Some(Announce {
            due: now,
            count: 0,
            tickles,
        });
    }

    /// Mirrors `ctdb_control_get_public_ips`.
    fn get_public_ips(&self, node: &NodeView, flags: u32, data: &[u8]) -> Outcome {
        if !data.is_empty() {
            return Outcome::status(-1);
        }
        let only_available = flags & PUBLIC_IP_FLAGS_ONLY_AVAILABLE != 0;
        let ips = self
            .vnns
            .iter()
            .enumerate()
            .filter(|&(i, _)| !only_available || self.available(i, node))
            .map(|(_, v)| PublicIp {
                pnn: v.pnn,
                addr: v.addr,
            })
            .collect();
        Outcome::data(PublicIpList { ips }.to_bytes())
    }

    /// Mirrors `ctdb_control_get_public_ip_info`.
    fn get_public_ip_info(&self, data: &[u8]) -> Outcome {
        let Some(addr) = sock_addr_arg(data) else {
            return Outcome::status(-1);
        };
        let Some(vnn) = addr.as_ref().and_then(|a| self.find_vnn(a)) else {
            log::error!(
                "Could not get public ip info, '{}'not a public address",
                display_addr(addr.as_ref())
            );
            return Outcome::status(-1);
        };
        let v = &self.vnns[vnn];
        let mut active_idx = u32::MAX;
        let mut ifaces = Vec::with_capacity(v.ifaces.len());
        for (idx, name) in v.ifaces.iter().enumerate() {
            if v.iface.as_deref() == Some(name.as_str()) {
                active_idx = idx as u32;
            }
            ifaces.push(match self.find_iface(name) {
                Some(i) => wire_iface(&self.ifaces[i]),
                None => Iface {
                    name: name.clone(),
                    link_state: 0,
                    references: 0,
                },
            });
        }
        let info = PublicIpInfo {
            ip: PublicIp {
                pnn: v.pnn,
                addr: v.addr,
            },
            active_idx,
            ifaces,
        };
        Outcome::data(info.to_bytes())
    }

    /// Mirrors `ctdb_control_set_iface_link`: the `ctdb_iface` must be exactly 24 bytes with
    /// a terminated name, a 0/1 link state and zero references.
    fn set_iface_link_state(&mut self, data: &[u8]) -> Outcome {
        let Ok(raw) = <[u8; Iface::WIRE_LEN]>::try_from(data) else {
            return Outcome::status(-1);
        };
        if raw[CTDB_IFACE_SIZE] != 0 {
            log::error!("interface name not terminated");
            return Outcome::status(-1);
        }
        let name_end = raw[..CTDB_IFACE_SIZE]
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(CTDB_IFACE_SIZE);
        let name = String::from_utf8_lossy(&raw[..name_end]).into_owned();
        let link_state = u16::from_ne_bytes([raw[18], raw[19]]);
        let references = u32::from_ne_bytes([raw[20], raw[21], raw[22], raw[23]]);
        let link_up = match link_state {
            0 => false,
            1 => true,
            other => {
                log::error!("link_state[{other}] invalid");
                return Outcome::status(-1);
            }
        };
        if references != 0 {
            log::error!("references[{references}] should be 0");
            return Outcome::status(-1);
        }
        let Some(i) = self.find_iface(&name) else {
            return Outcome::status(-1);
        };
        if self.ifaces[i].link_up != link_up {
            log::error!(
                "iface[{name}] has changed it's link status {} => {}",
                up_down(self.ifaces[i].link_up),
                up_down(link_up)
            );
            self.ifaces[i].link_up = link_up;
        }
        Outcome::status(0)
    }

    /// Mirrors `ctdb_control_add_public_address`.
    fn add_public_ip_control(&mut self, data: &[u8]) -> Outcome {
        let Some((addr, mask, ifaces)) = addr_info_arg(data) else {
            return Outcome::status(-1);
        };
        log::info!("Add IP {}", display_addr(addr.as_ref()));
        let Some(addr) = addr else {
            log::error!("Failed to add public address");
            return Outcome::status(-1);
        };
        let names: Vec<String> = ifaces
            .split(',')
            .filter(|n| !n.is_empty())
            .map(str::to_string)
            .collect();
        match self.add_public_address(addr, mask, &names, true) {
            Ok(()) => Outcome::status(0),
            Err(e) => {
                log::error!("{e}");
                log::error!("Failed to add public address");
                Outcome::status(-1)
            }
        }
    }

    /// Mirrors `ctdb_control_del_public_address`: an address this node hosts is only marked
    /// and goes at its next release.
    fn del_public_ip_control(&mut self, node: &NodeView, data: &[u8]) -> Outcome {
        let Some((addr, _, _)) = addr_info_arg(data) else {
            return Outcome::status(-1);
        };
        log::info!("Delete IP {}", display_addr(addr.as_ref()));
        let Some(vnn) = addr.as_ref().and_then(|a| self.find_vnn(a)) else {
            log::error!(
                "Delete IP of unknown public IP address {}",
                display_addr(addr.as_ref())
            );
            return Outcome::status(-1);
        };
        if self.vnns[vnn].pnn == node.pnn {
            self.vnns[vnn].delete_pending = true;
        } else {
            self.delete_vnn(vnn, node.pnn);
        }
        Outcome::status(0)
    }

    /// Mirrors `ctdb_control_reload_public_ips` and its child: addresses gone from the file
    /// are deleted, new ones added (after asking the leader to rebalance onto this node).
    /// Stock answers 1 when anything failed.
    fn reload_public_ips(
        &mut self,
        node: &NodeView,
        data: &[u8],
        actions: &mut Vec<Action>,
    ) -> Outcome {
        if !data.is_empty() {
            return Outcome::status(-1);
        }
        let Some(path) = self.config.public_addresses_file.clone() else {
            log::error!("Failed to re-read public addresses file");
            return Outcome::status(1);
        };
        let file = match (self.config.read_public_addresses)(&path) {
            Ok(file) => file,
            Err(e) => {
                log::error!("Failed to re-read public addresses file: {e}");
                return Outcome::status(1);
            }
        };
        let mut ok = true;
        let current: Vec<SockAddr> = self.vnns.iter().map(|v| v.addr).collect();
        for addr in &current {
            if file.iter().any(|pa| same_ip(&pa.addr, addr)) {
                continue;
            }
            log::info!("IP {addr} no longer configured, deleting it");
            if let Some(vnn) = self.find_vnn(addr) {
                if self.vnns[vnn].pnn == node.pnn {
                    self.vnns[vnn].delete_pending = true;
                } else {
                    self.delete_vnn(vnn, node.pnn);
                }
            }
        }
        // The child walks its own freshly loaded list, which is in reverse file order.
        let mut first_add = true;
        for pa in file.iter().rev() {
            if current.iter().any(|a| same_ip(a, &pa.addr)) {
                continue;
            }
            log::info!("New IP {} configured, adding it", pa.addr);
            if first_add {
                actions.push(Action::BroadcastMessage {
                    srvid: srvid::REBALANCE_NODE,
                    data: node.pnn.to_ne_bytes().to_vec(),
                });
                first_add = false;
            }
            if let Err(e) = self.add_public_address(pa.addr, pa.mask_bits, &pa.ifaces, true) {
                log::error!("{e}");
                ok = false;
            }
        }
        if !ok {
            log::error!("Failed to reload ips on local node");
        }
        Outcome::status(if ok { 0 } else { 1 })
    }

    /// Mirrors `ctdb_control_send_gratious_arp`: three rounds, one second apart.
    fn send_gratuitous_arp(
        &mut self,
        now: Instant,
        data: &[u8],
        actions: &mut Vec<Action>,
    ) -> Outcome {
        let Some((Some(addr), _, iface)) = addr_info_arg(data) else {
            return Outcome::status(-1);
        };
        actions.push(Action::SendArp {
            addr,
            iface: iface.clone(),
        });
        self.arps.push(GratuitousArp {
            addr,
            iface,
            count: 1,
            due: now.saturating_add(GRATUITOUS_ARP_INTERVAL),
        });
        Outcome::status(0)
    }

    // ------------------------------------------------------------------------------------
    // Client connections and tickles

    /// Mirrors `ctdb_control_tcp_client`: smbd registers a client connection to a public
    /// address this node hosts; every connected node learns it with TCP_ADD.
    fn tcp_client(
        &mut self,
        node: &NodeView,
        client: Option<ClientId>,
        data: &[u8],
        actions: &mut Vec<Action>,
    ) -> Outcome {
        if data.len() != Connection::WIRE_LEN {
            return Outcome::status(-1);
        }
        if self.vnns.is_empty() {
            return Outcome::status(0);
        }
        let Ok(conn) = Connection::from_bytes_exact(data) else {
            log::error!("Unknown family in TCP_CLIENT");
            return Outcome::status(0);
        };
        let conn = Connection {
            src: canonical(conn.src),
            dst: canonical(conn.dst),
        };
        let Some(vnn) = self.find_vnn(&conn.dst) else {
            if conn.dst.ip() == IpAddr::V4(Ipv4Addr::LOCALHOST) {
                return Outcome::status(0);
            }
            log::error!(
                "Could not register TCP connection from {} to {} (not a public address) (port {})",
                conn.src,
                conn.dst,
                conn.dst.port()
            );
            return Outcome::status(0);
        };
        if self.vnns[vnn].pnn != node.pnn {
            log::error!(
                "Attempt to register tcp client for IP {} we don't hold - failing",
                conn.dst
            );
            return Outcome::status(-1);
        }
        let Some(client) = client else {
            return Outcome::status(-1);
        };
        self.client_tcp.entry(client).or_default().insert(0, conn);
        log::info!(
            "registered tcp client for {}->{}:{}",
            conn.dst.port(),
            conn.src,
            conn.src.port()
        );
        // TCP_ADD goes to every connected node, this one included.
        self.tcp_add(conn, false);
        actions.push(Action::BroadcastControl {
            destnode: crate::protocol::header::BROADCAST_CONNECTED,
            opcode: ControlOpcode::TcpAdd,
            data: conn.to_bytes(),
        });
        Outcome::status(0)
    }

    fn tcp_add_control(&mut self, data: &[u8], update_needed: bool) -> Outcome {
        if data.len() != Connection::WIRE_LEN {
            return Outcome::status(-1);
        }
        if self.vnns.is_empty() {
            return Outcome::status(0);
        }
        match Connection::from_bytes_exact(data) {
            Ok(conn) => Outcome::status(self.tcp_add(conn, update_needed)),
            Err(_) => Outcome::status(-1),
        }
    }

    /// Mirrors `ctdb_control_tcp_add`.
    fn tcp_add(&mut self, conn: Connection, update_needed: bool) -> i32 {
        let Some(vnn) = self.find_vnn(&conn.dst) else {
            log::info!(
                "got TCP_ADD control for an address which is not a public address '{}'",
                conn.dst
            );
            return -1;
        };
        let v = &mut self.vnns[vnn];
        let list = v.tcp.get_or_insert_with(Vec::new);
        if list.iter().any(|c| same_connection(c, &conn)) {
            return 0;
        }
        list.push(conn);
        if update_needed {
            v.tcp_update_needed = true;
        }
        0
    }

    /// Mirrors `ctdb_control_tcp_remove`.
    fn tcp_remove(&mut self, data: &[u8]) -> Outcome {
        if data.len() != Connection::WIRE_LEN {
            return Outcome::status(-1);
        }
        if self.vnns.is_empty() {
            return Outcome::status(0);
        }
        let Ok(conn) = Connection::from_bytes_exact(data) else {
            return Outcome::status(0);
        };
        match self.find_vnn(&conn.dst) {
            Some(vnn) => self.remove_connection(vnn, &conn),
            None => log::error!("unable to find public address {}", conn.dst),
        }
        Outcome::status(0)
    }

    /// `ctdb_remove_connection`: the last entry takes the removed one's place.
    fn remove_connection(&mut self, vnn: usize, conn: &Connection) {
        let v = &mut self.vnns[vnn];
        let Some(list) = v.tcp.as_mut() else {
            return;
        };
        let Some(pos) = list.iter().position(|c| same_connection(c, conn)) else {
            return;
        };
        list.swap_remove(pos);
        if list.is_empty() {
            v.tcp = None;
        }
        v.tcp_update_needed = true;
    }

    /// A local client went away (`ctdb_takeover_client_destructor_hook`): its connections to
    /// addresses this node still hosts are forgotten; the others moved with their address.
    pub fn client_closed(&mut self, node: &NodeView, client: ClientId) {
        let Some(conns) = self.client_tcp.remove(&client) else {
            return;
        };
        for conn in conns {
            let Some(vnn) = self.find_vnn(&conn.dst) else {
                log::error!("unable to find public address {}", conn.dst);
                continue;
            };
            if self.vnns[vnn].pnn == node.pnn {
                self.remove_connection(vnn, &conn);
            }
        }
    }

    /// Mirrors `ctdb_control_get_tcp_tickle_list`: port 0 means every port.
    fn get_tcp_tickle_list(&self, data: &[u8]) -> Outcome {
        let Some(addr) = sock_addr_arg(data) else {
            return Outcome::status(-1);
        };
        let Some(addr) = addr else {
            return Outcome::status(1);
        };
        let Some(vnn) = self.find_vnn(&addr) else {
            log::error!("Could not get tcp tickle list, '{addr}' is not a public address");
            return Outcome::status(1);
        };
        let port = addr.port();
        let connections = self.vnns[vnn]
            .tcp
            .iter()
            .flatten()
            .filter(|c| port == 0 || c.dst.port() == port)
            .copied()
            .collect();
        Outcome::data(TickleList { addr, connections }.to_bytes())
    }

    /// Mirrors `ctdb_control_set_tcp_tickle_list`: the hosting node's list replaces ours.
    fn set_tcp_tickle_list(&mut self, node: &NodeView, data: &[u8]) -> Outcome {
        const HEADER: usize = 28 + 4;
        let Some(num) = data
            .get(28..HEADER)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
        else {
            log::error!("Bad indata in ctdb_tickle_list. Not enough data for the tickle.num field");
            return Outcome::status(-1);
        };
        let num = u32::from_ne_bytes(num) as usize;
        let needed = num
            .checked_mul(Connection::WIRE_LEN)
            .and_then(|n| n.checked_add(HEADER));
        if needed.is_none_or(|n| data.len() < n) {
            log::error!("Bad indata in ctdb_tickle_list");
            return Outcome::status(-1);
        }
        let Ok(addr) = SockAddr::from_bytes_exact(&data[..28]) else {
            return Outcome::status(1);
        };
        let mut connections = Vec::with_capacity(num);
        for chunk in data[HEADER..].chunks_exact(Connection::WIRE_LEN).take(num) {
            match Connection::from_bytes_exact(chunk) {
                Ok(c) => connections.push(c),
                Err(_) => return Outcome::status(-1),
            }
        }
        let Some(vnn) = self.find_vnn(&addr) else {
            log::info!("Could not set tcp tickle list, '{addr}' is not a public address");
            return Outcome::status(1);
        };
        if self.vnns[vnn].pnn == node.pnn {
            log::info!("Ignoring redundant set tcp tickle list, this node hosts '{addr}'");
            return Outcome::status(0);
        }
        self.vnns[vnn].tcp = Some(connections);
        Outcome::status(0)
    }

    /// `ctdb_send_set_tcp_tickles_for_all`: the hosting node tells everybody its lists.
    fn send_tickles_for_all(&mut self, node: &NodeView, force: bool, actions: &mut Vec<Action>) {
        for v in &mut self.vnns {
            if v.pnn != node.pnn || (!force && !v.tcp_update_needed) {
                continue;
            }
            let list = TickleList {
                addr: v.addr,
                connections: v.tcp.clone().unwrap_or_default(),
            };
            actions.push(Action::BroadcastControl {
                destnode: crate::protocol::header::BROADCAST_ALL,
                opcode: ControlOpcode::SetTcpTickleList,
                data: list.to_bytes(),
            });
            v.tcp_update_needed = false;
        }
    }

    // ------------------------------------------------------------------------------------
    // Recovery mode and timers

    /// SET_RECMODE changed the recovery mode: entering ACTIVE (re)arms the deferred
    /// release of all addresses, leaving it disarms it (`ctdb_deferred_drop_all_ips`).
    pub fn recovery_mode_changed(&mut self, now: Instant, node: &NodeView, active: bool) {
        self.drop_all_due = active.then(|| now.saturating_add(secs(node.recovery_drop_all_ips)));
    }

    /// The earliest instant at which [`Takeover::handle_timeout`] has work.
    pub fn next_deadline(&self) -> Option<Instant> {
        let announces = self
            .vnns
            .iter()
            .filter_map(|v| v.announce.as_ref().map(|a| a.due));
        let arps = self.arps.iter().map(|a| a.due);
        [self.tickle_due, self.drop_all_due]
            .into_iter()
            .flatten()
            .chain(announces)
            .chain(arps)
            .min()
    }

    pub fn handle_timeout(&mut self, now: Instant, node: &NodeView, actions: &mut Vec<Action>) {
        if self.tickle_due.is_some_and(|due| now >= due) {
            self.send_tickles_for_all(node, false, actions);
            self.tickle_due = Some(now.saturating_add(secs(node.tickle_update_interval)));
        }
        if self.drop_all_due.is_some_and(|due| now >= due) {
            self.drop_all_due = None;
            log::error!("Been in recovery mode for too long. Dropping all IPS");
            self.release_all(node, actions);
        }
        for v in &mut self.vnns {
            let Some(a) = v.announce.as_mut() else {
                continue;
            };
            if now < a.due {
                continue;
            }
            // The address may have been released between rounds.
            let Some(iface) = v.iface.clone() else {
                log::info!("Cancelling ARP send for released IP {}", v.addr);
                v.announce = None;
                continue;
            };
            actions.push(Action::SendArp {
                addr: v.addr,
                iface,
            });
            for c in a.tickles.iter().flatten() {
                log::info!(
                    "Send TCP tickle ACK: {}:{} -> {}:{}",
                    c.src,
                    c.src.port(),
                    c.dst,
                    c.dst.port()
                );
                actions.push(Action::SendTickleAck {
                    src: c.dst,
                    dst: c.src,
                });
            }
            a.count += 1;
            if a.count >= ARP_REPEAT {
                v.announce = None;
            } else {
                a.due = now.saturating_add(ANNOUNCE_INTERVAL);
            }
        }
        self.arps.retain_mut(|a| {
            if now < a.due {
                return true;
            }
            actions.push(Action::SendArp {
                addr: a.addr,
                iface: a.iface.clone(),
            });
            a.count += 1;
            a.due = now.saturating_add(GRATUITOUS_ARP_INTERVAL);
            a.count < ARP_REPEAT
        });
    }
}

fn secs(s: u32) -> Duration {
    Duration::from_secs(u64::from(s))
}

fn up_down(up: bool) -> &'static str {
    if up {
        "up"
    } else {
        "down"
    }
}

fn op_event(kind: &OpKind) -> &'static str {
    match kind {
        OpKind::Take => "takeip",
        OpKind::Update { .. } => "updateip",
        OpKind::Release { .. } | OpKind::ReleaseAll => "releaseip",
    }
}

fn wire_iface(i: &Interface) -> Iface {
    Iface {
        name: i.name.clone(),
        link_state: u16::from(i.link_up),
        references: i.references,
    }
}

/// `ctdb_canonicalize_ip`: IPv4-mapped IPv6 addresses become IPv4.
fn canonical(addr: SockAddr) -> SockAddr {
    match addr.ip().to_canonical() {
        ip @ IpAddr::V4(_) if addr.ip().is_ipv6() => SockAddr::new(ip, addr.port()),
        _ => addr,
    }
}

/// `ctdb_same_ip`: the same address once canonicalised, ports ignored.
pub fn same_ip(a: &SockAddr, b: &SockAddr) -> bool {
    a.ip().to_canonical() == b.ip().to_canonical()
}

/// `ctdb_same_sockaddr` on both ends of a connection.
fn same_connection(a: &Connection, b: &Connection) -> bool {
    same_ip(&a.src, &b.src)
        && a.src.port() == b.src.port()
        && same_ip(&a.dst, &b.dst)
        && a.dst.port() == b.dst.port()
}

/// The payload of the RELEASE_IP and TAKE_IP messages: the address as text, NUL included.
fn ip_string(addr: &SockAddr) -> Vec<u8> {
    let mut s = addr.to_string().into_bytes();
    s.push(0);
    s
}

fn display_addr(addr: Option<&SockAddr>) -> String {
    addr.map_or_else(|| "(unknown family)".to_string(), SockAddr::to_string)
}

/// A `ctdb_public_ip` argument (exactly 32 bytes): the pnn, and the address unless its
/// family is one stock cannot compare (then no public address matches it).
fn public_ip_arg(data: &[u8]) -> Option<(Pnn, Option<SockAddr>)> {
    if data.len() != PublicIp::WIRE_LEN {
        return None;
    }
    let pnn = u32::from_ne_bytes(data.get(..4)?.try_into().ok()?);
    Some((pnn, SockAddr::from_bytes_exact(&data[4..]).ok()))
}

/// A bare `ctdb_sock_addr` argument (exactly 28 bytes).
fn sock_addr_arg(data: &[u8]) -> Option<Option<SockAddr>> {
    if data.len() != 28 {
        return None;
    }
    Some(SockAddr::from_bytes_exact(data).ok())
}

/// A `ctdb_addr_info` argument: address, mask, interface text. Stock insists that the data
/// is exactly the 36-byte head plus `len`, and reads the name as a C string.
fn addr_info_arg(data: &[u8]) -> Option<(Option<SockAddr>, u32, String)> {
    const HEAD: usize = 36;
    if data.len() < HEAD {
        log::error!("Too small indata to hold a ctdb_addr_info structure");
        return None;
    }
    let len = u32::from_ne_bytes(data[32..36].try_into().ok()?) as usize;
    if Some(data.len()) != HEAD.checked_add(len) {
        log::error!(
            "Wrong size of indata. Was {} bytes but should be {} bytes",
            data.len(),
            HEAD.saturating_add(len)
        );
        return None;
    }
    let mask = u32::from_ne_bytes(data[28..32].try_into().ok()?);
    let name = &data[HEAD..];
    let name = name.split(|&b| b == 0).next().unwrap_or(name);
    Some((
        SockAddr::from_bytes_exact(&data[..28]).ok(),
        mask,
        String::from_utf8_lossy(name).into_owned(),
    ))
}

#[cfg(test)]
mod tests;
