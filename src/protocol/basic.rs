//! Primitive encodings (mirrors `ctdb/protocol/protocol_basic.c`).
//!
//! CTDB has no canonical byte order: every integer is the host's native representation and every
//! struct is the raw C layout of x86_64 Linux. [`Reader`] and [`Writer`] are the only places that
//! turn bytes into integers, so the endianness choice lives here and nowhere else.

use byteorder::{ByteOrder, NativeEndian};

#[cfg(not(all(target_endian = "little", target_pointer_width = "64")))]
compile_error!("ctdb-rs speaks CTDB's host-order wire format of 64-bit little-endian Linux only");

/// Why a pull failed. Small and `Copy` so that parsers can return it freely.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullError {
    /// The input ended before the value did.
    Short { need: usize, have: usize },
    /// The header magic was not `CTDB`.
    BadMagic(u32),
    /// The header protocol version was not 1.
    BadVersion(u32),
    /// A length field claims more than its enclosing frame holds, or is otherwise impossible.
    BadLength { what: &'static str, value: usize },
    /// A field holds a value that its type does not allow (a bool of 7, an unknown address
    /// family, a string without its NUL, ...).
    BadValue { what: &'static str, value: u64 },
}

impl PullError {
    /// The errno stock CTDB's parsers return for the same condition.
    pub fn to_errno(self) -> i32 {
        match self {
            PullError::Short { .. } | PullError::BadLength { .. } => libc_errno::EMSGSIZE,
            PullError::BadMagic(_) | PullError::BadVersion(_) => libc_errno::EPROTO,
            PullError::BadValue { .. } => libc_errno::EINVAL,
        }
    }
}

/// The three errno values the protocol layer needs, spelled out so that `protocol` stays free of
/// the `libc` crate (x86_64 Linux values).
mod libc_errno {
    pub(super) const EINVAL: i32 = 22;
    pub(super) const EMSGSIZE: i32 = 90;
    pub(super) const EPROTO: i32 = 71;
}

impl std::fmt::Display for PullError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PullError::Short { need, have } => {
                write!(f, "truncated input: need {need} bytes, have {have}")
            }
            PullError::BadMagic(m) => write!(f, "bad magic 0x{m:08x}"),
            PullError::BadVersion(v) => write!(f, "bad protocol version {v}"),
            PullError::BadLength { what, value } => write!(f, "bad length {value} for {what}"),
            PullError::BadValue { what, value } => write!(f, "bad value {value} for {what}"),
        }
    }
}

impl std::error::Error for PullError {}

/// A value with a CTDB wire form. Mirrors `ctdb_<type>_{len,push,pull}`.
pub trait Marshal: Sized {
    /// Exact number of bytes [`Marshal::push`] appends.
    fn wire_len(&self) -> usize;
    /// Appends exactly `wire_len()` bytes to `out`.
    fn push(&self, out: &mut Vec<u8>);
    /// Parses a value from the front of `buf`, returning it and the bytes consumed.
    /// Never panics, whatever the input.
    fn pull(buf: &[u8]) -> Result<(Self, usize), PullError>;

    /// Convenience: the value's wire form as a fresh vector.
    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.wire_len());
        self.push(&mut out);
        out
    }

    /// Convenience: parses `buf` and requires that the value used all of it.
    fn from_bytes_exact(buf: &[u8]) -> Result<Self, PullError> {
        let (value, used) = Self::pull(buf)?;
        if used != buf.len() {
            return Err(PullError::BadLength {
                what: "trailing bytes",
                value: buf.len() - used,
            });
        }
        Ok(value)
    }
}

/// Number of zero bytes C inserts after `len` bytes to reach 8-byte alignment.
pub const fn padding_len(len: usize) -> usize {
    (8 - len % 8) % 8
}

