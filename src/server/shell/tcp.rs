//! The node-to-node TCP transport (mirrors `tcp/tcp_init.c`, `tcp/tcp_connect.c`, `tcp/tcp_io.c`).
//!
//! Every pair of nodes uses two connections: each node's *outgoing* connection (bound to its own
//! node address, write-only) is the peer's *incoming* one (read-only). A peer is identified only
//! by the source address of its incoming connection. A node counts as connected when both
//! directions are up. This module owns the sockets and the connect/retry state; the shell turns
//! what it reports into calls on the core.

use super::frames::{self, FrameError, FrameReader};
use super::queue::{
    read_frames_bounded, update_write_interest, QueueFull, QueueLimits, ReadMode, ReadOutcome,
    WriteQueue, READ_SCRATCH_BYTES,
};
use crate::common::clock::Instant;
use crate::server::effect::Pnn;
use log::{debug, error, trace, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};
use nix::sys::socket::{
    self, setsockopt, sockopt, AddressFamily, SockFlag, SockProtocol, SockType, SockaddrStorage,
};
use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Duration;

/// How long an outgoing connect may take before it is abandoned and restarted.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause after a failed connect before the next attempt.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(1);
/// Backlog of the node listener, as stock.
const LISTEN_BACKLOG: i32 = 10;

/// Token layout: the high bits say which table, the low 32 bits the PNN.
pub const IN_TOKEN_BASE: usize = 1 << 32;
pub const OUT_TOKEN_BASE: usize = 2 << 32;
const TOKEN_KIND_MASK: usize = !0xffff_ffff;

pub fn in_token(pnn: Pnn) -> Token {
    Token(IN_TOKEN_BASE | pnn as usize)
}

pub fn out_token(pnn: Pnn) -> Token {
    Token(OUT_TOKEN_BASE | pnn as usize)
}

/// Which node link a token names, if any.
pub fn classify(token: Token) -> Option<(LinkDir, Pnn)> {
    let pnn = u32::try_from(token.0 & 0xffff_ffff).ok()?;
    match token.0 & TOKEN_KIND_MASK {
        IN_TOKEN_BASE => Some((LinkDir::Incoming, pnn)),
        OUT_TOKEN_BASE => Some((LinkDir::Outgoing, pnn)),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkDir {
    Incoming,
    Outgoing,
}

/// Limits applied to node links.
#[derive(Debug, Clone, Copy)]
pub struct TransportLimits {
    pub max_frame: u32,
    pub queue: QueueLimits,
    pub read_budget: usize,
}

/// Binds the node listener on `ip:port` (SO_REUSEADDR) and listens, as `ctdb_tcp_listen` does.
/// Connections wait in the backlog until [`Transport::start`] registers the listener.
pub fn listen(ip: IpAddr, port: u16) -> io::Result<std::net::TcpListener> {
    let addr = SocketAddr::new(ip, port);
    let fd = new_socket(ip)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(io::Error::from)?;
    socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(addr)).map_err(io::Error::from)?;
    socket::listen(
        &fd,
        socket::Backlog::new(LISTEN_BACKLOG).map_err(io::Error::from)?,
    )
    .map_err(io::Error::from)?;
    Ok(std::net::TcpListener::from(fd))
}

fn new_socket(ip: IpAddr) -> io::Result<OwnedFd> {
    let family = if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    socket::socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        SockProtocol::Tcp,
    )
    .map_err(io::Error::from)
}

fn set_keepalive(sock: &impl AsFd) {
    if let Err(e) = setsockopt(sock, sockopt::KeepAlive, &true) {
        warn!("Failed to set KEEPALIVE on fd - {e}");
    }
}

#[derive(Debug)]
struct InLink {
    /// Unique over the daemon's life, so the shell can tell a replaced link from the one it
    /// was reading.
    id: u64,
    stream: TcpStream,
    reader: FrameReader,
    /// When the oldest byte of an incomplete frame arrived.
    partial_since: Option<Instant>,
}

#[derive(Debug)]
enum OutState {
    /// Waiting to (re)connect at `retry_at`.
    Idle { retry_at: Instant },
    Connecting {
        stream: TcpStream,
        deadline: Instant,
    },
    Up {
        stream: TcpStream,
        queue: WriteQueue,
        /// Registered for writability: only while the queue holds bytes the socket refused.
        /// Kept off otherwise, or every ACK from the peer would wake the loop for nothing.
        write_interest: bool,
    },
}

