//! Running ctdb-eventd and talking to it (mirrors `server/eventscript.c`: `ctdb_start_eventd`,
//! `eventd_client_*`, `ctdb_stop_eventd`).
//!
//! ctdbd starts `ctdb-eventd -P <ctdbd pid> -S <fd>`, where `<fd>` is the write end of a pipe.
//! eventd writes an `unsigned int` 0 there once it listens on `rundir/eventd.socket`, and keeps
//! the pipe open for the rest of its life, so EOF on our end means eventd has died (and ctdbd
//! exits). Requests go over the socket as `RUN` packets for the `legacy` component.

use super::queue::{read_bounded, QueueLimits, ReadMode, ReadOutcome, WriteQueue};
use crate::common::clock::MonotonicClock;
use crate::common::spawn::{self, Child, Spawn};
use crate::protocol::event::{EventPacket, EventReply, EventRequest, FrameBuffer, RunRequest};
use crate::protocol::Marshal;
use crate::server::effect::EventOutcome;
use log::{debug, error, info, trace, warn};
use mio::net::UnixStream;
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long eventd may take to report that it is ready.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// The descriptor number eventd gets the write end of the startup pipe as.
const STARTUP_FD: i32 = 3;
/// The only component ctdbd uses.
const COMPONENT: &str = "legacy";

pub const PIPE_TOKEN: Token = Token(4);
pub const SOCKET_TOKEN: Token = Token(5);

/// Why eventd could not be started.
#[derive(Debug)]
pub struct EventdError(pub String);

impl std::fmt::Display for EventdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EventdError {}

#[derive(Debug)]
struct Connection {
    stream: UnixStream,
    frames: FrameBuffer,
    queue: WriteQueue,
}

/// The running event daemon and our client connection to it.
#[derive(Debug)]
pub struct Eventd {
    /// Cleared once eventd has been stopped or reaped.
    pid: Option<i32>,
    /// Signals go through its pidfd, so they can never hit a process that reused the pid.
    child: Child,
    /// Read end of the startup pipe; EOF = eventd is gone.
    pipe: OwnedFd,
    socket_path: PathBuf,
    conn: Option<Connection>,
    /// eventd request id → the core's `RunEvent` id.
    pending: HashMap<u32, u64>,
    next_reqid: u32,
    registered: bool,
}

const QUEUE_LIMITS: QueueLimits = QueueLimits {
    max_bytes: 16 << 20,
    max_frames: 10_000,
};

impl Eventd {
    /// Removes a stale eventd socket, starts `eventd`, and waits (at most
    /// [`STARTUP_TIMEOUT`]) for it to report that it is ready, then connects.
    pub fn start(eventd: &Path, socket_path: &Path, ctdbd_pid: u32) -> Result<Eventd, EventdError> {
        match std::fs::remove_file(socket_path) {
            Ok(()) => warn!("Removed stale socket {}", socket_path.display()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(EventdError(format!(
                    "Failed to remove stale socket {}: {e}",
                    socket_path.display()
                )))
            }
        }
        let (read_end, write_end) =
            spawn::pipe_cloexec().map_err(|e| EventdError(format!("pipe: {e}")))?;
        info!(
            "Starting event daemon {} -P {ctdbd_pid} -S {STARTUP_FD}",
            eventd.display()
        );
        let mut command = Spawn::new(eventd);
        command
            .args(&["-P", &ctdbd_pid.to_string(), "-S", &STARTUP_FD.to_string()])
            .map_fd(write_end.as_fd(), STARTUP_FD);
        let child = command
            .spawn_child()
            .map_err(|e| EventdError(format!("Failed to start {}: {e}", eventd.display())))?;
        // Only eventd holds the write end from here on, so EOF means eventd is gone.
        drop(write_end);
        let pid = child.pid();

        if let Err(e) = wait_for_startup(&read_end) {
            let _ = child.signal(libc::SIGKILL);
            return Err(EventdError(format!(
                "Failed to initialize event daemon ({e})"
            )));
        }
        // Only EOF is ever expected on the pipe from now on; never block on it.
        if let Err(e) = crate::common::sys::set_nonblocking(&read_end, true) {
            let _ = child.signal(libc::SIGKILL);
            return Err(EventdError(e.to_string()));
        }
        let mut eventd = Eventd {
            pid: Some(pid),
            child,
            pipe: read_end,
            socket_path: socket_path.to_path_buf(),
            conn: None,
            pending: HashMap::new(),
            next_reqid: 1,
            registered: false,
        };
        if let Err(e) = eventd.connect() {
            eventd.stop();
            return Err(EventdError(format!(
                "Failed to connect to event daemon: {e}"
            )));
        }
        Ok(eventd)
    }