/// Bounds-checked cursor over input bytes. Every read either succeeds or returns
/// [`PullError::Short`]; nothing reads past the slice.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Bytes consumed so far.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Bytes left.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The unread tail, without consuming it.
    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], PullError> {
        if n > self.remaining() {
            return Err(PullError::Short {
                need: self.pos.saturating_add(n),
                have: self.buf.len(),
            });
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub fn skip(&mut self, n: usize) -> Result<(), PullError> {
        self.bytes(n).map(|_| ())
    }

    /// Skips the alignment hole C leaves after `len` bytes of a struct.
    pub fn skip_padding(&mut self, len: usize) -> Result<(), PullError> {
        self.skip(padding_len(len))
    }

    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], PullError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }

    pub fn u8(&mut self) -> Result<u8, PullError> {
        Ok(self.bytes(1)?[0])
    }
    pub fn u16(&mut self) -> Result<u16, PullError> {
        Ok(NativeEndian::read_u16(self.bytes(2)?))
    }
    pub fn u32(&mut self) -> Result<u32, PullError> {
        Ok(NativeEndian::read_u32(self.bytes(4)?))
    }
    pub fn i32(&mut self) -> Result<i32, PullError> {
        Ok(NativeEndian::read_i32(self.bytes(4)?))
    }
    pub fn u64(&mut self) -> Result<u64, PullError> {
        Ok(NativeEndian::read_u64(self.bytes(8)?))
    }
    pub fn i64(&mut self) -> Result<i64, PullError> {
        Ok(NativeEndian::read_i64(self.bytes(8)?))
    }
    pub fn f64(&mut self) -> Result<f64, PullError> {
        Ok(NativeEndian::read_f64(self.bytes(8)?))
    }

    /// A C `bool`: only 0 and 1 are accepted, as in `ctdb_bool_pull`.
    pub fn bool(&mut self) -> Result<bool, PullError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(PullError::BadValue {
                what: "bool",
                value: u64::from(v),
            }),
        }
    }

    /// A length-prefixed blob (`ctdb_tdb_datan`): u32 length then bytes, no padding.
    pub fn datan(&mut self) -> Result<Vec<u8>, PullError> {
        let len = self.u32()? as usize;
        Ok(self.bytes(len)?.to_vec())
    }

    /// A 32-bit length read as `usize`, checked against what is left so that a huge value can
    /// never drive an allocation.
    pub fn len_u32(&mut self, what: &'static str) -> Result<usize, PullError> {
        let len = self.u32()? as usize;
        if len > self.remaining() {
            return Err(PullError::BadLength { what, value: len });
        }
        Ok(len)
    }

    /// A count of fixed-size items, checked against the bytes left (`min_item` bytes each).
    pub fn count_u32(&mut self, what: &'static str, min_item: usize) -> Result<usize, PullError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_item) > self.remaining() {
            return Err(PullError::BadLength { what, value: n });
        }
        Ok(n)
    }
}

/// Append-only writer helpers for `Vec<u8>`, in host order.
pub trait Writer {
    fn put_u8(&mut self, v: u8);
    fn put_u16(&mut self, v: u16);
    fn put_u32(&mut self, v: u32);
    fn put_i32(&mut self, v: i32);
    fn put_u64(&mut self, v: u64);
    fn put_i64(&mut self, v: i64);
    fn put_f64(&mut self, v: f64);
    fn put_bool(&mut self, v: bool);
    fn put_bytes(&mut self, v: &[u8]);
    fn put_zeros(&mut self, n: usize);
    /// Zero padding C inserts after `len` bytes to reach 8-byte alignment.
    fn put_padding(&mut self, len: usize);
    /// u32 length then the bytes (`ctdb_tdb_datan`).
    fn put_datan(&mut self, v: &[u8]);
    /// A length that must fit in 32 bits; sizes beyond that cannot be represented on the wire
    /// and the callers' frame limits keep them far below it.
    fn put_len(&mut self, len: usize);
}

impl Writer for Vec<u8> {
    fn put_u8(&mut self, v: u8) {
        self.push(v);
    }
    fn put_u16(&mut self, v: u16) {
        self.extend_from_slice(&v.to_ne_bytes());
    }
    fn put_u32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_ne_bytes());
    }
    fn put_i32(&mut self, v: i32) {
        self.extend_from_slice(&v.to_ne_bytes());
    }
    fn put_u64(&mut self, v: u64) {
        self.extend_from_slice(&v.to_ne_bytes());
    }
    fn put_i64(&mut self, v: i64) {
        self.extend_from_slice(&v.to_ne_bytes());
    }
    fn put_f64(&mut self, v: f64) {
        self.extend_from_slice(&v.to_ne_bytes());
    }
    fn put_bool(&mut self, v: bool) {
        self.push(u8::from(v));
    }
    fn put_bytes(&mut self, v: &[u8]) {
        self.extend_from_slice(v);
    }
    fn put_zeros(&mut self, n: usize) {
        self.resize(self.len() + n, 0);
    }
    fn put_padding(&mut self, len: usize) {
        self.put_zeros(padding_len(len));
    }
    fn put_datan(&mut self, v: &[u8]) {
        self.put_len(v.len());
        self.put_bytes(v);
    }
    fn put_len(&mut self, len: usize) {
        assert!(
            u32::try_from(len).is_ok(),
            "wire length {len} does not fit in u32"
        );
        self.put_u32(len as u32);
    }
}

