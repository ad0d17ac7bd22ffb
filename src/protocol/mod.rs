//! The CTDB 4.17 wire protocol: bytes to values and back, nothing else.
//!
//! Mirrors `ctdb/protocol/`. This module is pure: no I/O, no clock, no logging, no `libc`, and
//! no parser here panics on any input. Every inner length is checked against the enclosing frame
//! before it is used. Layouts are the raw x86_64 C structs stock CTDB memcpy's onto the wire.

pub mod basic;
pub mod control;
pub mod event;
pub mod hash;
pub mod header;
pub mod helper;
pub mod ltdb;
pub mod opcode;
pub mod packet;
pub mod sock_addr;
pub mod srvid;
pub mod types;

pub use basic::{Marshal, PullError, Reader, Timeval, Writer};
pub use control::{
    pull_reply_data, pull_request_data, push_reply_data, push_request_data, ControlReplyData,
    ControlRequestData,
};
pub use ltdb::LtdbHeader;
pub use sock_addr::SockAddr;