#[derive(Debug)]
struct Peer {
    addr: SocketAddr,
    incoming: Option<InLink>,
    outgoing: OutState,
}

impl Peer {
    fn outgoing_up(&self) -> bool {
        matches!(self.outgoing, OutState::Up { .. })
    }
}

/// What happened on a node link, for the shell to pass on to the core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// Nothing the core needs to know.
    Quiet,
    /// Both directions are now up.
    Connected,
    /// The link failed: the node is dead (the shell tears both directions down).
    Dead(String),
}

/// The state of every other node's pair of connections.
#[derive(Debug)]
pub struct Transport {
    my_pnn: Pnn,
    my_ip: IpAddr,
    listener: TcpListener,
    started: bool,
    /// Indexed by PNN; `None` for ourselves and for deleted nodes.
    peers: Vec<Option<Peer>>,
    next_link_id: u64,
    limits: TransportLimits,
    /// Accepting fails for lack of resources: logged once, not on every retry.
    accept_failing: bool,
    /// The read buffer every incoming-link read uses.
    /// For switching an outgoing link's write interest on and off as its queue fills and
    /// drains (set by [`Transport::start`]).
    registry: Option<Registry>,
}

/// Token of the node listener (chosen by the shell).
pub const LISTENER_TOKEN: Token = Token(3);

impl Transport {
    /// `nodes` is the nodes file (index = PNN); `listener` is already listening on our node
    /// address.
    pub fn new(
        my_pnn: Pnn,
        nodes: &[Option<IpAddr>],
        port: u16,
        listener: std::net::TcpListener,
        limits: TransportLimits,
    ) -> io::Result<Transport> {
        listener.set_nonblocking(true)?;
        let my_ip = listener.local_addr()?.ip().to_canonical();
        let peers = nodes
            .iter()
            .enumerate()
            .map(|(index, addr)| {
                let ip = (*addr)?;
                if u32::try_from(index).ok()? == my_pnn {
                    return None;
                }
                Some(Peer {
                    addr: SocketAddr::new(ip, port),
                    incoming: None,
                    outgoing: OutState::Idle {
                        retry_at: Instant::ZERO,
                    },
                })
            })
            .collect();
        Ok(Transport {
            my_pnn,
            my_ip,
            listener: TcpListener::from_std(listener),
            started: false,
            peers,
            next_link_id: 1,
            limits,
            accept_failing: false,
            registry: None,
        })
    }

    pub fn my_pnn(&self) -> Pnn {
        self.my_pnn
    }

    pub fn is_started(&self) -> bool {
        self.started
    }

    /// `StartTransport`: accept incoming connections and connect to every other node now.
    pub fn start(&mut self, registry: &Registry, now: Instant) -> io::Result<()> {
        if self.started {
            return Ok(());
        }
        registry.register(&mut self.listener, LISTENER_TOKEN, Interest::READABLE)?;
        self.registry = Some(registry.try_clone()?);
        self.started = true;
        for peer in self.peers.iter_mut().flatten() {
            peer.outgoing = OutState::Idle { retry_at: now };
        }
        Ok(())
    }

    /// Bytes queued on the outgoing link to `pnn` and not yet written (0 when it is down).
    pub fn pending_bytes(&self, pnn: Pnn) -> usize {
        let peer = usize::try_from(pnn)
            .ok()
            .and_then(|i| self.peers.get(i))
            .and_then(Option::as_ref);
        match peer.map(|p| &p.outgoing) {
            Some(OutState::Up { queue, .. }) => queue.pending_bytes(),
            _ => 0,
        }
    }

    fn peer_mut(&mut self, pnn: Pnn) -> Option<&mut Peer> {
        peer_in(&mut self.peers, pnn)
    }

    fn pnn_of(&self, ip: IpAddr) -> Option<Pnn> {
        let ip = ip.to_canonical();
        let index = self
            .peers
            .iter()
            .position(|p| p.as_ref().is_some_and(|p| p.addr.ip() == ip))?;
        u32::try_from(index).ok()
    }

