//! A safe wrapper around the system libtdb, the library behind every CTDB database (what
//! `lib/tdb_wrap/tdb_wrap.c`, `common/ctdb_ltdb.c` and `server/ctdb_ltdb_server.c` use).
//!
//! The files must be real TDB files: smbd, the stock lock helper, `ltdbtool` and `tdbtool` open
//! them directly and lock them with fcntl byte-range locks (or robust mutexes when
//! `TDB_MUTEX_LOCKING` is in use). So this module never touches the format itself; it only calls
//! libtdb.
//!
//! Conventions:
//! * Keys and values go in as byte slices and come out as owned `Vec`s (libtdb's `malloc`ed
//!   buffers are freed here), except in [`Tdb::parse_record`], which borrows libtdb's buffer
//!   for the duration of a closure.
//! * Every failure is a [`TdbError`] carrying the libtdb function name, the database name and
//!   `tdb_error()`/`tdb_errorstr()`.
//! * Callbacks (traverse, parse) are Rust closures reached through `extern "C"` trampolines; a
//!   panic inside one is caught before it reaches C, the C call is told to stop, and the panic
//!   is resumed once libtdb has returned.
//! * A [`Tdb`] is neither `Send` nor `Sync`: ctdbd is single-threaded, and robust-mutex chain
//!   locks belong to the thread that took them.
//! * Opening adds `O_CLOEXEC`, as `tdb_wrap_open` does: a TDB descriptor is meaningless after
//!   `execve` and must not leak into event scripts.
//!
//! Logging: libtdb reports problems through a printf-style *variadic* callback, which stable
//! Rust can neither define nor read a `va_list` in. `build.rs` therefore compiles a ten-line C
//! shim that formats the message with `vsnprintf` and passes the text to
//! `ctdb_rs_tdb_log_sink` below, which logs it with the `log` crate as `tdb(<name>): <text>`
//! at the level `tdb_wrap_log` would use. If the shim could not be built the databases are
//! opened without a log hook and libtdb's messages are discarded (errors are still reported
//! through [`TdbError`]).

use std::any::Any;
use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::fmt;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::path::Path;
use std::ptr::{self, NonNull};

mod ffi {
    use std::ffi::{c_char, c_int, c_uint, c_void};

    /// Opaque `struct tdb_context`.
    #[repr(C)]
    pub struct TdbContext {
        _private: [u8; 0],
    }

    /// `TDB_DATA`: a pointer and a length, passed and returned by value.
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct TdbData {
        pub dptr: *mut u8,
        pub dsize: usize,
    }

    /// `struct tdb_logging_context`. The real `log_fn` is variadic; the only function ever
    /// stored here is the C shim, so the pointer is kept opaque on the Rust side.
    #[repr(C)]
    pub struct TdbLoggingContext {
        pub log_fn: *const c_void,
        pub log_private: *mut c_void,
    }

    pub type TraverseFn =
        unsafe extern "C" fn(*mut TdbContext, TdbData, TdbData, *mut c_void) -> c_int;
    pub type ParseFn = unsafe extern "C" fn(TdbData, TdbData, *mut c_void) -> c_int;
    pub type CheckFn = unsafe extern "C" fn(TdbData, TdbData, *mut c_void) -> c_int;

    extern "C" {
        pub fn tdb_open_ex(
            name: *const c_char,
            hash_size: c_int,
            tdb_flags: c_int,
            open_flags: c_int,
            mode: libc::mode_t,
            log_ctx: *const TdbLoggingContext,
            hash_fn: *const c_void,
        ) -> *mut TdbContext;
        pub fn tdb_close(tdb: *mut TdbContext) -> c_int;
        pub fn tdb_error(tdb: *mut TdbContext) -> c_uint;
        pub fn tdb_errorstr(tdb: *mut TdbContext) -> *const c_char;

        pub fn tdb_fetch(tdb: *mut TdbContext, key: TdbData) -> TdbData;
        pub fn tdb_parse_record(
            tdb: *mut TdbContext,
            key: TdbData,
            parser: Option<ParseFn>,
            private_data: *mut c_void,
        ) -> c_int;
        pub fn tdb_store(tdb: *mut TdbContext, key: TdbData, dbuf: TdbData, flag: c_int) -> c_int;
        pub fn tdb_storev(
            tdb: *mut TdbContext,
            key: TdbData,
            dbufs: *const TdbData,
            num_dbufs: c_int,
            flag: c_int,
        ) -> c_int;
        pub fn tdb_delete(tdb: *mut TdbContext, key: TdbData) -> c_int;
        pub fn tdb_exists(tdb: *mut TdbContext, key: TdbData) -> c_int;
        pub fn tdb_traverse(
            tdb: *mut TdbContext,
            f: Option<TraverseFn>,
            private_data: *mut c_void,
        ) -> c_int;
        pub fn tdb_traverse_read(
            tdb: *mut TdbContext,
            f: Option<TraverseFn>,
            private_data: *mut c_void,
        ) -> c_int;
        pub fn tdb_traverse_chain(
            tdb: *mut TdbContext,
            chain: c_uint,
            f: Option<TraverseFn>,
            private_data: *mut c_void,
        ) -> c_int;

        pub fn tdb_chainlock(tdb: *mut TdbContext, key: TdbData) -> c_int;
        pub fn tdb_chainlock_nonblock(tdb: *mut TdbContext, key: TdbData) -> c_int;
        pub fn tdb_chainunlock(tdb: *mut TdbContext, key: TdbData) -> c_int;
        pub fn tdb_chainlock_read(tdb: *mut TdbContext, key: TdbData) -> c_int;
        pub fn tdb_chainlock_read_nonblock(tdb: *mut TdbContext, key: TdbData) -> c_int;
        pub fn tdb_chainunlock_read(tdb: *mut TdbContext, key: TdbData) -> c_int;
        pub fn tdb_chainlock_mark(tdb: *mut TdbContext, key: TdbData) -> c_int;
        pub fn tdb_chainlock_unmark(tdb: *mut TdbContext, key: TdbData) -> c_int;

        pub fn tdb_lockall(tdb: *mut TdbContext) -> c_int;
        pub fn tdb_lockall_nonblock(tdb: *mut TdbContext) -> c_int;
        pub fn tdb_unlockall(tdb: *mut TdbContext) -> c_int;
        pub fn tdb_lockall_read(tdb: *mut TdbContext) -> c_int;
        pub fn tdb_lockall_read_nonblock(tdb: *mut TdbContext) -> c_int;
        pub fn tdb_unlockall_read(tdb: *mut TdbContext) -> c_int;
        pub fn tdb_lockall_mark(tdb: *mut TdbContext) -> c_int;
        pub fn tdb_lockall_unmark(tdb: *mut TdbContext) -> c_int;
        // Exported by libtdb but not declared in tdb.h; CTDB declares them locally too
        // (server/ctdb_lock.c, server/ctdb_recover.c).
        pub fn tdb_transaction_write_lock_mark(tdb: *mut TdbContext) -> c_int;
        pub fn tdb_transaction_write_lock_unmark(tdb: *mut TdbContext) -> c_int;
        pub fn tdb_lock_nonblock(tdb: *mut TdbContext, list: c_int, ltype: c_int) -> c_int;
        pub fn tdb_unlock(tdb: *mut TdbContext, list: c_int, ltype: c_int) -> c_int;

        pub fn tdb_transaction_start(tdb: *mut TdbContext) -> c_int;
        pub fn tdb_transaction_start_nonblock(tdb: *mut TdbContext) -> c_int;
        pub fn tdb_transaction_prepare_commit(tdb: *mut TdbContext) -> c_int;
        pub fn tdb_transaction_commit(tdb: *mut TdbContext) -> c_int;
        pub fn tdb_transaction_cancel(tdb: *mut TdbContext) -> c_int;
        pub fn tdb_transaction_active(tdb: *mut TdbContext) -> bool;

        pub fn tdb_wipe_all(tdb: *mut TdbContext) -> c_int;
        pub fn tdb_repack(tdb: *mut TdbContext) -> c_int;
        pub fn tdb_check(
            tdb: *mut TdbContext,
            check: Option<CheckFn>,
            private: *mut c_void,
        ) -> c_int;
        pub fn tdb_get_seqnum(tdb: *mut TdbContext) -> c_int;
        pub fn tdb_enable_seqnum(tdb: *mut TdbContext);
        pub fn tdb_increment_seqnum_nonblock(tdb: *mut TdbContext);
        pub fn tdb_hash_size(tdb: *mut TdbContext) -> c_int;
        pub fn tdb_map_size(tdb: *mut TdbContext) -> usize;
        pub fn tdb_fd(tdb: *mut TdbContext) -> c_int;
        pub fn tdb_get_flags(tdb: *mut TdbContext) -> c_int;
        pub fn tdb_add_flags(tdb: *mut TdbContext, flag: c_uint);
        pub fn tdb_remove_flags(tdb: *mut TdbContext, flag: c_uint);
        pub fn tdb_set_max_dead(tdb: *mut TdbContext, max_dead: c_int);
        pub fn tdb_freelist_size(tdb: *mut TdbContext) -> c_int;
        pub fn tdb_summary(tdb: *mut TdbContext) -> *mut c_char;

        pub fn tdb_jenkins_hash(key: *mut TdbData) -> c_uint;
        pub fn tdb_runtime_check_for_robust_mutexes() -> bool;
    }

    #[cfg(ctdb_tdb_log_shim)]
    extern "C" {
        /// The C shim built by build.rs (really variadic: `(tdb, level, format, ...)`). Only
        /// its address is taken.
        pub fn ctdb_rs_tdb_log();
    }
}

use ffi::{TdbContext, TdbData};

/// `tdb_flags` bits accepted by `tdb_open` (the values of tdb.h; also what CTDB reports in
/// `DB_OPEN_FLAGS` and passes to the lock helper).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TdbFlags(u32);