    pub fn pid(&self) -> Option<i32> {
        self.pid
    }

    /// The child with this pid was reaped.
    pub fn reaped(&mut self, pid: i32) -> bool {
        if self.pid == Some(pid) {
            self.pid = None;
            return true;
        }
        false
    }

    /// Registers the death pipe and the socket with the loop.
    pub fn register(&mut self, registry: &Registry) -> io::Result<()> {
        registry.register(
            &mut SourceFd(&self.pipe.as_raw_fd()),
            PIPE_TOKEN,
            Interest::READABLE,
        )?;
        self.registered = true;
        if let Some(conn) = &mut self.conn {
            registry.register(
                &mut conn.stream,
                SOCKET_TOKEN,
                Interest::READABLE | Interest::WRITABLE,
            )?;
        }
        Ok(())
    }

    fn connect(&mut self) -> io::Result<()> {
        let std_stream = std::os::unix::net::UnixStream::connect(&self.socket_path)?;
        std_stream.set_nonblocking(true)?;
        self.conn = Some(Connection {
            stream: UnixStream::from_std(std_stream),
            frames: FrameBuffer::new(),
            queue: WriteQueue::new(QUEUE_LIMITS),
        });
        Ok(())
    }

    /// Whether the death pipe reports EOF (or an error): eventd has exited.
    pub fn pipe_closed(&self) -> bool {
        let mut byte = [0u8; 1];
        match nix::unistd::read(self.pipe.as_raw_fd(), &mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(Errno::EAGAIN | Errno::EINTR) => false,
            Err(_) => true,
        }
    }

    /// Sends a RUN request. An error means the request could not be sent; the caller reports
    /// it to the core as EIO.
    pub fn run(
        &mut self,
        registry: &Registry,
        id: u64,
        event: &str,
        args: &[String],
        timeout_s: u32,
    ) -> Result<(), String> {
        if self.conn.is_none() {
            // Like stock, a lost connection is re-established on the next request.
            self.connect()
                .map_err(|e| format!("cannot connect to eventd: {e}"))?;
            if self.registered {
                if let Some(conn) = &mut self.conn {
                    registry
                        .register(
                            &mut conn.stream,
                            SOCKET_TOKEN,
                            Interest::READABLE | Interest::WRITABLE,
                        )
                        .map_err(|e| format!("register eventd socket: {e}"))?;
                }
            }
        }
        let reqid = self.new_reqid();
        let packet = EventPacket {
            version: 0,
            reqid,
            body: EventRequest::Run(RunRequest {
                component: Some(COMPONENT.to_string()),
                event: Some(event.to_string()),
                args: if args.is_empty() {
                    None
                } else {
                    Some(args.join(" "))
                },
                timeout: timeout_s,
                flags: 0,
            }),
        };
        let Some(conn) = &mut self.conn else {
            return Err("no eventd connection".into());
        };
        conn.queue
            .push(packet.to_bytes())
            .map_err(|e| format!("eventd {e}"))?;
        conn.queue
            .flush(&mut conn.stream)
            .map_err(|e| format!("write to eventd: {e}"))?;
        self.pending.insert(reqid, id);
        trace!("Sent event {event} (reqid {reqid}) to eventd");
        Ok(())
    }

    fn new_reqid(&mut self) -> u32 {
        loop {
            let reqid = self.next_reqid;
            self.next_reqid = self.next_reqid.wrapping_add(1).max(1);
            if !self.pending.contains_key(&reqid) {
                return reqid;
            }
        }
    }