    /// Accepts every pending incoming connection. Returns the nodes that became connected and
    /// whether accepting must be retried later (resource exhaustion).
    pub fn accept(&mut self, registry: &Registry) -> (Vec<Pnn>, bool) {
        let mut connected = Vec::new();
        loop {
            let (mut stream, addr) = match self.listener.accept() {
                Ok(pair) => pair,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.accept_failing = false;
                    return (connected, false);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(e) => {
                    if !self.accept_failing {
                        error!("Failed to accept node connection: {e}");
                        self.accept_failing = true;
                    }
                    return (connected, true);
                }
            };
            self.accept_failing = false;
            let Some(pnn) = self.pnn_of(addr.ip()) else {
                error!("Refused connection from unknown node {}", addr.ip());
                continue;
            };
            let id = self.next_link_id;
            let limits = self.limits;
            let Some(peer) = peer_in(&mut self.peers, pnn) else {
                continue;
            };
            if peer.incoming.is_some() {
                error!(
                    "Incoming queue active, rejecting connection from {}",
                    addr.ip()
                );
                continue;
            }
            set_keepalive(&stream);
            if let Err(e) = registry.register(&mut stream, in_token(pnn), Interest::READABLE) {
                error!("Failed to register connection from {}: {e}", addr.ip());
                continue;
            }
            debug!("Accepted connection from node {pnn} ({})", addr.ip());
            peer.incoming = Some(InLink {
                id,
                stream,
                reader: FrameReader::new(limits.max_frame),
                partial_since: None,
            });
            self.next_link_id += 1;
            if peer.outgoing_up() {
                connected.push(pnn);
            }
        }
    }

    /// The id of `pnn`'s current incoming link.
    pub fn incoming_id(&self, pnn: Pnn) -> Option<u64> {
        Some(
            self.peers
                .get(pnn as usize)?
                .as_ref()?
                .incoming
                .as_ref()?
                .id,
        )
    }

    /// Reads what the incoming link from `pnn` has (bounded). Frames are taken with
    /// [`Transport::next_incoming_frame`].
    pub fn read_incoming(
        &mut self,
        pnn: Pnn,
        now: Instant,
        mode: ReadMode,
    ) -> Result<ReadOutcome, String> {
        let budget = self.limits.read_budget;
        let Some(link) = self.peer_mut(pnn).and_then(|p| p.incoming.as_mut()) else {
            return Ok(ReadOutcome::Drained);
        };
        let outcome = read_frames_bounded(
            &mut link.stream,
            budget,
            mode,
            READ_SCRATCH_BYTES,
            &mut link.reader,
        )
        .map_err(|e| format!("read error: {e}"))?;
        if link.reader.buffered() == 0 {
            link.partial_since = None;
        } else if link.partial_since.is_none() {
            link.partial_since = Some(now);
        }
        Ok(outcome)
    }

    /// The next complete, checked frame from `pnn`'s incoming link. A framing or header fault
    /// is returned as `Err` and means the node is dead.
    pub fn next_incoming_frame(&mut self, pnn: Pnn) -> Result<Option<Vec<u8>>, String> {
        let Some(link) = self.peer_mut(pnn).and_then(|p| p.incoming.as_mut()) else {
            return Ok(None);
        };
        let frame = match link.reader.next_frame() {
            Ok(Some(frame)) => frame,
            Ok(None) => return Ok(None),
            Err(FrameError::TooShort { length }) => {
                return Err(format!("Bad packet length {length}"));
            }
            Err(e) => return Err(e.to_string()),
        };
        if link.reader.buffered() == 0 {
            link.partial_since = None;
        }
        frames::check_node_header(&frame).map_err(|fault| fault.to_string())?;
        Ok(Some(frame))
    }