impl TdbFlags {
    pub const DEFAULT: Self = Self(0);
    /// Wipe the database if no other process has it open.
    pub const CLEAR_IF_FIRST: Self = Self(1);
    /// Memory only, no file.
    pub const INTERNAL: Self = Self(2);
    /// No locking at all (also toggled at run time around recovery transactions).
    pub const NOLOCK: Self = Self(4);
    pub const NOMMAP: Self = Self(8);
    /// Set by libtdb for byte-swapped files.
    pub const CONVERT: Self = Self(16);
    pub const BIGENDIAN: Self = Self(32);
    /// Transactions without fsync.
    pub const NOSYNC: Self = Self(64);
    /// Maintain a sequence number bumped by every change.
    pub const SEQNUM: Self = Self(128);
    pub const VOLATILE: Self = Self(256);
    pub const ALLOW_NESTING: Self = Self(512);
    pub const DISALLOW_NESTING: Self = Self(1024);
    /// Jenkins hash for new files (what every CTDB volatile database uses).
    pub const INCOMPATIBLE_HASH: Self = Self(2048);
    /// Robust-mutex chain locks; needs `CLEAR_IF_FIRST` and [`robust_mutexes_supported`].
    pub const MUTEX_LOCKING: Self = Self(4096);

    const NAMES: [(Self, &'static str); 14] = [
        (Self::CLEAR_IF_FIRST, "CLEAR_IF_FIRST"),
        (Self::INTERNAL, "INTERNAL"),
        (Self::NOLOCK, "NOLOCK"),
        (Self::NOMMAP, "NOMMAP"),
        (Self::CONVERT, "CONVERT"),
        (Self::BIGENDIAN, "BIGENDIAN"),
        (Self::NOSYNC, "NOSYNC"),
        (Self::SEQNUM, "SEQNUM"),
        (Self::VOLATILE, "VOLATILE"),
        (Self::ALLOW_NESTING, "ALLOW_NESTING"),
        (Self::DISALLOW_NESTING, "DISALLOW_NESTING"),
        (Self::INCOMPATIBLE_HASH, "INCOMPATIBLE_HASH"),
        (Self::MUTEX_LOCKING, "MUTEX_LOCKING"),
        (Self::DEFAULT, ""),
    ];

    /// Keeps every bit, known or not (flags travel on the wire as a plain u32).
    pub const fn from_bits(bits: u32) -> Self {
        Self(bits)
    }

    pub const fn bits(self) -> u32 {
        self.0
    }

    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    pub const fn intersects(self, other: Self) -> bool {
        self.0 & other.0 != 0
    }

    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    pub const fn without(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl std::ops::BitOr for TdbFlags {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        self.union(rhs)
    }
}

impl std::ops::BitOrAssign for TdbFlags {
    fn bitor_assign(&mut self, rhs: Self) {
        self.0 |= rhs.0;
    }
}

impl std::ops::BitAnd for TdbFlags {
    type Output = Self;
    fn bitand(self, rhs: Self) -> Self {
        Self(self.0 & rhs.0)
    }
}

impl fmt::Debug for TdbFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TdbFlags({:#x}", self.0)?;
        let mut rest = self.0;
        let mut separator = ": ";
        for (flag, name) in Self::NAMES {
            if !flag.is_empty() && self.contains(flag) {
                write!(f, "{separator}{name}")?;
                separator = "|";
                rest &= !flag.0;
            }
        }
        if rest != 0 {
            write!(f, "{separator}{rest:#x}")?;
        }
        f.write_str(")")
    }
}

/// How `tdb_store` treats an existing (or missing) record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreMode {
    /// `TDB_REPLACE`: create or overwrite.
    Replace,
    /// `TDB_INSERT`: fail with [`TdbErrorCode::Exists`] if the key exists.
    Insert,
    /// `TDB_MODIFY`: fail with [`TdbErrorCode::NoExist`] if the key is missing.
    Modify,
}

impl StoreMode {
    fn to_c(self) -> c_int {
        match self {
            Self::Replace => 1,
            Self::Insert => 2,
            Self::Modify => 3,
        }
    }
}

/// What a traverse closure wants next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Traverse {
    Continue,
    Stop,
}

/// `enum TDB_ERROR`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TdbErrorCode {
    Success,
    Corrupt,
    Io,
    Lock,
    Oom,
    Exists,
    NoLock,
    LockTimeout,
    NoExist,
    Einval,
    RdOnly,
    Nesting,
    Unknown(u32),
}

impl From<u32> for TdbErrorCode {
    fn from(code: u32) -> Self {
        match code {
            0 => Self::Success,
            1 => Self::Corrupt,
            2 => Self::Io,
            3 => Self::Lock,
            4 => Self::Oom,
            5 => Self::Exists,
            6 => Self::NoLock,
            7 => Self::LockTimeout,
            8 => Self::NoExist,
            9 => Self::Einval,
            10 => Self::RdOnly,
            11 => Self::Nesting,
            other => Self::Unknown(other),
        }
    }
}

impl From<TdbErrorCode> for u32 {
    fn from(code: TdbErrorCode) -> u32 {
        match code {
            TdbErrorCode::Success => 0,
            TdbErrorCode::Corrupt => 1,
            TdbErrorCode::Io => 2,
            TdbErrorCode::Lock => 3,
            TdbErrorCode::Oom => 4,
            TdbErrorCode::Exists => 5,
            TdbErrorCode::NoLock => 6,
            TdbErrorCode::LockTimeout => 7,
            TdbErrorCode::NoExist => 8,
            TdbErrorCode::Einval => 9,
            TdbErrorCode::RdOnly => 10,
            TdbErrorCode::Nesting => 11,
            TdbErrorCode::Unknown(other) => other,
        }
    }
}

/// A failed libtdb call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TdbError {
    /// The libtdb function that failed, e.g. `"tdb_store"`.
    pub op: &'static str,
    /// The database (its path, or `__TDB_INTERNAL__`).
    pub name: String,
    pub code: TdbErrorCode,
    /// `errno` after a failed open (libtdb has no context to keep an error code in then).
    pub errno: Option<i32>,
    /// `tdb_errorstr()`, or `strerror(errno)` for a failed open.
    pub message: String,
}

impl TdbError {
    /// The record does not exist (fetch-like calls return `None` instead).
    pub fn is_not_found(&self) -> bool {
        self.code == TdbErrorCode::NoExist
    }

    /// `StoreMode::Insert` found the key already present.
    pub fn is_exists(&self) -> bool {
        self.code == TdbErrorCode::Exists
    }

    /// A lock could not be taken; for the `_nonblock` calls this means somebody else holds
    /// it (libtdb reports fcntl's `EAGAIN` and a busy mutex the same way).
    pub fn is_lock_failure(&self) -> bool {
        self.code == TdbErrorCode::Lock
    }

    fn invalid(op: &'static str, name: String, message: &str) -> Self {
        Self {
            op,
            name,
            code: TdbErrorCode::Einval,
            errno: Some(libc::EINVAL),
            message: message.to_owned(),
        }
    }
}

impl fmt::Display for TdbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({}) failed: {}", self.op, self.name, self.message)
    }
}

impl std::error::Error for TdbError {}

/// `tdb_jenkins_hash`: the hash of `TDB_INCOMPATIBLE_HASH` files and of CTDB keys and db names.
pub fn jenkins_hash(key: &[u8]) -> u32 {
    let mut datum = datum(key);
    // SAFETY: `datum` points at `key.len()` readable bytes (or is NULL with length 0) and the
    // function only reads them; the pointer is not kept.
    unsafe { ffi::tdb_jenkins_hash(&mut datum) }
}

/// `tdb_runtime_check_for_robust_mutexes`: whether `TDB_MUTEX_LOCKING` can be used here (the
/// `[database] tdb mutexes` option is ignored otherwise). libtdb forks a short-lived child to
/// find out and caches the answer.
pub fn robust_mutexes_supported() -> bool {
    // SAFETY: no arguments; libtdb restores the signal mask and reaps its own test child.
    unsafe { ffi::tdb_runtime_check_for_robust_mutexes() }
}

/// A key or value as `TDB_DATA`. Empty slices become `tdb_null` (NULL, 0), as C callers pass
/// them.
fn datum(bytes: &[u8]) -> TdbData {
    TdbData {
        dptr: if bytes.is_empty() {
            ptr::null_mut()
        } else {
            bytes.as_ptr().cast_mut()
        },
        dsize: bytes.len(),
    }
}

/// Borrows a `TDB_DATA` handed to a callback.
///
/// # Safety
/// `data.dptr` must point at `data.dsize` readable bytes that stay valid and unmodified for
/// `'a`, unless `dsize` is 0.
unsafe fn datum_slice<'a>(data: TdbData) -> &'a [u8] {
    if data.dsize == 0 || data.dptr.is_null() {
        &[]
    } else {
        // SAFETY: guaranteed by the caller.
        unsafe { std::slice::from_raw_parts(data.dptr, data.dsize) }
    }
}

/// An open TDB (`struct tdb_context`), closed on drop.
///
/// libtdb refuses a second open of the same file in one process (`EBUSY`): fcntl locks belong
/// to the process, so closing one handle would drop the other's locks. Share one handle.
///
/// Release every lock before dropping a `MUTEX_LOCKING` database: closing unmaps the mutexes,
/// and a mutex still held then stays locked for everybody (even after this process exits the
/// kernel cannot mark an unmapped robust mutex as owner-dead). A process that dies with the
/// database still open is fine: the next locker recovers the mutex.
pub struct Tdb {
    ctx: NonNull<TdbContext>,
    /// The name given to `tdb_open`; its heap buffer is also the log callback's private
    /// pointer, so it must outlive `ctx`.
    name: CString,
}

impl fmt::Debug for Tdb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tdb")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Drop for Tdb {
    fn drop(&mut self) {
        // SAFETY: `ctx` came from a successful open and is closed exactly once, here; no
        // borrow of the handle can outlive `self`.
        let ret = unsafe { ffi::tdb_close(self.ctx.as_ptr()) };
        if ret != 0 {
            log::warn!("tdb_close({}) failed", self.name.to_string_lossy());
        }
    }
}

