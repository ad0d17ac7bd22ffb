//! Local clients on the unix socket (mirrors `server/ctdb_daemon.c`: `ctdb_accept_client`,
//! `ctdb_daemon_read_cb`).
//!
//! Framing is stock's: any length of at least a header is accepted (smbd does not pad), frames
//! with a bad magic or version are dropped and the client stays, a length of 0 or above the
//! limit closes the client. Unlike stock, a client of another user is refused even if the
//! socket's permissions were loosened, and a client whose replies pile up beyond the output
//! queue limit is disconnected.

use super::frames::{self, FrameError, FrameReader};
use super::queue::{
    read_frames_bounded, update_write_interest, QueueLimits, ReadMode, ReadOutcome, WriteQueue,
    READ_SCRATCH_BYTES,
};
use crate::common::clock::Instant;
use crate::common::sys;
use crate::server::effect::ClientId;
use log::{error, info, trace, warn};
use mio::net::{UnixListener, UnixStream};
use mio::{Interest, Registry, Token};
use std::collections::HashMap;
use std::io;

/// Token of the unix listener (chosen by the shell).
pub const LISTENER_TOKEN: Token = Token(0);
/// Client tokens are this plus the client id.
pub const CLIENT_TOKEN_BASE: usize = 1 << 40;

pub fn client_token(id: ClientId) -> Token {
    Token(CLIENT_TOKEN_BASE.saturating_add(usize::try_from(id).unwrap_or(usize::MAX)))
}

pub fn client_of(token: Token) -> Option<ClientId> {
    let id = token.0.checked_sub(CLIENT_TOKEN_BASE)?;
    ClientId::try_from(id).ok()
}

#[derive(Debug, Clone, Copy)]
pub struct ClientLimits {
    pub max_frame: u32,
    pub queue: QueueLimits,
    pub read_budget: usize,
}

#[derive(Debug)]
struct Client {
    stream: UnixStream,
    reader: FrameReader,
    queue: WriteQueue,
    pid: i32,
    partial_since: Option<Instant>,
    /// Registered for writability: only while the queue holds bytes the socket refused, or
    /// every read of a reply by the client would wake the loop for nothing.
    write_interest: bool,
}

/// What the next frame of a client is.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientFrame {
    /// Nothing complete yet.
    None,
    Frame(Vec<u8>),
    /// The stream is broken; close the client.
    Fatal(String),
}

#[derive(Debug)]
pub struct Clients {
    listener: UnixListener,
    conns: HashMap<ClientId, Client>,
    next_id: ClientId,
    euid: u32,
    limits: ClientLimits,
    /// Accepting fails for lack of resources (EMFILE...): logged once, not on every retry.
    accept_failing: bool,
    /// For switching a client's write interest on and off (set by [`Clients::register`]).
    registry: Option<Registry>,
}

impl Clients {
    pub fn new(listener: std::os::unix::net::UnixListener, limits: ClientLimits) -> Self {
        Clients {
            listener: UnixListener::from_std(listener),
            conns: HashMap::new(),
            next_id: 1,
            euid: nix::unistd::geteuid().as_raw(),
            limits,
            accept_failing: false,
            registry: None,
        }
    }

    pub fn register(&mut self, registry: &Registry) -> io::Result<()> {
        registry.register(&mut self.listener, LISTENER_TOKEN, Interest::READABLE)?;
        self.registry = Some(registry.try_clone()?);
        Ok(())
    }

