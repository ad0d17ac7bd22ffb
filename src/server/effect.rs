//! The boundary between the daemon's sans-IO core and the shell that runs it.
//!
//! The core ([`super::daemon::Daemon`]) never touches a socket, a clock, a process or a file:
//! the shell feeds it inputs (method calls carrying `now`) and executes the [`Effect`]s it
//! queues. Frames cross the boundary as complete byte vectors, already framed and padded.

use crate::common::clock::Instant;
use crate::protocol::SockAddr;

/// A connected local client of the unix socket, numbered by the shell. Never reused while the
/// daemon runs, so a late effect for a closed client is harmless.
pub type ClientId = u64;

/// A node number (position in the nodes file).
pub type Pnn = u32;

/// Work for the shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Queue a frame on a local client's connection.
    SendClient { client: ClientId, frame: Vec<u8> },
    /// Close a local client's connection (protocol violation, queue overflow, INACTIVE kill).
    CloseClient { client: ClientId },
    /// Queue a frame on the outgoing connection to a node. Dropped silently by the shell when
    /// that connection is not up, as stock does.
    SendNode { pnn: Pnn, frame: Vec<u8> },
    /// Tear down both connections to a node and start reconnecting (keepalive timeout).
    ResetNode { pnn: Pnn },
    /// Start listening on the node address and connecting to the other nodes (after `init`).
    StartTransport,
    /// Ask the event daemon to run an event of the `legacy` component.
    RunEvent {
        id: u64,
        event: String,
        args: Vec<String>,
        timeout_s: u32,
    },
    /// Test the cluster lock from another process (the mutex helper with a 5 s timeout) and
    /// report the helper's answer with `Daemon::on_cluster_lock_test`.
    TestClusterLock { token: u64, lock: String },
    /// Start the recovery daemon (a client of this daemon); its exit is reported with
    /// `Daemon::on_recoverd_exited`.
    StartRecoverd,
    /// Stop the recovery daemon (SIGTERM), as when it stopped answering.
    StopRecoverd,
    /// Start a repack helper for a database; its exit is reported with
    /// `Daemon::on_repack_done`.
    Repack(crate::server::database::repack::RepackRequest),
    /// Kill the repack helper (SIGKILL, as stock kills its vacuum child when a freeze starts);
    /// its exit is reported as usual.
    StopRepack,
    /// Change the process's log level (SET_DEBUG); Samba numeric level.
    SetLogLevel { level: i32 },
    /// Announce a public address on an interface: a gratuitous ARP (IPv4) or an unsolicited
    /// neighbour advertisement (IPv6). Failures are only logged.
    SendArp { addr: SockAddr, iface: String },
    /// Send a tickle ACK from the public address `src` to the client `dst`, so that the
    /// client notices a moved address at once. Failures are only logged.
    SendTickleAck { src: SockAddr, dst: SockAddr },
    /// The shutdown sequence is complete: stop children, remove socket and pid file, exit.
    Exit { code: i32 },
}

/// What the shell tells the core about the outcome of a [`Effect::RunEvent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventOutcome {
    pub id: u64,
    /// 0 on success, else a positive errno as ctdb-eventd reports it (ETIMEDOUT, ENOEXEC,
    /// ECANCELED, ...); a failure to talk to eventd at all is reported as EIO.
    pub result: i32,
}

/// A deadline the core wants to be woken at; the shell calls `handle_timeout` at or after it.
pub type Deadline = Instant;