/// Panic-safe state shared with the traverse trampoline.
struct TraverseState<'f> {
    callback: &'f mut dyn FnMut(&[u8], &[u8]) -> Traverse,
    panic: Option<Box<dyn Any + Send>>,
}

unsafe extern "C" fn traverse_trampoline(
    _tdb: *mut TdbContext,
    key: TdbData,
    data: TdbData,
    private_data: *mut c_void,
) -> c_int {
    // SAFETY: `private_data` is the `TraverseState` that `Tdb::run_traverse` passed to this very
    // traverse; it lives on that stack frame until the traverse returns, and nothing else
    // touches it meanwhile.
    let state = unsafe { &mut *private_data.cast::<TraverseState<'_>>() };
    if state.panic.is_some() {
        return 1;
    }
    // SAFETY: tdb_traverse(_read) hands out a private `malloc`ed copy of the record that it
    // frees only after this callback returns, whatever the callback does to the database;
    // tdb_traverse_chain hands out either such a copy or a view of the mapping that stays
    // valid while the chain lock is held, i.e. for the whole callback, which (by
    // `Tdb::traverse_chain`'s contract) does not modify the database.
    let (key, data) = unsafe { (datum_slice(key), datum_slice(data)) };
    match catch_unwind(AssertUnwindSafe(|| (state.callback)(key, data))) {
        Ok(Traverse::Continue) => 0,
        Ok(Traverse::Stop) => 1,
        Err(panic) => {
            state.panic = Some(panic);
            1
        }
    }
}

/// Panic-safe state shared with the parse trampoline.
struct ParseState<F, R> {
    parser: Option<F>,
    result: Option<std::thread::Result<R>>,
}

unsafe extern "C" fn parse_trampoline<F, R>(
    _key: TdbData,
    data: TdbData,
    private_data: *mut c_void,
) -> c_int
where
    F: FnOnce(&[u8]) -> R,
{
    // SAFETY: `private_data` is the `ParseState<F, R>` that `Tdb::parse_record` created for this
    // call (same type parameters); it outlives the call and is not otherwise touched meanwhile.
    let state = unsafe { &mut *private_data.cast::<ParseState<F, R>>() };
    let Some(parser) = state.parser.take() else {
        return 0;
    };
    // SAFETY: libtdb guarantees the record (possibly a pointer into its mmap) stays valid until
    // the parser returns; `parse_record` borrows the `Tdb` mutably, so the closure cannot
    // change the database while it looks at the bytes.
    let data = unsafe { datum_slice(data) };
    state.result = Some(catch_unwind(AssertUnwindSafe(|| parser(data))));
    0
}

impl Tdb {
    /// `tdb_open_ex(path, hash_size, tdb_flags, open_flags | O_CLOEXEC, mode)` with the log hook.
    /// `hash_size` 0 means libtdb's default (131) or, for an existing file, whatever it has.
    pub fn open(
        path: impl AsRef<Path>,
        hash_size: u32,
        tdb_flags: TdbFlags,
        open_flags: c_int,
        mode: libc::mode_t,
    ) -> Result<Self, TdbError> {
        let path = path.as_ref();
        let shown = path.display().to_string();
        let name = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| TdbError::invalid("tdb_open", shown.clone(), "path contains NUL"))?;
        Self::open_named(name, shown, hash_size, tdb_flags, open_flags, mode)
    }

    /// An in-memory database (`TDB_INTERNAL`), private to this handle.
    pub fn open_internal(hash_size: u32, tdb_flags: TdbFlags) -> Result<Self, TdbError> {
        const INTERNAL_NAME: &str = "__TDB_INTERNAL__";
        let name = CString::new(INTERNAL_NAME).unwrap_or_default();
        Self::open_named(
            name,
            INTERNAL_NAME.to_owned(),
            hash_size,
            tdb_flags | TdbFlags::INTERNAL,
            libc::O_RDWR | libc::O_CREAT,
            0o600,
        )
    }

    fn open_named(
        name: CString,
        shown: String,
        hash_size: u32,
        tdb_flags: TdbFlags,
        open_flags: c_int,
        mode: libc::mode_t,
    ) -> Result<Self, TdbError> {
        let hash_size = c_int::try_from(hash_size)
            .map_err(|_| TdbError::invalid("tdb_open", shown.clone(), "hash size too large"))?;
        let flags = c_int::try_from(tdb_flags.bits())
            .map_err(|_| TdbError::invalid("tdb_open", shown.clone(), "invalid tdb flags"))?;
        let log_ctx = log_context(&name);
        let log_ctx_ptr = log_ctx.as_ref().map_or(ptr::null(), ptr::from_ref);
        // SAFETY: `name` is a NUL-terminated string that libtdb copies; `log_ctx` (if any) is
        // copied by value into the context, and its private pointer, `name`'s heap buffer, is
        // kept alive by the returned `Tdb` for as long as the context exists (and by this frame
        // if the open fails). A NULL hash function selects libtdb's own.
        let raw = unsafe {
            ffi::tdb_open_ex(
                name.as_ptr(),
                hash_size,
                flags,
                open_flags | libc::O_CLOEXEC,
                mode,
                log_ctx_ptr,
                ptr::null(),
            )
        };
        match NonNull::new(raw) {
            Some(ctx) => Ok(Self { ctx, name }),
            None => {
                let os = std::io::Error::last_os_error();
                let errno = os.raw_os_error().unwrap_or(0);
                Err(TdbError {
                    op: "tdb_open",
                    name: shown,
                    code: match errno {
                        libc::EINVAL => TdbErrorCode::Einval,
                        libc::ENOMEM => TdbErrorCode::Oom,
                        _ => TdbErrorCode::Io,
                    },
                    errno: Some(errno),
                    message: os.to_string(),
                })
            }
        }
    }

    fn raw(&self) -> *mut TdbContext {
        self.ctx.as_ptr()
    }

    /// The name the database was opened with (its path).
    pub fn name(&self) -> &CStr {
        &self.name
    }

    /// The name as text, for messages.
    pub fn name_lossy(&self) -> String {
        self.name.to_string_lossy().into_owned()
    }

    fn error(&self, op: &'static str) -> TdbError {
        // SAFETY: `raw()` is a live context; both calls only read its error code, and the
        // string returned by `tdb_errorstr` is a static literal inside libtdb.
        let (code, message) = unsafe {
            (
                ffi::tdb_error(self.raw()),
                CStr::from_ptr(ffi::tdb_errorstr(self.raw())),
            )
        };
        TdbError {
            op,
            name: self.name_lossy(),
            code: TdbErrorCode::from(code),
            errno: None,
            message: message.to_string_lossy().into_owned(),
        }
    }

    /// Turns libtdb's "-1 on failure" convention into a `Result`.
    fn check(&self, op: &'static str, ret: c_int) -> Result<c_int, TdbError> {
        if ret < 0 {
            Err(self.error(op))
        } else {
            Ok(ret)
        }
    }

    fn check_count(&self, op: &'static str, ret: c_int) -> Result<usize, TdbError> {
        let ret = self.check(op, ret)?;
        usize::try_from(ret).map_err(|_| self.error(op))
    }

    /// `tdb_fetch`: a copy of the record, `None` if there is none.
    pub fn fetch(&self, key: &[u8]) -> Result<Option<Vec<u8>>, TdbError> {
        // SAFETY: live context; `key` is only read during the call.
        let data = unsafe { ffi::tdb_fetch(self.raw(), datum(key)) };
        if data.dptr.is_null() {
            let err = self.error("tdb_fetch");
            return if err.is_not_found() {
                Ok(None)
            } else {
                Err(err)
            };
        }
        // SAFETY: on success libtdb returns a `malloc`ed buffer of `dsize` bytes (at least one
        // byte is allocated even for an empty value) that the caller owns: copy it out, then
        // release it with the C allocator exactly once.
        let value = unsafe {
            let value = datum_slice(data).to_vec();
            libc::free(data.dptr.cast());
            value
        };
        Ok(Some(value))
    }

    /// `tdb_parse_record`: runs `parser` on the record in place (no copy), `None` if there is
    /// none. Takes `&mut self` because the bytes may live in libtdb's mmap, which any change
    /// to the database could move.
    pub fn parse_record<F, R>(&mut self, key: &[u8], parser: F) -> Result<Option<R>, TdbError>
    where
        F: FnOnce(&[u8]) -> R,
    {
        let mut state = ParseState::<F, R> {
            parser: Some(parser),
            result: None,
        };
        // SAFETY: live context; `key` is only read; the trampoline is instantiated with the
        // same `F`, `R` as `state`, which outlives the call.
        let ret = unsafe {
            ffi::tdb_parse_record(
                self.raw(),
                datum(key),
                Some(parse_trampoline::<F, R>),
                ptr::from_mut(&mut state).cast(),
            )
        };
        match state.result {
            Some(Ok(value)) => Ok(Some(value)),
            Some(Err(panic)) => resume_unwind(panic),
            None => {
                let err = self.error("tdb_parse_record");
                if ret == 0 || err.is_not_found() {
                    Ok(None)
                } else {
                    Err(err)
                }
            }
        }
    }

    /// `tdb_store`.
    pub fn store(&self, key: &[u8], value: &[u8], mode: StoreMode) -> Result<(), TdbError> {
        // SAFETY: live context; key and value are only read (copied into the file).
        let ret = unsafe { ffi::tdb_store(self.raw(), datum(key), datum(value), mode.to_c()) };
        self.check("tdb_store", ret).map(drop)
    }

    /// `tdb_storev`: stores the concatenation of `parts` (CTDB writes `header ‖ data` this way).
    pub fn store_parts(
        &self,
        key: &[u8],
        parts: &[&[u8]],
        mode: StoreMode,
    ) -> Result<(), TdbError> {
        // The daemon stores `header ‖ data` for every record of a recovery: no allocation for
        // the few parts callers pass.
        const INLINE_PARTS: usize = 4;
        let mut inline = [datum(&[]); INLINE_PARTS];
        let heap: Vec<TdbData>;
        let bufs: &[TdbData] = if parts.len() <= INLINE_PARTS {
            for (slot, part) in inline.iter_mut().zip(parts) {
                *slot = datum(part);
            }
            &inline[..parts.len()]
        } else {
            heap = parts.iter().map(|part| datum(part)).collect();
            &heap
        };
        let count = c_int::try_from(bufs.len())
            .map_err(|_| TdbError::invalid("tdb_storev", self.name_lossy(), "too many parts"))?;
        // SAFETY: live context; `bufs` holds `count` valid `TDB_DATA`s borrowing `parts`, all
        // of which outlive the call and are only read.
        let ret =
            unsafe { ffi::tdb_storev(self.raw(), datum(key), bufs.as_ptr(), count, mode.to_c()) };
        self.check("tdb_storev", ret).map(drop)
    }

    /// `tdb_delete`; a missing record is an error with [`TdbErrorCode::NoExist`].
    pub fn delete(&self, key: &[u8]) -> Result<(), TdbError> {
        // SAFETY: live context; key only read.
        let ret = unsafe { ffi::tdb_delete(self.raw(), datum(key)) };
        self.check("tdb_delete", ret).map(drop)
    }

    /// `tdb_exists` (errors count as "no").
    pub fn exists(&self, key: &[u8]) -> bool {
        // SAFETY: live context; key only read.
        unsafe { ffi::tdb_exists(self.raw(), datum(key)) == 1 }
    }

    /// `tdb_traverse`: calls `visit(key, value)` for every record under write locks; the
    /// closure may change the database through `&self` (deleting the visited record is the
    /// usual case). Returns how many records were visited, including the one that said
    /// [`Traverse::Stop`]. A panic in `visit` stops the traverse and is resumed afterwards.
    pub fn traverse(
        &self,
        mut visit: impl FnMut(&[u8], &[u8]) -> Traverse,
    ) -> Result<usize, TdbError> {
        self.run_traverse("tdb_traverse", ffi::tdb_traverse, &mut visit)
    }

    /// `tdb_traverse_read`: like [`Tdb::traverse`] under read locks (what DB_PULL uses).
    pub fn traverse_read(
        &self,
        mut visit: impl FnMut(&[u8], &[u8]) -> Traverse,
    ) -> Result<usize, TdbError> {
        self.run_traverse("tdb_traverse_read", ffi::tdb_traverse_read, &mut visit)
    }

    fn run_traverse(
        &self,
        op: &'static str,
        traverse: unsafe extern "C" fn(
            *mut TdbContext,
            Option<ffi::TraverseFn>,
            *mut c_void,
        ) -> c_int,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> Traverse,
    ) -> Result<usize, TdbError> {
        let mut state = TraverseState {
            callback: visit,
            panic: None,
        };
        // SAFETY: live context; `state` outlives the call and is only reached through the
        // trampoline, which knows its type.
        let ret = unsafe {
            traverse(
                self.raw(),
                Some(traverse_trampoline),
                ptr::from_mut(&mut state).cast(),
            )
        };
        if let Some(panic) = state.panic {
            resume_unwind(panic);
        }
        self.check_count(op, ret)
    }

    /// `tdb_traverse_chain`: calls `visit(key, value)` for every record of hash chain `chain`
    /// (`0..hash_size()`) under that chain's read lock, which libtdb takes *blocking* unless
    /// an all-record lock of this handle already covers it. The slices may point into the
    /// file mapping: copy what must outlive the callback. The callback must not modify the
    /// database. Returns how many records were visited.
    pub fn traverse_chain(
        &self,
        chain: u32,
        mut visit: impl FnMut(&[u8], &[u8]) -> Traverse,
    ) -> Result<usize, TdbError> {
        let visit: &mut dyn FnMut(&[u8], &[u8]) -> Traverse = &mut visit;
        let mut state = TraverseState {
            callback: visit,
            panic: None,
        };
        // SAFETY: live context; `state` outlives the call and is only reached through the
        // trampoline, which knows its type. libtdb rejects an out-of-range chain itself.
        let ret = unsafe {
            ffi::tdb_traverse_chain(
                self.raw(),
                chain,
                Some(traverse_trampoline),
                ptr::from_mut(&mut state).cast(),
            )
        };
        if let Some(panic) = state.panic {
            resume_unwind(panic);
        }
        self.check_count("tdb_traverse_chain", ret)
    }

    /// The number of records (`tdb_traverse_read` without a callback).
    pub fn record_count(&self) -> Result<usize, TdbError> {
        // SAFETY: live context; libtdb accepts a NULL callback and just counts.
        let ret = unsafe { ffi::tdb_traverse_read(self.raw(), None, ptr::null_mut()) };
        self.check_count("tdb_traverse_read", ret)
    }

    fn key_call(
        &self,
        op: &'static str,
        call: unsafe extern "C" fn(*mut TdbContext, TdbData) -> c_int,
        key: &[u8],
    ) -> Result<(), TdbError> {
        // SAFETY: `call` is one of libtdb's key-taking lock functions: live context, key only
        // read during the call.
        let ret = unsafe { call(self.raw(), datum(key)) };
        self.check(op, ret).map(drop)
    }

    fn plain_call(
        &self,
        op: &'static str,
        call: unsafe extern "C" fn(*mut TdbContext) -> c_int,
    ) -> Result<(), TdbError> {
        // SAFETY: `call` is one of libtdb's context-only functions and the context is live.
        let ret = unsafe { call(self.raw()) };
        self.check(op, ret).map(drop)
    }

    /// `tdb_chainlock`: write-lock the hash chain of `key` (blocks).
    pub fn chainlock(&self, key: &[u8]) -> Result<(), TdbError> {
        self.key_call("tdb_chainlock", ffi::tdb_chainlock, key)
    }

    /// `tdb_chainlock_nonblock`: fails with [`TdbError::is_lock_failure`] when held elsewhere.
    pub fn chainlock_nonblock(&self, key: &[u8]) -> Result<(), TdbError> {
        self.key_call("tdb_chainlock_nonblock", ffi::tdb_chainlock_nonblock, key)
    }

    pub fn chainunlock(&self, key: &[u8]) -> Result<(), TdbError> {
        self.key_call("tdb_chainunlock", ffi::tdb_chainunlock, key)
    }

    pub fn chainlock_read(&self, key: &[u8]) -> Result<(), TdbError> {
        self.key_call("tdb_chainlock_read", ffi::tdb_chainlock_read, key)
    }

    pub fn chainlock_read_nonblock(&self, key: &[u8]) -> Result<(), TdbError> {
        self.key_call(
            "tdb_chainlock_read_nonblock",
            ffi::tdb_chainlock_read_nonblock,
            key,
        )
    }

    pub fn chainunlock_read(&self, key: &[u8]) -> Result<(), TdbError> {
        self.key_call("tdb_chainunlock_read", ffi::tdb_chainunlock_read, key)
    }

    /// `tdb_chainlock_mark`: record the chain as locked without locking it, because a lock
    /// helper child holds the real lock on our behalf.
    pub fn chainlock_mark(&self, key: &[u8]) -> Result<(), TdbError> {
        self.key_call("tdb_chainlock_mark", ffi::tdb_chainlock_mark, key)
    }

    pub fn chainlock_unmark(&self, key: &[u8]) -> Result<(), TdbError> {
        self.key_call("tdb_chainlock_unmark", ffi::tdb_chainlock_unmark, key)
    }

    /// `tdb_lockall`: write-lock every chain and the free list (what the freeze helper holds).
    pub fn lockall(&self) -> Result<(), TdbError> {
        self.plain_call("tdb_lockall", ffi::tdb_lockall)
    }

    pub fn lockall_nonblock(&self) -> Result<(), TdbError> {
        self.plain_call("tdb_lockall_nonblock", ffi::tdb_lockall_nonblock)
    }

    pub fn unlockall(&self) -> Result<(), TdbError> {
        self.plain_call("tdb_unlockall", ffi::tdb_unlockall)
    }

    pub fn lockall_read(&self) -> Result<(), TdbError> {
        self.plain_call("tdb_lockall_read", ffi::tdb_lockall_read)
    }

    pub fn lockall_read_nonblock(&self) -> Result<(), TdbError> {
        self.plain_call("tdb_lockall_read_nonblock", ffi::tdb_lockall_read_nonblock)
    }

    pub fn unlockall_read(&self) -> Result<(), TdbError> {
        self.plain_call("tdb_unlockall_read", ffi::tdb_unlockall_read)
    }

    /// `tdb_lockall_mark`: behave as if holding the all-record write lock (held for real by
    /// the freeze lock helper), so record access and traverses take no locks of their own.
    ///
    /// Outside a transaction this fails if [`Tdb::transaction_write_lock_mark`] is in effect
    /// (libtdb does not mix an all-record lock with other locks held); CTDB marks both only
    /// inside its recovery transaction, where the transaction already counts as holding every
    /// chain.
    pub fn lockall_mark(&self) -> Result<(), TdbError> {
        self.plain_call("tdb_lockall_mark", ffi::tdb_lockall_mark)
    }

    pub fn lockall_unmark(&self) -> Result<(), TdbError> {
        self.plain_call("tdb_lockall_unmark", ffi::tdb_lockall_unmark)
    }

    /// `tdb_transaction_write_lock_mark`: the transaction-lock half of `ctdb_lockdb_mark`.
    pub fn transaction_write_lock_mark(&self) -> Result<(), TdbError> {
        self.plain_call(
            "tdb_transaction_write_lock_mark",
            ffi::tdb_transaction_write_lock_mark,
        )
    }

    pub fn transaction_write_lock_unmark(&self) -> Result<(), TdbError> {
        self.plain_call(
            "tdb_transaction_write_lock_unmark",
            ffi::tdb_transaction_write_lock_unmark,
        )
    }

    /// `tdb_lock_nonblock(tdb, -1, F_WRLCK)`: the free-list lock CTDB takes before deleting a
    /// record on behalf of another node (server/ctdb_recover.c).
    pub fn freelist_lock_nonblock(&self) -> Result<(), TdbError> {
        // SAFETY: live context; list -1 is the free list, a valid lock target.
        let ret = unsafe { ffi::tdb_lock_nonblock(self.raw(), -1, c_int::from(libc::F_WRLCK)) };
        self.check("tdb_lock_nonblock", ret).map(drop)
    }

    pub fn freelist_unlock(&self) -> Result<(), TdbError> {
        // SAFETY: live context; libtdb checks that the lock is held.
        let ret = unsafe { ffi::tdb_unlock(self.raw(), -1, c_int::from(libc::F_WRLCK)) };
        self.check("tdb_unlock", ret).map(drop)
    }

    pub fn transaction_start(&self) -> Result<(), TdbError> {
        self.plain_call("tdb_transaction_start", ffi::tdb_transaction_start)
    }

    pub fn transaction_start_nonblock(&self) -> Result<(), TdbError> {
        self.plain_call(
            "tdb_transaction_start_nonblock",
            ffi::tdb_transaction_start_nonblock,
        )
    }

    pub fn transaction_prepare_commit(&self) -> Result<(), TdbError> {
        self.plain_call(
            "tdb_transaction_prepare_commit",
            ffi::tdb_transaction_prepare_commit,
        )
    }

    pub fn transaction_commit(&self) -> Result<(), TdbError> {
        self.plain_call("tdb_transaction_commit", ffi::tdb_transaction_commit)
    }

    pub fn transaction_cancel(&self) -> Result<(), TdbError> {
        self.plain_call("tdb_transaction_cancel", ffi::tdb_transaction_cancel)
    }

    pub fn transaction_active(&self) -> bool {
        // SAFETY: live context; read-only query.
        unsafe { ffi::tdb_transaction_active(self.raw()) }
    }

    /// `tdb_wipe_all`: delete every record (inside the open transaction, if any).
    pub fn wipe_all(&self) -> Result<(), TdbError> {
        self.plain_call("tdb_wipe_all", ffi::tdb_wipe_all)
    }

    /// `tdb_repack`: rewrite the file without free space (uses a transaction internally).
    pub fn repack(&self) -> Result<(), TdbError> {
        self.plain_call("tdb_repack", ffi::tdb_repack)
    }

    /// `tdb_check` without a record checker: structural integrity only.
    pub fn check_integrity(&self) -> Result<(), TdbError> {
        // SAFETY: live context; a NULL checker is allowed.
        let ret = unsafe { ffi::tdb_check(self.raw(), None, ptr::null_mut()) };
        self.check("tdb_check", ret).map(drop)
    }

    /// `tdb_get_seqnum` (0 unless `SEQNUM` is set or [`Tdb::enable_seqnum`] was called). The C
    /// value is a 32-bit counter that wraps; it is returned as those bits.
    pub fn seqnum(&self) -> u32 {
        // SAFETY: live context; reads the header word.
        let seqnum = unsafe { ffi::tdb_get_seqnum(self.raw()) };
        u32::from_ne_bytes(seqnum.to_ne_bytes())
    }

    pub fn enable_seqnum(&self) {
        // SAFETY: live context; sets a flag bit.
        unsafe { ffi::tdb_enable_seqnum(self.raw()) }
    }

    /// `tdb_increment_seqnum_nonblock`: bump the seqnum if its lock is free (CTDB does this to
    /// wake smbd's seqnum watchers).
    pub fn increment_seqnum_nonblock(&self) {
        // SAFETY: live context; does nothing if the lock is taken.
        unsafe { ffi::tdb_increment_seqnum_nonblock(self.raw()) }
    }

    /// Number of hash chains.
    pub fn hash_size(&self) -> u32 {
        // SAFETY: live context; reads a field.
        let size = unsafe { ffi::tdb_hash_size(self.raw()) };
        u32::try_from(size).unwrap_or(0)
    }

    /// Current size of the file mapping in bytes.
    pub fn map_size(&self) -> usize {
        // SAFETY: live context; reads a field.
        unsafe { ffi::tdb_map_size(self.raw()) }
    }

    /// `tdb_fd`: the file descriptor (-1 for an internal database). Owned by the handle.
    pub fn fd(&self) -> RawFd {
        // SAFETY: live context; reads a field.
        unsafe { ffi::tdb_fd(self.raw()) }
    }

    pub fn flags(&self) -> TdbFlags {
        // SAFETY: live context; reads a field.
        let flags = unsafe { ffi::tdb_get_flags(self.raw()) };
        TdbFlags::from_bits(u32::from_ne_bytes(flags.to_ne_bytes()))
    }

    pub fn add_flags(&self, flags: TdbFlags) {
        // SAFETY: live context; libtdb validates the combination and sets its error code.
        unsafe { ffi::tdb_add_flags(self.raw(), c_uint::from(flags.bits())) }
    }

    pub fn remove_flags(&self, flags: TdbFlags) {
        // SAFETY: live context; libtdb validates the combination and sets its error code.
        unsafe { ffi::tdb_remove_flags(self.raw(), c_uint::from(flags.bits())) }
    }

    /// Runs `body` with `flags` set, then clears those of them that were not set before (also
    /// if `body` panics). The recovery transaction calls run like this with `NOLOCK`, because
    /// the freeze lock helper holds the locks.
    pub fn with_flags<R>(&self, flags: TdbFlags, body: impl FnOnce(&Self) -> R) -> R {
        struct Restore<'a> {
            tdb: &'a Tdb,
            added: TdbFlags,
        }
        impl Drop for Restore<'_> {
            fn drop(&mut self) {
                if !self.added.is_empty() {
                    self.tdb.remove_flags(self.added);
                }
            }
        }
        let added = flags.without(self.flags());
        self.add_flags(flags);
        let _restore = Restore { tdb: self, added };
        body(self)
    }

    /// `tdb_set_max_dead`: dead records kept per chain before cleaning (`DatabaseMaxDead`).
    pub fn set_max_dead(&self, max_dead: u32) {
        let max_dead = c_int::try_from(max_dead).unwrap_or(c_int::MAX);
        // SAFETY: live context; sets a field.
        unsafe { ffi::tdb_set_max_dead(self.raw(), max_dead) }
    }

    /// `tdb_freelist_size`: entries on the free list (merging neighbours as a side effect);
    /// the vacuum repack decision uses it.
    pub fn freelist_size(&self) -> Result<usize, TdbError> {
        // SAFETY: live context.
        let ret = unsafe { ffi::tdb_freelist_size(self.raw()) };
        self.check_count("tdb_freelist_size", ret)
    }

    /// `tdb_summary`: libtdb's human-readable statistics.
    pub fn summary(&self) -> Result<String, TdbError> {
        // SAFETY: live context; the result is a `malloc`ed NUL-terminated string owned by us.
        let text = unsafe { ffi::tdb_summary(self.raw()) };
        if text.is_null() {
            return Err(self.error("tdb_summary"));
        }
        // SAFETY: `text` is non-NULL and NUL-terminated; it is copied, then freed once.
        let summary = unsafe {
            let summary = CStr::from_ptr(text).to_string_lossy().into_owned();
            libc::free(text.cast());
            summary
        };
        Ok(summary)
    }
}