    pub fn exists(&self, id: ClientId) -> bool {
        self.conns.contains_key(&id)
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    pub fn pid(&self, id: ClientId) -> Option<i32> {
        self.conns.get(&id).map(|c| c.pid)
    }

    /// Accepts every pending client. Returns the new clients with their pids, and whether
    /// accepting must be retried later (resource exhaustion such as EMFILE).
    pub fn accept(&mut self, registry: &Registry) -> (Vec<(ClientId, i32)>, bool) {
        let mut accepted = Vec::new();
        loop {
            let (mut stream, _) = match self.listener.accept() {
                Ok(pair) => pair,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.accept_failing = false;
                    return (accepted, false);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(e) => {
                    if !self.accept_failing {
                        error!("Failed to accept client connection: {e}");
                        self.accept_failing = true;
                    }
                    return (accepted, true);
                }
            };
            self.accept_failing = false;
            let cred = match sys::peer_cred(&stream) {
                Ok(cred) => cred,
                Err(e) => {
                    error!("Refusing client: {e}");
                    continue;
                }
            };
            if cred.uid != self.euid && cred.uid != 0 {
                error!(
                    "Refusing client with pid {} of uid {} (not uid {})",
                    cred.pid, cred.uid, self.euid
                );
                continue;
            }
            let id = self.next_id;
            if let Err(e) = registry.register(&mut stream, client_token(id), Interest::READABLE) {
                error!("Failed to register client: {e}");
                continue;
            }
            self.next_id += 1;
            info!("Connected client with pid:{}", cred.pid);
            self.conns.insert(
                id,
                Client {
                    stream,
                    reader: FrameReader::new(self.limits.max_frame),
                    queue: WriteQueue::new(self.limits.queue),
                    pid: cred.pid,
                    partial_since: None,
                    write_interest: false,
                },
            );
            accepted.push((id, cred.pid));
        }
    }

    /// Reads what the client has sent (bounded); frames are taken with
    /// [`Clients::next_frame`].
    pub fn read(
        &mut self,
        id: ClientId,
        now: Instant,
        mode: ReadMode,
    ) -> Result<ReadOutcome, String> {
        let budget = self.limits.read_budget;
        let Some(client) = self.conns.get_mut(&id) else {
            return Ok(ReadOutcome::Drained);
        };
        let outcome = read_frames_bounded(
            &mut client.stream,
            budget,
            mode,
            READ_SCRATCH_BYTES,
            &mut client.reader,
        )
        .map_err(|e| format!("read error: {e}"))?;
        if client.reader.buffered() == 0 {
            client.partial_since = None;
        } else if client.partial_since.is_none() {
            client.partial_since = Some(now);
        }
        Ok(outcome)
    }

    /// The next complete frame that passes stock's checks; bad ones are logged and skipped.
    pub fn next_frame(&mut self, id: ClientId) -> ClientFrame {
        let Some(client) = self.conns.get_mut(&id) else {
            return ClientFrame::None;
        };
        loop {
            match client.reader.next_frame() {
                Ok(None) => return ClientFrame::None,
                Ok(Some(frame)) => {
                    if client.reader.buffered() == 0 {
                        client.partial_since = None;
                    }
                    match frames::check_client_header(&frame) {
                        Ok(()) => return ClientFrame::Frame(frame),
                        Err(fault) => {
                            warn!("Client pid {}: {fault}; packet dropped", client.pid);
                        }
                    }
                }
                Err(FrameError::TooShort { length }) => {
                    warn!(
                        "Client pid {}: bad packet length {length} in daemon; packet dropped",
                        client.pid
                    );
                }
                Err(e) => return ClientFrame::Fatal(e.to_string()),
            }
        }
    }

    /// Flushes the output queue after the socket became writable.
    pub fn flush(&mut self, id: ClientId) -> Result<(), String> {
        let Some(client) = self.conns.get_mut(&id) else {
            return Ok(());
        };
        client
            .queue
            .flush(&mut client.stream)
            .map_err(|e| format!("write error: {e}"))?;
        Self::update_interest(self.registry.as_ref(), id, client)
    }

    fn update_interest(
        registry: Option<&Registry>,
        id: ClientId,
        client: &mut Client,
    ) -> Result<(), String> {
        let Some(registry) = registry else {
            return Ok(());
        };
        update_write_interest(
            registry,
            &mut client.stream,
            client_token(id),
            &client.queue,
            &mut client.write_interest,
        )
        .map_err(|e| format!("registering for writability: {e}"))
    }

    /// Bytes queued for the client and not yet written (0 for an unknown client).
    pub fn pending_bytes(&self, id: ClientId) -> usize {
        self.conns.get(&id).map_or(0, |c| c.queue.pending_bytes())
    }

    /// Queues a frame for the client; unknown (closed) clients are ignored. An error means the
    /// client must be closed.
    pub fn send(&mut self, id: ClientId, frame: Vec<u8>) -> Result<(), String> {
        let Some(client) = self.conns.get_mut(&id) else {
            trace!("Dropping packet for closed client {id}");
            return Ok(());
        };
        client.queue.push(frame).map_err(|full| full.to_string())?;
        client
            .queue
            .flush(&mut client.stream)
            .map_err(|e| format!("write error: {e}"))?;
        Self::update_interest(self.registry.as_ref(), id, client)
    }

    /// Closes a client; false if it was already gone.
    pub fn close(&mut self, id: ClientId, registry: &Registry) -> bool {
        match self.conns.remove(&id) {
            Some(mut client) => {
                let _ = registry.deregister(&mut client.stream);
                true
            }
            None => false,
        }
    }

    /// Clients holding an incomplete frame since before `cutoff`.
    pub fn stalled(&self, cutoff: Instant) -> Vec<ClientId> {
        let mut ids: Vec<ClientId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.partial_since.is_some_and(|t| t < cutoff))
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Every client id, in order.
    pub fn ids(&self) -> Vec<ClientId> {
        let mut ids: Vec<ClientId> = self.conns.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Stops accepting and drops every client.
    pub fn shutdown(&mut self, registry: &Registry) {
        for (_, mut client) in self.conns.drain() {
            let _ = registry.deregister(&mut client.stream);
        }
        let _ = registry.deregister(&mut self.listener);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_tokens_round_trip_and_never_collide_with_fixed_ones() {
        for id in [1u64, 2, 1 << 20, 1 << 40] {
            assert_eq!(client_of(client_token(id)), Some(id));
        }
        assert_eq!(client_of(Token(5)), None);
        assert_eq!(client_of(Token(2 << 32)), None);
    }
}