    /// Readiness on the socket: flushes queued requests and collects replies. A lost
    /// connection fails every pending request with EIO.
    pub fn socket_ready(
        &mut self,
        registry: &Registry,
        readable: bool,
        writable: bool,
    ) -> Vec<EventOutcome> {
        let mut outcomes = Vec::new();
        let Some(conn) = &mut self.conn else {
            return outcomes;
        };
        let mut lost = None;
        if writable {
            if let Err(e) = conn.queue.flush(&mut conn.stream) {
                lost = Some(format!("write error: {e}"));
            }
        }
        if readable && lost.is_none() {
            let frames = &mut conn.frames;
            let mut scratch = [0u8; 4096];
            let wait = ReadMode::UntilWouldBlock;
            match read_bounded(&mut conn.stream, usize::MAX, wait, &mut scratch, |b| {
                frames.extend(b)
            }) {
                Ok(ReadOutcome::Eof) => lost = Some("connection closed".into()),
                Ok(_) => {}
                Err(e) => lost = Some(format!("read error: {e}")),
            }
            loop {
                match conn.frames.next_frame() {
                    Ok(Some(frame)) => {
                        if let Some(outcome) = decode_reply(&frame, &mut self.pending) {
                            outcomes.push(outcome);
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        lost = Some(format!("bad frame from eventd: {e}"));
                        break;
                    }
                }
            }
        }
        if let Some(reason) = lost {
            error!("Lost connection to event daemon: {reason}");
            if let Some(mut conn) = self.conn.take() {
                let _ = registry.deregister(&mut conn.stream);
            }
            let mut failed: Vec<u64> = self.pending.drain().map(|(_, id)| id).collect();
            failed.sort_unstable();
            outcomes.extend(failed.into_iter().map(|id| EventOutcome {
                id,
                result: libc::EIO,
            }));
        }
        outcomes
    }

    /// SIGTERM to eventd (`ctdb_stop_eventd`); the connection and pipe are closed.
    pub fn stop(&mut self) {
        if self.pid.take().is_some() {
            let _ = self.child.signal(libc::SIGTERM);
        }
        self.conn = None;
    }
}

impl Drop for Eventd {
    /// An eventd must never outlive the ctdbd that started it, whatever path ends it.
    fn drop(&mut self) {
        self.stop();
    }
}

fn decode_reply(frame: &[u8], pending: &mut HashMap<u32, u64>) -> Option<EventOutcome> {
    let packet = match EventPacket::<EventReply>::pull(frame) {
        Ok((packet, _)) => packet,
        Err(e) => {
            error!("Invalid packet received from eventd: {e}");
            return None;
        }
    };
    let Some(id) = pending.remove(&packet.reqid) else {
        debug!("Reply from eventd for unknown reqid {}", packet.reqid);
        return None;
    };
    Some(EventOutcome {
        id,
        result: packet.body.result(),
    })
}

/// Waits for eventd's ready value on the pipe (`wait_for_daemon_startup`).
fn wait_for_startup(pipe: &OwnedFd) -> Result<(), String> {
    let clock = MonotonicClock::new();
    let start = clock.now();
    loop {
        let waited = clock.now().saturating_since(start);
        let Some(left) = STARTUP_TIMEOUT.checked_sub(waited) else {
            return Err("timed out".into());
        };
        let ms = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(pipe.as_fd(), PollFlags::POLLIN)];
        match nix::poll::poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) => continue,
            Ok(_) => break,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(format!("poll: {e}")),
        }
    }
    let mut value = [0u8; 4];
    let mut got = 0;
    while got < value.len() {
        let Some(rest) = value.get_mut(got..) else {
            break;
        };
        match nix::unistd::read(pipe.as_raw_fd(), rest) {
            Ok(0) => {
                return Err(if got == 0 {
                    "eventd exited before it was ready".into()
                } else {
                    "short ready value".into()
                })
            }
            Ok(n) => got += n,
            Err(Errno::EINTR) => {}
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    match u32::from_ne_bytes(value) {
        0 => Ok(()),
        other => Err(format!("eventd reported failure {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_map_back_to_run_ids_and_unknown_ones_are_dropped() {
        let mut pending = HashMap::new();
        pending.insert(9u32, 1234u64);
        let reply = EventPacket {
            version: 0,
            reqid: 9,
            body: EventReply::Run(libc::ETIMEDOUT),
        }
        .to_bytes();
        assert_eq!(
            decode_reply(&reply, &mut pending),
            Some(EventOutcome {
                id: 1234,
                result: libc::ETIMEDOUT
            })
        );
        assert_eq!(decode_reply(&reply, &mut pending), None);
        assert_eq!(decode_reply(&[1, 2, 3], &mut pending), None);
    }
}
