//! Where log lines go: stderr, without ever waiting for it.
//!
//! A harness that captures stderr and never reads it, a slow terminal or a stuck journald stream
//! fills stderr's buffer; a blocking write would then stop every child in its close line and the
//! parent in its accept line. So lines are written without waiting: a line that cannot be written
//! at once is dropped and counted (`Drops`), and the next line that gets through is followed by
//! one saying how many were lost. fd 2 itself is never made non-blocking: its open file
//! description is shared with whoever started forkecho. Instead `init` chooses by what fd 2 is:
//! - a socket (journald): send(2) with MSG_DONTWAIT, which is per call;
//! - a pipe, FIFO or terminal: a private description of the same file, opened through
//!   /proc/self/fd/2 with O_NONBLOCK (a pipe write of at most PIPE_BUF bytes then goes in whole or
//!   not at all);
//! - anything else (a regular file, /dev/null): plain writes, which do not wait on a reader. A
//!   file at its size limit (RLIMIT_FSIZE) fails the write with EFBIG instead of killing the
//!   process with SIGXFSZ, which is ignored.

use std::os::fd::{AsRawFd, BorrowedFd, IntoRawFd};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU64, Ordering};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{OFlag, open};
use nix::poll::PollFlags;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use nix::sys::socket::MsgFlags;
use nix::sys::stat::{Mode, SFlag, fstat};

use crate::deadline;

/// How a line that was only partly taken is finished: up to this many waits of `PART_WAIT`
/// for room, so that lines stay whole without letting a stuck reader hold us for long.
const PART_WAITS: u32 = 5;
const PART_WAIT: Duration = Duration::from_millis(10);

/// Where lines go (fd 2, or a private non-blocking description of it), and whether that is a
/// socket (written with send and MSG_DONTWAIT).
static FD: AtomicI32 = AtomicI32::new(2);
static SOCKET: AtomicBool = AtomicBool::new(false);

/// Lines that could not be written.
pub struct Drops {
    /// Since the server started.
    pub total: AtomicU64,
    /// Not yet reported by a `log-dropped` line.
    unreported: AtomicU64,
}

impl Drops {
    pub const fn new() -> Drops {
        Drops {
            total: AtomicU64::new(0),
            unreported: AtomicU64::new(0),
        }
    }
}

/// This process's own counts, until `share` points at ones shared with the children.
static LOCAL: Drops = Drops::new();
static SHARED: AtomicPtr<Drops> = AtomicPtr::new(ptr::null_mut());

/// The descriptor lines are written to.
pub fn fd() -> std::os::fd::RawFd {
    FD.load(Ordering::Relaxed)
}

/// Counts drops in `drops` from now on: memory shared by the parent and every child, so that
/// the stats line counts the children's lost close lines too. Call before the first fork.
pub fn share(drops: &'static Drops) {
    SHARED.store(ptr::from_ref(drops).cast_mut(), Ordering::Release);
}

fn drops() -> &'static Drops {
    let shared = SHARED.load(Ordering::Acquire);
    if shared.is_null() {
        &LOCAL
    } else {
        // Set by `share` from a `&'static Drops`, and only ever used through `&`.
        // SAFETY: a valid Drops for the rest of the process.
        unsafe { &*shared }
    }
}

/// Chooses how to write to fd 2 (see the module docs); call at startup, and again if fd 2 is
/// replaced. Ignores SIGXFSZ.
pub fn init() {
    let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
    // SAFETY: SIG_IGN runs no code of ours.
    let _ = unsafe { sigaction(Signal::SIGXFSZ, &ignore) };
    let previous = FD.swap(2, Ordering::AcqRel);
    SOCKET.store(false, Ordering::Release);
    if previous != 2 {
        // The private description an earlier `init` opened, used by nothing else.
        // SAFETY: closing an fd this module owns.
        unsafe { nix::libc::close(previous) };
    }
    // SAFETY: borrowed for fstat only; a closed fd 2 gives EBADF, and plain writes then fail.
    let Ok(stat) = fstat(unsafe { BorrowedFd::borrow_raw(2) }) else {
        return;
    };
    let kind = SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT;
    // SAFETY: isatty only queries fd 2.
    let terminal = unsafe { nix::libc::isatty(2) } == 1;
    if kind == SFlag::S_IFSOCK {
        SOCKET.store(true, Ordering::Release);
    } else if kind == SFlag::S_IFIFO || terminal {
        let flags = OFlag::O_WRONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC | OFlag::O_NOCTTY;
        // Where /proc is missing or the reader has gone, plain writes are left.
        if let Ok(private) = open("/proc/self/fd/2", flags, Mode::empty()) {
            FD.store(private.into_raw_fd(), Ordering::Release);
        }
    }
}

/// Writes `line` without waiting for the reader (see the module docs); true if all of it went.
pub fn write(line: &[u8]) -> bool {
    let fd = FD.load(Ordering::Acquire);
    // SAFETY: borrowed for this line only; the fd stays open for the process's life.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    match SOCKET.load(Ordering::Acquire) {
        true => whole(fd, line, |fd, rest| {
            let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
            nix::sys::socket::send(fd.as_raw_fd(), rest, flags)
        }),
        false => whole(fd, line, |fd, rest| nix::unistd::write(fd, rest)),
    }
}

/// Writes with `op`. A line nothing of which fits is dropped at once (EAGAIN, from a
/// non-blocking fd or send); one that went in part (a terminal or a socket short of room) is
/// finished if room comes within `PART_WAITS` short waits, so that it stays whole. On a plain fd
/// `op` simply blocks, as writes to a file do.
fn whole(
    fd: BorrowedFd<'_>,
    line: &[u8],
    op: impl Fn(BorrowedFd<'_>, &[u8]) -> nix::Result<usize>,
) -> bool {
    let mut rest = line;
    let mut waits = 0;
    while !rest.is_empty() {
        match op(fd, rest) {
            Ok(0) => return false,
            Ok(n) => rest = &rest[n..],
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) if rest.len() < line.len() && waits < PART_WAITS => {
                waits += 1;
                let _ = deadline::poll_one(&fd, PollFlags::POLLOUT, Some(PART_WAIT));
            }
            Err(_) => return false,
        }
    }
    true
}

/// Counts a line that could not be written.
pub fn dropped() {
    let drops = drops();
    drops.total.fetch_add(1, Ordering::Relaxed);
    drops.unreported.fetch_add(1, Ordering::Relaxed);
}

/// Lines dropped and not yet reported, now taken for a report; 0 (with no write to the shared
/// counters) when there are none.
pub fn take_unreported() -> u64 {
    let drops = drops();
    match drops.unreported.load(Ordering::Relaxed) {
        0 => 0,
        _ => drops.unreported.swap(0, Ordering::AcqRel),
    }
}

/// Puts back `count` lines whose report could not be written either.
pub fn unreport(count: u64) {
    drops().unreported.fetch_add(count, Ordering::Relaxed);
}