    /// Readiness on `pnn`'s outgoing socket.
    pub fn outgoing_ready(
        &mut self,
        pnn: Pnn,
        registry: &Registry,
        now: Instant,
        readable: bool,
        writable: bool,
    ) -> LinkEvent {
        let queue_limits = self.limits.queue;
        let Some(peer) = peer_in(&mut self.peers, pnn) else {
            return LinkEvent::Quiet;
        };
        match &mut peer.outgoing {
            OutState::Idle { .. } => LinkEvent::Quiet,
            OutState::Connecting { stream, .. } => match connect_result(stream) {
                ConnectProgress::Pending => LinkEvent::Quiet,
                ConnectProgress::Failed(e) => {
                    trace!("Connect to node {pnn} failed: {e}");
                    Self::stop_outgoing(peer, registry);
                    peer.outgoing = OutState::Idle {
                        retry_at: now.saturating_add(RETRY_INTERVAL),
                    };
                    LinkEvent::Quiet
                }
                ConnectProgress::Done => {
                    let OutState::Connecting { stream, .. } =
                        std::mem::replace(&mut peer.outgoing, OutState::Idle { retry_at: now })
                    else {
                        return LinkEvent::Quiet;
                    };
                    if let Err(e) = stream.set_nodelay(true) {
                        warn!("Failed to set TCP_NODELAY on fd - {e}");
                    }
                    set_keepalive(&stream);
                    let mut stream = stream;
                    // Connected: from now on only a refused write needs writability events.
                    let write_interest = match registry.reregister(
                        &mut stream,
                        out_token(pnn),
                        Interest::READABLE,
                    ) {
                        Ok(()) => false,
                        Err(e) => {
                            warn!("Failed to update interest of node {pnn} link: {e}");
                            true
                        }
                    };
                    debug!("Outgoing connection to node {pnn} is up");
                    peer.outgoing = OutState::Up {
                        stream,
                        queue: WriteQueue::new(queue_limits),
                        write_interest,
                    };
                    if peer.incoming.is_some() {
                        LinkEvent::Connected
                    } else {
                        LinkEvent::Quiet
                    }
                }
            },
            OutState::Up {
                stream,
                queue,
                write_interest,
            } => {
                if readable {
                    // The peer never writes on this connection: data or EOF means it is gone.
                    let mut probe = [0u8; 64];
                    match stream.read(&mut probe) {
                        Ok(0) => return LinkEvent::Dead("outgoing connection closed".into()),
                        Ok(_) => {
                            return LinkEvent::Dead("data on outgoing connection".into());
                        }
                        Err(e)
                            if e.kind() == io::ErrorKind::WouldBlock
                                || e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return LinkEvent::Dead(format!("outgoing connection: {e}")),
                    }
                }
                if writable {
                    if let Err(e) = queue.flush(stream) {
                        return LinkEvent::Dead(format!("write error: {e}"));
                    }
                }
                if let Err(e) =
                    update_write_interest(registry, stream, out_token(pnn), queue, write_interest)
                {
                    return LinkEvent::Dead(format!("outgoing connection: {e}"));
                }
                LinkEvent::Quiet
            }
        }
    }

    /// `SendNode`: queues a frame on the outgoing link; silently dropped when it is not up.
    /// A write error or a full queue is returned: the node is then dead.
    pub fn send(&mut self, pnn: Pnn, frame: Vec<u8>) -> Result<(), String> {
        let Some(peer) = peer_in(&mut self.peers, pnn) else {
            return Ok(());
        };
        let OutState::Up {
            stream,
            queue,
            write_interest,
        } = &mut peer.outgoing
        else {
            trace!("No outgoing connection to node {pnn}, dropping packet");
            return Ok(());
        };
        queue.push(frame).map_err(|QueueFull { bytes, frames }| {
            format!("output queue full ({bytes} bytes in {frames} frames)")
        })?;
        queue
            .flush(stream)
            .map_err(|e| format!("write error: {e}"))?;
        match &self.registry {
            Some(registry) => {
                update_write_interest(registry, stream, out_token(pnn), queue, write_interest)
                    .map_err(|e| format!("registering for writability: {e}"))
            }
            None => Ok(()),
        }
    }

    /// Tears down both directions and schedules a reconnect at `now` (`ctdb_tcp_restart`).
    /// Returns whether any connection existed.
    pub fn restart(&mut self, pnn: Pnn, registry: &Registry, now: Instant) -> bool {
        let started = self.started;
        let Some(peer) = self.peer_mut(pnn) else {
            return false;
        };
        let had_any = peer.incoming.is_some() || !matches!(peer.outgoing, OutState::Idle { .. });
        if let Some(mut link) = peer.incoming.take() {
            let _ = registry.deregister(&mut link.stream);
        }
        Self::stop_outgoing(peer, registry);
        if started {
            peer.outgoing = OutState::Idle { retry_at: now };
        }
        had_any
    }

    fn stop_outgoing(peer: &mut Peer, registry: &Registry) {
        let old = std::mem::replace(
            &mut peer.outgoing,
            OutState::Idle {
                retry_at: Instant::ZERO,
            },
        );
        match old {
            OutState::Connecting { mut stream, .. } | OutState::Up { mut stream, .. } => {
                let _ = registry.deregister(&mut stream);
            }
            OutState::Idle { retry_at } => peer.outgoing = OutState::Idle { retry_at },
        }
    }