#[cfg(ctdb_tdb_log_shim)]
fn log_context(name: &CString) -> Option<ffi::TdbLoggingContext> {
    Some(ffi::TdbLoggingContext {
        log_fn: ffi::ctdb_rs_tdb_log as *const c_void,
        log_private: name.as_ptr().cast_mut().cast(),
    })
}

#[cfg(not(ctdb_tdb_log_shim))]
fn log_context(_name: &CString) -> Option<ffi::TdbLoggingContext> {
    None
}

/// `log` level for a `tdb_debug_level`, matching the debug levels `tdb_wrap_log` uses (FATAL
/// 0 = ERROR, ERROR 1 = WARNING, WARNING 2, TRACE 5 = INFO).
fn log_level(tdb_level: c_int) -> log::Level {
    match tdb_level {
        1 => log::Level::Warn,
        2 => log::Level::Info,
        3 => log::Level::Debug,
        _ => log::Level::Error,
    }
}

/// Called by the C shim with each formatted libtdb message; `log_private` is the database
/// name registered at open.
#[cfg(ctdb_tdb_log_shim)]
#[unsafe(no_mangle)]
extern "C" fn ctdb_rs_tdb_log_sink(log_private: *mut c_void, level: c_int, message: *const c_char) {
    let _ = catch_unwind(|| {
        let text = |p: *const c_char, fallback: &str| {
            if p.is_null() {
                fallback.to_owned()
            } else {
                // SAFETY: the shim passes a NUL-terminated stack buffer; the private pointer is
                // the NUL-terminated name the owning `Tdb` keeps alive while its context exists.
                unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
            }
        };
        let name = text(log_private.cast_const().cast(), "unnamed");
        let message = text(message, "");
        let message = message.trim_end();
        #[cfg(test)]
        tests::capture_log(&name, message);
        log::log!(target: "tdb", log_level(level), "tdb({name}): {message}");
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::hash::ctdb_hash;
    use crate::testing::{seeds, Prng};
    use std::cell::RefCell;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::path::PathBuf;
    use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

    thread_local! {
        static CAPTURED: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    }

    /// libtdb logs on the calling thread, so each test sees only its own messages.
    pub(super) fn capture_log(name: &str, message: &str) {
        CAPTURED.with(|c| c.borrow_mut().push(format!("tdb({name}): {message}")));
    }

    fn take_captured() -> Vec<String> {
        CAPTURED.with(|c| std::mem::take(&mut *c.borrow_mut()))
    }

    /// A per-test scratch directory, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("ctdb-rs-tdb-{}-{tag}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        fn path(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const CREATE: c_int = libc::O_RDWR | libc::O_CREAT;

    /// The flags CTDB opens volatile databases with, minus the mutexes.
    fn volatile_flags() -> TdbFlags {
        TdbFlags::CLEAR_IF_FIRST
            | TdbFlags::NOSYNC
            | TdbFlags::INCOMPATIBLE_HASH
            | TdbFlags::DISALLOW_NESTING
    }

    fn open(path: &Path, flags: TdbFlags) -> Tdb {
        Tdb::open(path, 1000, flags, CREATE, 0o600)
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
    }

    fn all_records(tdb: &Tdb) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut records = Vec::new();
        tdb.traverse_read(|k, v| {
            records.push((k.to_vec(), v.to_vec()));
            Traverse::Continue
        })
        .unwrap();
        records.sort();
        records
    }

    // ---- a second process holding locks -------------------------------------------------

    const CHILD_ENV: &str = "CTDB_RS_TDB_TEST_CHILD";

    /// The body of the helper process that [`LockHolder`] starts (this same test binary,
    /// filtered to this function). Run as an ordinary test it has nothing to do and passes; with
    /// `CTDB_RS_TDB_TEST_CHILD` set it opens the database, takes the requested lock, says
    /// `CHILD-READY`, and keeps everything until its stdin is closed.
    #[test]
    fn lock_holder_child() {
        let Ok(spec) = std::env::var(CHILD_ENV) else {
            return;
        };
        let mut parts = spec.splitn(3, ' ');
        let flags: u32 = parts.next().unwrap().parse().unwrap();
        let action = parts.next().unwrap().to_owned();
        let path = parts.next().unwrap();
        let tdb = Tdb::open(path, 0, TdbFlags::from_bits(flags), libc::O_RDWR, 0o600).unwrap();
        let chain_key = action.strip_prefix("chainlock:");
        if let Some(key) = chain_key {
            tdb.chainlock(key.as_bytes()).unwrap();
        } else if action == "lockall" {
            tdb.lockall().unwrap();
        }
        println!("CHILD-READY");
        std::io::stdout().flush().unwrap();
        let mut rest = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut rest);
        // Unlock before closing, as ctdb_lock_helper does: closing a MUTEX_LOCKING database
        // unmaps the mutexes, so a lock still held then is never released (the kernel cannot
        // mark an unmapped robust mutex as owner-dead).
        if let Some(key) = chain_key {
            tdb.chainunlock(key.as_bytes()).unwrap();
        } else if action == "lockall" {
            tdb.unlockall().unwrap();
        }
        drop(tdb);
    }

    /// Another process holding a database open (and possibly locked).
    struct LockHolder {
        child: Child,
        stdin: Option<ChildStdin>,
        /// Kept open until the child exits: libtest still reports to it.
        stdout: BufReader<ChildStdout>,
    }

    impl LockHolder {
        /// `action`: `hold`, `chainlock:<key>` or `lockall`.
        fn start(path: &Path, flags: TdbFlags, action: &str) -> Self {
            let test_name = format!(
                "{}::lock_holder_child",
                module_path!().split_once("::").unwrap().1
            );
            let mut child = Command::new(std::env::current_exe().unwrap())
                .args([&test_name, "--exact", "--nocapture"])
                .env(
                    CHILD_ENV,
                    format!("{} {action} {}", flags.bits(), path.display()),
                )
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap();
            let stdin = child.stdin.take();
            let mut stdout = BufReader::new(child.stdout.take().unwrap());
            let mut seen = String::new();
            loop {
                let mut line = String::new();
                let n = stdout.read_line(&mut line).unwrap();
                assert!(n > 0, "lock holder exited before being ready: {seen}");
                if line.trim_end() == "CHILD-READY" {
                    break;
                }
                seen.push_str(&line);
            }
            Self {
                child,
                stdin,
                stdout,
            }
        }

        /// SIGKILL, as ctdbd ends a lock helper it no longer needs.
        fn kill(mut self) {
            self.child.kill().unwrap();
            let _ = self.child.wait();
        }

        fn finish(mut self) {
            drop(self.stdin.take());
            let mut rest = Vec::new();
            let _ = self.stdout.read_to_end(&mut rest);
            let status = self.child.wait().unwrap();
            assert!(status.success(), "lock holder failed: {status}");
        }
    }

    impl Drop for LockHolder {
        fn drop(&mut self) {
            drop(self.stdin.take());
            let mut rest = Vec::new();
            let _ = self.stdout.read_to_end(&mut rest);
            let _ = self.child.wait();
        }
    }

    /// A key whose hash chain differs from `key`'s.
    fn key_in_other_chain(tdb: &Tdb, key: &[u8]) -> Vec<u8> {
        let chain = |k: &[u8]| jenkins_hash(k) % tdb.hash_size();
        (0u32..)
            .map(|i| format!("other-{i}").into_bytes())
            .find(|k| chain(k) != chain(key))
            .unwrap()
    }

    // ---- tests ----------------------------------------------------------------------------

    #[test]
    fn store_fetch_delete_round_trip_including_empty_keys_and_values() {
        let dir = TempDir::new("roundtrip");
        for flags in [TdbFlags::DEFAULT, volatile_flags()] {
            let path = dir.path(&format!("rt-{}.tdb", flags.bits()));
            let tdb = open(&path, flags);
            assert_eq!(tdb.fetch(b"missing").unwrap(), None);
            assert!(!tdb.exists(b"missing"));
            for (key, value) in [
                (&b""[..], &b""[..]),
                (b"k", b""),
                (b"", b"value of the empty key"),
                (b"key", b"value"),
                (b"\0binary\xff", b"\0\x01\x02"),
            ] {
                tdb.store(key, value, StoreMode::Replace).unwrap();
                assert!(tdb.exists(key));
                assert_eq!(tdb.fetch(key).unwrap().as_deref(), Some(value), "{key:?}");
            }
            assert_eq!(tdb.record_count().unwrap(), 4);
            assert_eq!(tdb.fetch(b"").unwrap().unwrap(), b"value of the empty key");

            let err = tdb.store(b"key", b"x", StoreMode::Insert).unwrap_err();
            assert!(err.is_exists(), "{err:?}");
            assert_eq!(err.op, "tdb_store");
            let err = tdb.store(b"nokey", b"x", StoreMode::Modify).unwrap_err();
            assert!(err.is_not_found(), "{err:?}");
            tdb.store(b"key", b"modified", StoreMode::Modify).unwrap();
            tdb.store(b"new", b"inserted", StoreMode::Insert).unwrap();
            assert_eq!(tdb.fetch(b"key").unwrap().unwrap(), b"modified");

            tdb.store_parts(b"parts", &[b"head", b"", b"-tail"], StoreMode::Replace)
                .unwrap();
            assert_eq!(tdb.fetch(b"parts").unwrap().unwrap(), b"head-tail");

            tdb.delete(b"").unwrap();
            assert_eq!(tdb.fetch(b"").unwrap(), None);
            let err = tdb.delete(b"").unwrap_err();
            assert!(err.is_not_found());
            assert_eq!(err.op, "tdb_delete");
            assert!(
                err.to_string().contains(&path.display().to_string()),
                "{err}"
            );
            tdb.check_integrity().unwrap();
        }
    }

    #[test]
    fn values_survive_reopen_without_clear_if_first() {
        let dir = TempDir::new("reopen");
        let path = dir.path("persistent.tdb");
        {
            let tdb = open(&path, TdbFlags::DEFAULT);
            tdb.store(b"a", b"1", StoreMode::Replace).unwrap();
        }
        let tdb = Tdb::open(&path, 0, TdbFlags::DEFAULT, libc::O_RDWR, 0).unwrap();
        assert_eq!(tdb.fetch(b"a").unwrap().unwrap(), b"1");
        assert_eq!(tdb.hash_size(), 1000, "the hash size comes from the file");
    }

    #[test]
    fn parse_record_borrows_the_value() {
        let dir = TempDir::new("parse");
        let mut tdb = open(&dir.path("p.tdb"), volatile_flags());
        tdb.store(b"k", b"0123456789", StoreMode::Replace).unwrap();
        tdb.store(b"empty", b"", StoreMode::Replace).unwrap();
        assert_eq!(
            tdb.parse_record(b"k", |v| v[..4].to_vec())
                .unwrap()
                .unwrap(),
            b"0123"
        );
        assert_eq!(tdb.parse_record(b"empty", <[u8]>::len).unwrap(), Some(0));
        assert_eq!(tdb.parse_record(b"nope", <[u8]>::len).unwrap(), None);

        let panicked = catch_unwind(AssertUnwindSafe(|| {
            tdb.parse_record(b"k", |_| panic!("parser panic")).unwrap();
        }));
        assert!(panicked.is_err());
        assert_eq!(tdb.fetch(b"k").unwrap().unwrap(), b"0123456789");
    }

    #[test]
    fn traverse_visits_every_record_and_can_stop_or_delete() {
        let dir = TempDir::new("traverse");
        let tdb = open(&dir.path("t.tdb"), volatile_flags());
        assert_eq!(tdb.traverse(|_, _| Traverse::Continue).unwrap(), 0);
        for i in 0..100u32 {
            tdb.store(&i.to_le_bytes(), &[i as u8; 7], StoreMode::Insert)
                .unwrap();
        }
        let records = all_records(&tdb);
        assert_eq!(records.len(), 100);
        for (key, value) in &records {
            let i = u32::from_le_bytes(key[..].try_into().unwrap());
            assert_eq!(value, &vec![i as u8; 7]);
        }

        let mut seen = 0;
        let visited = tdb
            .traverse_read(|_, _| {
                seen += 1;
                if seen == 3 {
                    Traverse::Stop
                } else {
                    Traverse::Continue
                }
            })
            .unwrap();
        assert_eq!((visited, seen), (3, 3));

        // Delete the odd keys from inside a write traverse, as vacuuming does.
        let visited = tdb
            .traverse(|key, _| {
                if key[0] % 2 == 1 {
                    tdb.delete(key).unwrap();
                }
                Traverse::Continue
            })
            .unwrap();
        assert_eq!(visited, 100);
        assert_eq!(tdb.record_count().unwrap(), 50);

        let panicked = catch_unwind(AssertUnwindSafe(|| {
            let _ = tdb.traverse(|_, _| panic!("visitor panic"));
        }));
        assert!(panicked.is_err());
        // The traverse ended cleanly inside libtdb: locks are free and the data is intact.
        tdb.lockall_nonblock().unwrap();
        tdb.unlockall().unwrap();
        assert_eq!(tdb.record_count().unwrap(), 50);
    }

    #[test]
    fn clear_if_first_wipes_only_when_nobody_else_has_it_open() {
        let dir = TempDir::new("clear");
        let path = dir.path("volatile.tdb.0");
        {
            let tdb = open(&path, volatile_flags());
            tdb.store(b"k", b"v", StoreMode::Replace).unwrap();
        }
        {
            let tdb = open(&path, volatile_flags());
            assert_eq!(tdb.record_count().unwrap(), 0, "first opener wipes");
            tdb.store(b"k", b"v", StoreMode::Replace).unwrap();
        }
        // A plain open does not wipe.
        {
            let tdb = open(&path, TdbFlags::DEFAULT);
            assert_eq!(tdb.fetch(b"k").unwrap().unwrap(), b"v");
        }
        // While another process has it open (as smbd would), closing and reopening keeps the
        // data. (The other process opened it first, so its open did the wiping.)
        let holder = LockHolder::start(&path, volatile_flags(), "hold");
        {
            let tdb = open(&path, volatile_flags());
            assert_eq!(tdb.record_count().unwrap(), 0);
            tdb.store(b"k", b"v", StoreMode::Replace).unwrap();
        }
        {
            let tdb = open(&path, volatile_flags());
            assert_eq!(tdb.fetch(b"k").unwrap().unwrap(), b"v");
        }
        holder.finish();
        let tdb = open(&path, volatile_flags());
        assert_eq!(tdb.record_count().unwrap(), 0);
    }

    #[test]
    fn files_interoperate_with_stock_tdbdump_and_tdbtool() {
        let dir = TempDir::new("tools");
        for flags in [volatile_flags(), TdbFlags::DEFAULT] {
            let path = dir.path(&format!("tools-{}.tdb", flags.bits()));
            let tdb = open(&path, flags);
            for i in 0..20 {
                let key = format!("key-{i}");
                tdb.store(
                    key.as_bytes(),
                    format!("value-{i}").as_bytes(),
                    StoreMode::Replace,
                )
                .unwrap();
            }

            // tdbdump -k looks the key up through the hash, so this checks the hash function.
            for i in 0..20 {
                let output = Command::new("tdbdump")
                    .arg("-k")
                    .arg(format!("key-{i}"))
                    .arg(&path)
                    .output()
                    .expect("tdbdump (Debian package tdb-tools) must be installed");
                assert!(output.status.success(), "{output:?}");
                assert_eq!(output.stdout, format!("value-{i}").as_bytes());
            }
            let dump = Command::new("tdbdump").arg(&path).output().unwrap();
            let dump = String::from_utf8(dump.stdout).unwrap();
            assert!(
                dump.contains("key(5) = \"key-7\"\ndata(7) = \"value-7\"\n"),
                "{dump}"
            );
            assert_eq!(dump.matches("key(").count(), 20);

            // The other way round: tdbtool writes (locking against our open handle), we read.
            let status = Command::new("tdbtool")
                .arg(&path)
                .args(["store", "from-tdbtool", "written by tdbtool"])
                .stdout(Stdio::null())
                .status()
                .unwrap();
            assert!(status.success());
            assert_eq!(
                tdb.fetch(b"from-tdbtool").unwrap().unwrap(),
                b"written by tdbtool"
            );
            let status = Command::new("tdbtool")
                .arg(&path)
                .arg("check")
                .stdout(Stdio::null())
                .status()
                .unwrap();
            assert!(status.success());
        }
    }

    #[test]
    fn transactions_commit_and_cancel() {
        let dir = TempDir::new("transaction");
        let tdb = open(&dir.path("tx.tdb"), TdbFlags::DISALLOW_NESTING);
        tdb.store(b"before", b"1", StoreMode::Replace).unwrap();

        tdb.transaction_start().unwrap();
        assert!(tdb.transaction_active());
        tdb.store(b"cancelled", b"x", StoreMode::Replace).unwrap();
        tdb.delete(b"before").unwrap();
        assert!(tdb.exists(b"cancelled"), "visible inside the transaction");
        let err = tdb.transaction_start().unwrap_err();
        assert_eq!(err.code, TdbErrorCode::Nesting, "{err:?}");
        tdb.transaction_cancel().unwrap();
        assert!(!tdb.transaction_active());
        assert!(!tdb.exists(b"cancelled"));
        assert!(tdb.exists(b"before"));

        tdb.transaction_start_nonblock().unwrap();
        tdb.store(b"committed", b"y", StoreMode::Replace).unwrap();
        tdb.wipe_all().unwrap();
        tdb.store(b"after-wipe", b"z", StoreMode::Replace).unwrap();
        tdb.transaction_prepare_commit().unwrap();
        tdb.transaction_commit().unwrap();
        assert_eq!(
            all_records(&tdb),
            vec![(b"after-wipe".to_vec(), b"z".to_vec())]
        );
        let err = tdb.transaction_commit().unwrap_err();
        assert_eq!(err.op, "tdb_transaction_commit");
    }

    #[test]
    fn chainlock_held_by_another_process_blocks_nonblocking_lockers() {
        let dir = TempDir::new("chainlock");
        let path = dir.path("locks.tdb");
        let tdb = open(&path, volatile_flags());
        let other = key_in_other_chain(&tdb, b"locked-key");

        let holder = LockHolder::start(&path, volatile_flags(), "chainlock:locked-key");
        let err = tdb.chainlock_nonblock(b"locked-key").unwrap_err();
        assert!(err.is_lock_failure(), "{err:?}");
        assert_eq!(err.op, "tdb_chainlock_nonblock");
        assert!(tdb.chainlock_read_nonblock(b"locked-key").is_err());
        assert!(tdb.lockall_nonblock().is_err());
        assert!(tdb.lockall_read_nonblock().is_err());
        // Other chains are unaffected.
        tdb.chainlock_nonblock(&other).unwrap();
        tdb.store(&other, b"v", StoreMode::Replace).unwrap();
        tdb.chainunlock(&other).unwrap();
        holder.finish();

        tdb.chainlock_nonblock(b"locked-key").unwrap();
        tdb.store(b"locked-key", b"mine", StoreMode::Replace)
            .unwrap();
        tdb.chainunlock(b"locked-key").unwrap();
        tdb.chainlock_read(b"locked-key").unwrap();
        tdb.chainunlock_read(b"locked-key").unwrap();
        tdb.chainlock(b"locked-key").unwrap();
        tdb.chainunlock(b"locked-key").unwrap();
        assert!(
            tdb.chainunlock(b"locked-key").is_err(),
            "not locked any more"
        );
    }

    /// The freeze protocol of server/ctdb_freeze.c and ctdb_recover.c: a lock helper process
    /// holds `tdb_lockall`; ctdbd marks the database locked (taking no locks of its own) to
    /// read and write it, and runs the recovery transaction with `TDB_NOLOCK` set around
    /// start and commit.
    fn freeze_protocol(flags: TdbFlags, tag: &str) {
        let dir = TempDir::new(tag);
        let path = dir.path("frozen.tdb.0");
        let tdb = open(&path, flags);
        for i in 0..10u8 {
            tdb.store(&[i], &[i; 3], StoreMode::Replace).unwrap();
        }

        let helper = LockHolder::start(&path, flags, "lockall");
        assert!(tdb.chainlock_nonblock(&[1]).unwrap_err().is_lock_failure());
        assert!(tdb.lockall_nonblock().is_err());

        // Outside a transaction the transaction-lock mark counts as a lock held, and libtdb
        // refuses to mix it with an all-record lock: CTDB only marks inside its recovery
        // transaction (see below).
        tdb.transaction_write_lock_mark().unwrap();
        assert!(tdb.lockall_mark().unwrap_err().is_lock_failure());
        tdb.transaction_write_lock_unmark().unwrap();

        // lockall_mark alone: everything works without touching the real locks.
        tdb.lockall_mark().unwrap();
        assert_eq!(all_records(&tdb).len(), 10);
        tdb.chainlock_nonblock(&[1]).unwrap();
        tdb.chainunlock(&[1]).unwrap();
        tdb.store(&[1], b"changed while marked", StoreMode::Replace)
            .unwrap();
        assert_eq!(tdb.fetch(&[1]).unwrap().unwrap(), b"changed while marked");
        // Unmarked, the helper's locks are in the way again.
        tdb.lockall_unmark().unwrap();
        assert!(tdb.chainlock_nonblock(&[1]).unwrap_err().is_lock_failure());
        assert!(
            tdb.lockall_unmark().is_err(),
            "unmarking what is not marked fails"
        );

        // DB_TRANSACTION_START
        tdb.with_flags(TdbFlags::NOLOCK, Tdb::transaction_start)
            .unwrap();
        assert!(
            !tdb.flags().contains(TdbFlags::NOLOCK),
            "NOLOCK is temporary"
        );
        // DB_PULL, DB_PUSH_START .. DB_PUSH_CONFIRM, WIPE_DATABASE, between
        // ctdb_lockdb_mark and ctdb_lockdb_unmark.
        tdb.transaction_write_lock_mark().unwrap();
        tdb.lockall_mark().unwrap();
        assert_eq!(all_records(&tdb).len(), 10);
        tdb.wipe_all().unwrap();
        tdb.store(b"pushed", b"record", StoreMode::Replace).unwrap();
        tdb.lockall_unmark().unwrap();
        tdb.transaction_write_lock_unmark().unwrap();
        // The transaction itself counts as holding every chain lock (libtdb took an
        // upgradable all-record lock at start, for real only without NOLOCK).
        tdb.chainlock_nonblock(&[1]).unwrap();
        tdb.chainunlock(&[1]).unwrap();
        // DB_TRANSACTION_COMMIT
        tdb.with_flags(TdbFlags::NOLOCK, Tdb::transaction_commit)
            .unwrap();
        assert!(tdb.chainlock_nonblock(&[1]).unwrap_err().is_lock_failure());

        // DB_THAW: the helper goes away and normal locking works again.
        helper.finish();
        tdb.chainlock_nonblock(&[1]).unwrap();
        tdb.chainunlock(&[1]).unwrap();
        assert_eq!(
            all_records(&tdb),
            vec![(b"pushed".to_vec(), b"record".to_vec())]
        );
    }

    #[test]
    fn freeze_lockall_mark_and_nolock_transaction_with_fcntl_locks() {
        freeze_protocol(volatile_flags(), "freeze-fcntl");
    }

    #[test]
    fn freeze_lockall_mark_and_nolock_transaction_with_persistent_flags() {
        freeze_protocol(TdbFlags::DEFAULT, "freeze-persistent");
    }

    #[test]
    fn robust_mutex_databases_when_supported() {
        if !robust_mutexes_supported() {
            eprintln!("robust mutexes are not supported here; skipping");
            return;
        }
        let flags = volatile_flags() | TdbFlags::MUTEX_LOCKING;
        assert_eq!(flags.bits(), 0x1c41, "what stock reports in DB_OPEN_FLAGS");
        freeze_protocol(flags, "freeze-mutex");

        let dir = TempDir::new("mutex");
        let path = dir.path("mutex.tdb.0");
        let tdb = open(&path, flags);
        tdb.store(b"k", b"v", StoreMode::Replace).unwrap();
        let holder = LockHolder::start(&path, flags, "chainlock:k");
        let err = tdb.chainlock_nonblock(b"k").unwrap_err();
        assert!(err.is_lock_failure(), "{err:?}");
        holder.finish();
        tdb.chainlock_nonblock(b"k").unwrap();
        tdb.chainunlock(b"k").unwrap();
    }

    #[test]
    fn killed_lock_holders_release_their_locks() {
        let mut variants = vec![("fcntl", volatile_flags())];
        if robust_mutexes_supported() {
            variants.push(("mutex", volatile_flags() | TdbFlags::MUTEX_LOCKING));
        }
        for (tag, flags) in variants {
            let dir = TempDir::new(&format!("killed-{tag}"));
            let path = dir.path("k.tdb.0");
            let tdb = open(&path, flags);
            tdb.store(b"k", b"v", StoreMode::Replace).unwrap();
            for action in ["lockall", "chainlock:k"] {
                let holder = LockHolder::start(&path, flags, action);
                assert!(
                    tdb.chainlock_nonblock(b"k").unwrap_err().is_lock_failure(),
                    "{tag} {action}"
                );
                holder.kill();
                tdb.chainlock_nonblock(b"k")
                    .unwrap_or_else(|e| panic!("{tag} {action}: {e}"));
                tdb.chainunlock(b"k").unwrap();
                tdb.lockall_nonblock().unwrap();
                tdb.unlockall().unwrap();
            }
            assert_eq!(tdb.fetch(b"k").unwrap().unwrap(), b"v");
        }
    }

    #[test]
    fn seqnum_counts_changes() {
        let dir = TempDir::new("seqnum");
        let tdb = open(&dir.path("seq.tdb"), TdbFlags::SEQNUM);
        assert_eq!(tdb.seqnum(), 0);
        tdb.store(b"a", b"1", StoreMode::Replace).unwrap();
        assert_eq!(tdb.seqnum(), 1);
        tdb.store(b"a", b"2", StoreMode::Replace).unwrap();
        tdb.delete(b"a").unwrap();
        assert_eq!(tdb.seqnum(), 3);
        tdb.increment_seqnum_nonblock();
        assert_eq!(tdb.seqnum(), 4);

        let plain = open(&dir.path("plain.tdb"), TdbFlags::DEFAULT);
        plain.store(b"a", b"1", StoreMode::Replace).unwrap();
        assert_eq!(plain.seqnum(), 0);
        plain.enable_seqnum();
        assert!(plain.flags().contains(TdbFlags::SEQNUM));
        plain.store(b"a", b"2", StoreMode::Replace).unwrap();
        assert_eq!(plain.seqnum(), 1);
    }

    #[test]
    fn jenkins_hash_matches_our_implementation() {
        assert_eq!(jenkins_hash(b""), ctdb_hash(b""));
        for seed in seeds(2000) {
            let mut prng = Prng::new(seed);
            let key = prng.bytes(300);
            assert_eq!(
                jenkins_hash(&key),
                ctdb_hash(&key),
                "seed {seed}, key {key:02x?}"
            );
        }
        // The db_id of test.tdb observed on stock ctdbd.
        assert_eq!(jenkins_hash(b"test.tdb\0"), 0xc445_c6ab);
    }

    #[test]
    fn open_errors_and_internal_databases() {
        let dir = TempDir::new("errors");
        let missing = dir.path("missing.tdb");
        let err = Tdb::open(&missing, 0, TdbFlags::DEFAULT, libc::O_RDWR, 0).unwrap_err();
        assert_eq!(
            (err.op, err.errno),
            ("tdb_open", Some(libc::ENOENT)),
            "{err:?}"
        );
        assert!(err.to_string().contains("missing.tdb"), "{err}");

        let err = Tdb::open("bad\0name", 0, TdbFlags::DEFAULT, CREATE, 0o600).unwrap_err();
        assert_eq!(err.code, TdbErrorCode::Einval);

        // libtdb refuses a second handle on the same file in one process: closing either
        // would drop the other's fcntl locks.
        let path = dir.path("once.tdb");
        let first = open(&path, TdbFlags::DEFAULT);
        let err = Tdb::open(&path, 0, TdbFlags::DEFAULT, CREATE, 0o600).unwrap_err();
        assert_eq!(err.errno, Some(libc::EBUSY), "{err:?}");
        drop(first);
        drop(open(&path, TdbFlags::DEFAULT));

        // MUTEX_LOCKING with NOMMAP is invalid; the log hook reports why, with the name.
        take_captured();
        let flags = TdbFlags::CLEAR_IF_FIRST | TdbFlags::MUTEX_LOCKING | TdbFlags::NOMMAP;
        let err = Tdb::open(dir.path("bad.tdb"), 0, flags, CREATE, 0o600).unwrap_err();
        assert_eq!(err.code, TdbErrorCode::Einval, "{err:?}");
        if cfg!(ctdb_tdb_log_shim) {
            let logged = take_captured();
            let expected = format!(
                "tdb({0}): tdb_open_ex: invalid flags for {0}",
                dir.path("bad.tdb").display()
            );
            assert!(
                logged.iter().any(|l| l.starts_with(&expected)),
                "{logged:?}"
            );
        }

        let internal = Tdb::open_internal(0, TdbFlags::DEFAULT).unwrap();
        internal.store(b"k", b"v", StoreMode::Replace).unwrap();
        assert_eq!(internal.fetch(b"k").unwrap().unwrap(), b"v");
        assert_eq!(internal.fd(), -1);
        assert_eq!(internal.name().to_bytes(), b"__TDB_INTERNAL__");
    }

    #[test]
    fn housekeeping_calls() {
        let dir = TempDir::new("housekeeping");
        let path = dir.path("h.tdb");
        let tdb = open(&path, volatile_flags());
        assert_eq!(tdb.name().to_bytes(), path.as_os_str().as_bytes());
        assert!(tdb.fd() >= 0);
        // SAFETY: reading the descriptor flags of a descriptor the handle owns.
        let fd_flags = unsafe { libc::fcntl(tdb.fd(), libc::F_GETFD) };
        assert_ne!(fd_flags & libc::FD_CLOEXEC, 0, "opened close-on-exec");
        assert_eq!(tdb.hash_size(), 1000);
        assert!(tdb
            .flags()
            .contains(TdbFlags::INCOMPATIBLE_HASH | TdbFlags::NOSYNC));
        tdb.set_max_dead(25);

        let value = vec![7u8; 1000];
        for i in 0..200u32 {
            tdb.store(&i.to_le_bytes(), &value, StoreMode::Replace)
                .unwrap();
        }
        let grown = tdb.map_size();
        for i in 0..200u32 {
            tdb.delete(&i.to_le_bytes()).unwrap();
        }
        assert!(tdb.freelist_size().unwrap() >= 1);
        tdb.store(b"survivor", b"x", StoreMode::Replace).unwrap();
        tdb.repack().unwrap();
        assert_eq!(
            tdb.freelist_size().unwrap(),
            1,
            "one free block after repack"
        );
        assert!(grown > 200_000);
        assert_eq!(tdb.fetch(b"survivor").unwrap().unwrap(), b"x");
        assert!(tdb.summary().unwrap().contains("Number of records: 1"));

        tdb.freelist_lock_nonblock().unwrap();
        tdb.freelist_unlock().unwrap();

        tdb.add_flags(TdbFlags::NOLOCK);
        assert!(tdb.flags().contains(TdbFlags::NOLOCK));
        tdb.remove_flags(TdbFlags::NOLOCK);
        assert!(!tdb.flags().contains(TdbFlags::NOLOCK));
        // with_flags leaves flags that were already set alone.
        tdb.with_flags(TdbFlags::NOSYNC | TdbFlags::NOLOCK, |t| {
            assert!(t.flags().contains(TdbFlags::NOLOCK));
        });
        assert!(tdb.flags().contains(TdbFlags::NOSYNC));
        assert!(!tdb.flags().contains(TdbFlags::NOLOCK));
    }

    #[test]
    fn flags_debug_lists_names() {
        let flags = TdbFlags::from_bits(0x1c41 | 0x8000_0000);
        assert_eq!(
            format!("{flags:?}"),
            "TdbFlags(0x80001c41: CLEAR_IF_FIRST|NOSYNC|DISALLOW_NESTING|INCOMPATIBLE_HASH|MUTEX_LOCKING|0x80000000)"
        );
        assert_eq!(format!("{:?}", TdbFlags::DEFAULT), "TdbFlags(0x0)");
        for code in 0..15u32 {
            assert_eq!(u32::from(TdbErrorCode::from(code)), code);
        }
    }
}
