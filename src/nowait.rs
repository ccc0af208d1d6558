//! Writing to a descriptor someone else gave us (stderr for the log, stdout for the readiness
//! line) without ever waiting for its reader.
//!
//! A harness that captures a stream and never reads it, a terminal stopped with Ctrl-S or a stuck
//! journald stream fills its buffer; a blocking write would then stop the server. The descriptor
//! itself is never made non-blocking: its open file description is shared with whoever started
//! forkecho. `Target::open` chooses by what it is:
//! - a socket (journald): send(2) with MSG_DONTWAIT, which is per call;
//! - a pipe, FIFO or terminal: a private description of the same file, opened through
//!   /proc/self/fd/N with O_NONBLOCK (a pipe write of at most PIPE_BUF bytes then goes in whole
//!   or not at all). Opened before privileges are dropped: afterwards a pipe of root's could not
//!   be opened anew. Where /proc is missing, a pipe is written with pwritev2(RWF_NOWAIT) (Linux
//!   6.4 and later); where that is refused too, or for a terminal, `open` says what cannot be
//!   kept, for one warning line;
//! - anything else (a regular file, /dev/null): plain writes, which do not wait on a reader.
//!
//! Nothing here allocates or locks: the log writes through it from every process.

use std::os::fd::{AsRawFd, BorrowedFd, IntoRawFd, RawFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{OFlag, open};
use nix::poll::PollFlags;
use nix::sys::socket::MsgFlags;
use nix::sys::stat::{Mode, SFlag, fstat};

use crate::deadline;

/// How a line that was only partly taken is finished: up to this many waits of `PART_WAIT`
/// for room, so that lines stay whole without letting a stuck reader hold us for long.
const PART_WAITS: u32 = 5;
const PART_WAIT: Duration = Duration::from_millis(10);

/// How to write to a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum How {
    /// write(2): files, /dev/null, and whatever could not be made non-blocking.
    Plain = 0,
    /// send(2) with MSG_DONTWAIT.
    Socket = 1,
    /// pwritev2(2) with RWF_NOWAIT.
    NoWait = 2,
}

impl How {
    pub fn from_u8(value: u8) -> How {
        match value {
            1 => How::Socket,
            2 => How::NoWait,
            _ => How::Plain,
        }
    }
}

/// A descriptor to write to, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// `given`, or a private non-blocking description of it.
    pub fd: RawFd,
    pub how: How,
    /// The descriptor we were given.
    pub given: RawFd,
}

impl Target {
    /// Chooses how to write to `given` without waiting (see the module docs). The second value,
    /// when there is one, says why writes to it may wait after all, naming it `name`.
    pub fn open(given: RawFd, name: &str) -> (Target, Option<String>) {
        let mut target = Target {
            fd: given,
            how: How::Plain,
            given,
        };
        // SAFETY: borrowed for fstat only; a closed fd gives EBADF, and plain writes then fail.
        let Ok(stat) = fstat(unsafe { BorrowedFd::borrow_raw(given) }) else {
            return (target, None);
        };
        let kind = SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT;
        // SAFETY: isatty only queries the fd.
        let terminal = unsafe { nix::libc::isatty(given) } == 1;
        if kind == SFlag::S_IFSOCK {
            target.how = How::Socket;
        } else if kind == SFlag::S_IFIFO || terminal {
            let flags = OFlag::O_WRONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC | OFlag::O_NOCTTY;
            match open(
                format!("/proc/self/fd/{given}").as_str(),
                flags,
                Mode::empty(),
            ) {
                Ok(private) => target.fd = private.into_raw_fd(),
                Err(_) if kind == SFlag::S_IFIFO && nowait_works() => target.how = How::NoWait,
                Err(err) => {
                    let what = if terminal { "terminal" } else { "pipe" };
                    let kernel = match terminal {
                        true => "",
                        false => " and this kernel refuses RWF_NOWAIT on pipes",
                    };
                    let why = format!(
                        "{name} is a {what} that cannot be reopened non-blocking through \
                         /proc/self/fd/{given} ({err}){kernel}"
                    );
                    return (target, Some(why));
                }
            }
        }
        (target, None)
    }

    /// The target on its own descriptor: a private description `open` made is put on `given`
    /// (dup2) and its extra descriptor closed, so that no descriptor is added. For a stream this
    /// process may repoint (stdout, which goes to /dev/null once the readiness line is out):
    /// whoever else shares the original description keeps it as it was.
    pub fn in_place(self) -> Target {
        if self.fd == self.given {
            return self;
        }
        // dup2 replaces `given` atomically with our private description.
        // SAFETY: nothing holds `given` as an object, so nothing is left with a stale fd.
        let moved = unsafe { nix::libc::dup2(self.fd, self.given) } == self.given;
        // SAFETY: the private descriptor `open` made, used by nothing else.
        unsafe { nix::libc::close(self.fd) };
        Target {
            fd: self.given,
            how: if moved { self.how } else { How::Plain },
            given: self.given,
        }
    }

    /// Writes `bytes` without waiting for the reader; true if all of them went. Nothing of
    /// which fits is dropped at once (EAGAIN); what went in part (a terminal or a socket short of
    /// room) is finished if room comes within `PART_WAITS` short waits, so that lines stay
    /// whole. A plain fd simply blocks, as writes to a file do.
    #[unsafe(link_section = ".text.hot.child")]
    pub fn write(&self, bytes: &[u8]) -> bool {
        // SAFETY: borrowed for this write only; the fd stays open while the target is used.
        let fd = unsafe { BorrowedFd::borrow_raw(self.fd) };
        let mut rest = bytes;
        let mut waits = 0;
        while !rest.is_empty() {
            match self.write_now(fd, rest) {
                Ok(0) => return false,
                Ok(n) => rest = &rest[n..],
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) if rest.len() < bytes.len() && waits < PART_WAITS => {
                    waits += 1;
                    let _ = deadline::poll_one(&fd, PollFlags::POLLOUT, Some(PART_WAIT));
                }
                Err(_) => return false,
            }
        }
        true
    }

    #[unsafe(link_section = ".text.hot.child")]
    fn write_now(&self, fd: BorrowedFd<'_>, bytes: &[u8]) -> nix::Result<usize> {
        match self.how {
            How::Socket => {
                let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
                nix::sys::socket::send(fd.as_raw_fd(), bytes, flags)
            }
            How::NoWait => {
                let iov = nix::libc::iovec {
                    iov_base: bytes.as_ptr().cast_mut().cast(),
                    iov_len: bytes.len(),
                };
                // SAFETY: one iovec over `bytes`, which pwritev2 only reads.
                let done = unsafe {
                    nix::libc::pwritev2(fd.as_raw_fd(), &iov, 1, -1, nix::libc::RWF_NOWAIT)
                };
                Errno::result(done).map(|n| n as usize)
            }
            How::Plain => nix::unistd::write(fd, bytes),
        }
    }

    /// Closes the private description, if `open` made one.
    pub fn close(self) {
        if self.fd != self.given {
            // A descriptor `open` made, used by nothing else.
            // SAFETY: closing an fd this target owns.
            unsafe { nix::libc::close(self.fd) };
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