    /// Connect attempts and timeouts that are due.
    pub fn handle_timers(&mut self, registry: &Registry, now: Instant) {
        if !self.started {
            return;
        }
        let my_ip = self.my_ip;
        for (index, slot) in self.peers.iter_mut().enumerate() {
            let Some(peer) = slot else { continue };
            let Ok(pnn) = u32::try_from(index) else {
                continue;
            };
            let due = match &peer.outgoing {
                OutState::Idle { retry_at } => *retry_at <= now,
                OutState::Connecting { deadline, .. } => {
                    if *deadline <= now {
                        trace!("Connect to node {pnn} timed out, restarting");
                        true
                    } else {
                        false
                    }
                }
                OutState::Up { .. } => false,
            };
            if due {
                Self::stop_outgoing(peer, registry);
                peer.outgoing = start_outgoing(my_ip, peer.addr, pnn, registry, now);
            }
        }
    }

    /// Incoming links holding an incomplete frame since before `cutoff`.
    pub fn stalled_incoming(&self, cutoff: Instant) -> Vec<Pnn> {
        self.peers
            .iter()
            .enumerate()
            .filter_map(|(index, slot)| {
                let since = slot.as_ref()?.incoming.as_ref()?.partial_since?;
                if since < cutoff {
                    u32::try_from(index).ok()
                } else {
                    None
                }
            })
            .collect()
    }

    /// The earliest connect or retry deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        if !self.started {
            return None;
        }
        self.peers
            .iter()
            .flatten()
            .filter_map(|peer| match &peer.outgoing {
                OutState::Idle { retry_at } => Some(*retry_at),
                OutState::Connecting { deadline, .. } => Some(*deadline),
                OutState::Up { .. } => None,
            })
            .min()
    }

    /// Closes every connection and the listener (`ctdb_tcp_shutdown`).
    pub fn shutdown(&mut self, registry: &Registry) {
        for peer in self.peers.iter_mut().flatten() {
            if let Some(mut link) = peer.incoming.take() {
                let _ = registry.deregister(&mut link.stream);
            }
            Self::stop_outgoing(peer, registry);
        }
        if self.started {
            let _ = registry.deregister(&mut self.listener);
        }
        self.started = false;
    }
}

fn peer_in(peers: &mut [Option<Peer>], pnn: Pnn) -> Option<&mut Peer> {
    peers.get_mut(pnn as usize)?.as_mut()
}

enum ConnectProgress {
    Pending,
    Done,
    Failed(io::Error),
}

fn connect_result(stream: &TcpStream) -> ConnectProgress {
    match stream.take_error() {
        Ok(Some(e)) | Err(e) => return ConnectProgress::Failed(e),
        Ok(None) => {}
    }
    match stream.peer_addr() {
        Ok(_) => ConnectProgress::Done,
        Err(e) if e.kind() == io::ErrorKind::NotConnected => ConnectProgress::Pending,
        Err(e) => ConnectProgress::Failed(e),
    }
}

/// `ctdb_tcp_start_outgoing`: a non-blocking connect from our node address (port 0), so the
/// peer recognises us by the source address.
fn start_outgoing(
    my_ip: IpAddr,
    peer: SocketAddr,
    pnn: Pnn,
    registry: &Registry,
    now: Instant,
) -> OutState {
    let attempt = || -> io::Result<TcpStream> {
        let fd = new_socket(my_ip)?;
        socket::bind(
            fd.as_raw_fd(),
            &SockaddrStorage::from(SocketAddr::new(my_ip, 0)),
        )
        .map_err(io::Error::from)?;
        match socket::connect(fd.as_raw_fd(), &SockaddrStorage::from(peer)) {
            Ok(()) | Err(nix::errno::Errno::EINPROGRESS) => {}
            Err(e) => return Err(e.into()),
        }
        let mut stream = TcpStream::from_std(std::net::TcpStream::from(fd));
        registry.register(
            &mut stream,
            out_token(pnn),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        Ok(stream)
    };
    match attempt() {
        Ok(stream) => OutState::Connecting {
            stream,
            deadline: now.saturating_add(CONNECT_TIMEOUT),
        },
        Err(e) => {
            trace!("Failed to start connection to node {pnn} ({peer}): {e}");
            OutState::Idle {
                retry_at: now.saturating_add(RETRY_INTERVAL),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        assert_eq!(classify(in_token(7)), Some((LinkDir::Incoming, 7)));
        assert_eq!(
            classify(out_token(u32::MAX)),
            Some((LinkDir::Outgoing, u32::MAX))
        );
        assert_eq!(classify(Token(5)), None);
        assert_eq!(classify(Token(3 << 32)), None);
    }
}
