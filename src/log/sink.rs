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
//!   not at all). Opened before privileges are dropped: afterwards a pipe of root's could not be
//!   opened anew. Where /proc is missing, a pipe is written with pwritev2(RWF_NOWAIT) (Linux 6.4
//!   and later), and where that is refused too (or for a terminal), one warning line at startup
//!   says that log lines may wait for stderr's reader;
//! - anything else (a regular file, /dev/null): plain writes, which do not wait on a reader. A
//!   file at its size limit (RLIMIT_FSIZE) fails the write with EFBIG instead of killing the
//!   process with SIGXFSZ, which is ignored.

use std::os::fd::{AsRawFd, BorrowedFd, IntoRawFd};
use std::ptr;
use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicU8, AtomicU64, Ordering};
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

/// Where lines go (fd 2, or a private non-blocking description of it), and how (`PLAIN`,
/// `SOCKET`: send with MSG_DONTWAIT, `NOWAIT`: pwritev2 with RWF_NOWAIT).
static FD: AtomicI32 = AtomicI32::new(2);
static HOW: AtomicU8 = AtomicU8::new(PLAIN);
const PLAIN: u8 = 0;
const SOCKET: u8 = 1;
const NOWAIT: u8 = 2;

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
    HOW.store(PLAIN, Ordering::Release);
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
        HOW.store(SOCKET, Ordering::Release);
    } else if kind == SFlag::S_IFIFO || terminal {
        let flags = OFlag::O_WRONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC | OFlag::O_NOCTTY;
        match open("/proc/self/fd/2", flags, Mode::empty()) {
            Ok(private) => FD.store(private.into_raw_fd(), Ordering::Release),
            Err(_) if kind == SFlag::S_IFIFO && nowait_works() => {
                HOW.store(NOWAIT, Ordering::Release);
            }
            Err(err) => crate::logln!(
                "warning: log lines may wait for whoever reads stderr: it is a {} that cannot \
                 be reopened non-blocking through /proc/self/fd/2 ({err}){}",
                if terminal { "terminal" } else { "pipe" },
                if terminal {
                    ""
                } else {
                    " and this kernel refuses RWF_NOWAIT on pipes"
                }
            ),
        }
    }
}

/// Whether pwritev2 takes RWF_NOWAIT on a pipe: from Linux 6.4 on. (An empty write cannot tell:
/// the kernel returns 0 for it before it looks at the flags.)
fn nowait_works() -> bool {
    let Ok(uname) = nix::sys::utsname::uname() else {
        return false;
    };
    let release = uname.release().to_string_lossy().into_owned();
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let (major, minor) = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    (major, minor) >= (6, 4)
}

/// Writes `line` without waiting for the reader (see the module docs); true if all of it went.
pub fn write(line: &[u8]) -> bool {
    let fd = FD.load(Ordering::Acquire);
    // SAFETY: borrowed for this line only; the fd stays open for the process's life.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    match HOW.load(Ordering::Acquire) {
        SOCKET => whole(fd, line, |fd, rest| {
            let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
            nix::sys::socket::send(fd.as_raw_fd(), rest, flags)
        }),
        NOWAIT => whole(fd, line, |fd, rest| {
            let iov = nix::libc::iovec {
                iov_base: rest.as_ptr().cast_mut().cast(),
                iov_len: rest.len(),
            };
            // SAFETY: one iovec over `rest`, which pwritev2 only reads.
            let done =
                unsafe { nix::libc::pwritev2(fd.as_raw_fd(), &iov, 1, -1, nix::libc::RWF_NOWAIT) };
            Errno::result(done).map(|n| n as usize)
        }),
        _ => whole(fd, line, |fd, rest| nix::unistd::write(fd, rest)),
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