/// `struct timeval` as x86_64 lays it out: two i64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, PartialOrd, Ord)]
pub struct Timeval {
    pub tv_sec: i64,
    pub tv_usec: i64,
}

impl Marshal for Timeval {
    fn wire_len(&self) -> usize {
        16
    }
    fn push(&self, out: &mut Vec<u8>) {
        out.put_i64(self.tv_sec);
        out.put_i64(self.tv_usec);
    }
    fn pull(buf: &[u8]) -> Result<(Self, usize), PullError> {
        let mut r = Reader::new(buf);
        Ok((
            Timeval {
                tv_sec: r.i64()?,
                tv_usec: r.i64()?,
            },
            r.pos(),
        ))
    }
}

/// Generates `Marshal` for plain integers so that generic containers can hold them.
macro_rules! marshal_int {
    ($t:ty, $get:ident, $put:ident) => {
        impl Marshal for $t {
            fn wire_len(&self) -> usize {
                std::mem::size_of::<$t>()
            }
            fn push(&self, out: &mut Vec<u8>) {
                out.$put(*self);
            }
            fn pull(buf: &[u8]) -> Result<(Self, usize), PullError> {
                let mut r = Reader::new(buf);
                Ok((r.$get()?, r.pos()))
            }
        }
    };
}
marshal_int!(u32, u32, put_u32);
marshal_int!(i32, i32, put_i32);
marshal_int!(u64, u64, put_u64);
marshal_int!(f64, f64, put_f64);

/// A NUL-terminated string whose length comes from the enclosing frame (`ctdb_string`).
/// `pull` takes everything up to and including the first NUL.
pub fn pull_cstring(buf: &[u8]) -> Result<(String, usize), PullError> {
    let Some(nul) = buf.iter().position(|&b| b == 0) else {
        return Err(PullError::BadValue {
            what: "string without NUL",
            value: buf.len() as u64,
        });
    };
    Ok((String::from_utf8_lossy(&buf[..nul]).into_owned(), nul + 1))
}

/// Appends `s` and its NUL.
pub fn push_cstring(out: &mut Vec<u8>, s: &str) {
    out.put_bytes(s.as_bytes());
    out.put_u8(0);
}

/// `ctdb_stringn`: u32 length including the NUL, then the bytes; `None` is length 0.
pub fn pull_stringn(r: &mut Reader<'_>) -> Result<Option<String>, PullError> {
    let len = r.len_u32("stringn")?;
    if len == 0 {
        return Ok(None);
    }
    let bytes = r.bytes(len)?;
    match bytes.split_last() {
        Some((0, body)) => Ok(Some(String::from_utf8_lossy(body).into_owned())),
        _ => Err(PullError::BadValue {
            what: "stringn without NUL",
            value: len as u64,
        }),
    }
}

pub fn push_stringn(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => out.put_u32(0),
        Some(s) => {
            out.put_len(s.len() + 1);
            push_cstring(out, s);
        }
    }
}

pub fn stringn_len(s: Option<&str>) -> usize {
    4 + s.map_or(0, |s| s.len() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_never_reads_past_the_end() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.u32(), Err(PullError::Short { need: 4, have: 3 }));
        assert_eq!(r.u16(), Ok(u16::from_ne_bytes([1, 2])));
        assert!(r.u16().is_err());
        assert_eq!(r.u8(), Ok(3));
        assert!(r.bytes(usize::MAX).is_err());
    }

    #[test]
    fn padding_matches_c_alignment() {
        assert_eq!(padding_len(0), 0);
        assert_eq!(padding_len(4), 4);
        assert_eq!(padding_len(5), 3);
        assert_eq!(padding_len(60), 4);
        assert_eq!(padding_len(64), 0);
    }

    #[test]
    fn stringn_round_trip_and_null() {
        for s in [None, Some(""), Some("legacy")] {
            let mut out = Vec::new();
            push_stringn(&mut out, s);
            assert_eq!(out.len(), stringn_len(s));
            let mut r = Reader::new(&out);
            assert_eq!(pull_stringn(&mut r).unwrap().as_deref(), s);
            assert_eq!(r.remaining(), 0);
        }
        let mut r = Reader::new(&[2, 0, 0, 0, b'a', b'b']);
        assert!(pull_stringn(&mut r).is_err());
    }

    #[test]
    fn bool_rejects_other_values() {
        assert!(Reader::new(&[2]).bool().is_err());
    }
}
