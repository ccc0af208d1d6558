//! How a child stops: SIGTERM (sent by the stopping parent, or as the parent-death signal), SIGINT
//! and SIGHUP end its echo, and the connection closes the way the client expects: what was echoed
//! is delivered, then FIN.
//!
//! The handler sets a flag the echo loops read before every read, and wakes a loop that is waiting:
//! it is installed without SA_RESTART, so a blocked read returns EINTR, and it sets a 1 ms receive
//! timeout (setsockopt is async-signal-safe), so a read that was about to block returns within a
//! millisecond instead; no window is left for a lost wake-up. It does not shut the socket down:
//! once the receiving side is shut, data the client is still sending would draw a reset, which
//! throws away the echo still queued for it (`connection` closes with a lingering close instead).
//! Writes never block (see `echo`); once stopping, a client that reads nothing of its echo is given
//! 1 s. SIGUSR1 is ignored (`pkill -USR1 forkecho` reaches the children too, and its default action
//! would kill them); SIGCHLD goes back to the default. `--max-duration` works the same way, from a
//! timer's SIGALRM; `stopped` and `expired` tell the close line which it was. With `--control`,
//! SIGUSR2 (the control socket's `reset`) stops it too, and `reset` says the connection is to end
//! with a reset.

use std::io;
use std::os::fd::{BorrowedFd, RawFd};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, ppoll};
use nix::sys::signal::{SigmaskHow, sigprocmask};
use nix::sys::time::TimeSpec;

use crate::testhooks::{self, Hook};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::Duration;

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

/// The connection's fd, for the handler to wake; -1 when there is none (any more). Every child
/// writes it, so the page it is on becomes one of the child's own: named for `hot.order`, which
/// has the linker put it beside data every child writes anyway.
#[unsafe(export_name = "forkecho_child_stop_socket")]
static SOCKET: AtomicI32 = AtomicI32::new(-1);
/// Whether a stop signal closed the connection.
static STOPPED: AtomicBool = AtomicBool::new(false);
/// Whether `--max-duration` closed it.
static EXPIRED: AtomicBool = AtomicBool::new(false);
/// Whether the control socket's `reset` did (SIGUSR2, with `--control`).
static RESET: AtomicBool = AtomicBool::new(false);

/// Replaces every handler the parent installed, while its signals are still blocked. With
/// `--control` (`control`), SIGUSR2 stops the echo too, to end the connection with a reset.
#[unsafe(link_section = ".text.hot.child")]
pub fn install(socket: RawFd, control: bool) {
    SOCKET.store(socket, Ordering::Release);
    let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for signal in crate::signals::STOP {
        handle(signal);
    }
    if control {
        handle(Signal::SIGUSR2);
    }
    // SAFETY: SIG_IGN and SIG_DFL run no code of ours.
    let _ = unsafe { sigaction(Signal::SIGUSR1, &ignore) };
    // SAFETY: as above.
    let _ = unsafe { sigaction(Signal::SIGCHLD, &default) };
}

/// Arranges for the echo on `socket` to end `after` from now (`--max-duration`): a SIGALRM from
/// a one-shot ITIMER_REAL, handled like a stop signal.
pub fn expire_after(socket: RawFd, after: Duration) {
    SOCKET.store(socket, Ordering::Release);
    handle(Signal::SIGALRM);
    let timer = nix::libc::itimerval {
        it_interval: nix::libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        },
        it_value: nix::libc::timeval {
            tv_sec: after.as_secs() as nix::libc::time_t,
            tv_usec: after.subsec_micros() as nix::libc::suseconds_t,
        },
    };
    // SAFETY: setitimer reads the struct above and writes nothing (no old value asked for).
    unsafe { nix::libc::setitimer(nix::libc::ITIMER_REAL, &timer, std::ptr::null_mut()) };
}

/// Installs `on_signal` for `signal`, without SA_RESTART: a read blocked when it comes must
/// return (EINTR).
fn handle(signal: Signal) {
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: on_signal is async-signal-safe: atomic stores and setsockopt(2) only.
    let _ = unsafe { sigaction(signal, &action) };
}

/// poll(2) on `fds` for up to `timeout` (None: no limit), but never past a stop: the signals
/// that stop the echo are blocked from before `requested` is looked at until ppoll(2) unblocks
/// them for the wait, so one that comes in between interrupts the wait (EINTR) instead of being
/// missed until the timeout. A stop already there is EINTR at once; the caller looks again.
pub fn poll(fds: &mut [PollFd<'_>], timeout: Option<Duration>) -> nix::Result<i32> {
    let mut stopping = SigSet::empty();
    for signal in crate::signals::STOP
        .into_iter()
        .chain([Signal::SIGALRM, Signal::SIGUSR2])
    {
        stopping.add(signal);
    }
    let mut waiting = SigSet::empty();
    // sigprocmask fails only for an invalid `how`, which is a constant here.
    let _ = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&stopping), Some(&mut waiting));
    let polled = match requested() {
        true => Err(Errno::EINTR),
        false => {
            if testhooks::take(Hook::StopBeforeWait) {
                let _ = nix::sys::signal::raise(Signal::SIGTERM);
            }
            ppoll(fds, timeout.map(TimeSpec::from), Some(waiting))
        }
    };
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&waiting), None);
    polled
}

/// Waits up to `timeout` for `events` on `fd`, as `deadline::poll_one` does, but through `poll`:
/// false if the time ran out, true if the events came or a signal ended the wait.
pub fn wait(fd: BorrowedFd<'_>, events: PollFlags, timeout: Option<Duration>) -> io::Result<bool> {
    let mut fds = [PollFd::new(fd, events)];
    match poll(&mut fds, timeout) {
        Ok(0) => Ok(false),
        Ok(_) | Err(Errno::EINTR) => Ok(true),
        Err(errno) => Err(errno.into()),
    }
}

/// Whether a stop signal ended the connection.
pub fn stopped() -> bool {
    STOPPED.load(Ordering::Acquire)
}

/// Whether `--max-duration` ended the connection.
pub fn expired() -> bool {
    EXPIRED.load(Ordering::Acquire)
}

/// Whether the control socket's `reset` ended the connection (it counts as a stop too).
pub fn reset() -> bool {
    RESET.load(Ordering::Acquire)
}

/// Whether a stop signal or `--max-duration` has ended the echo.
#[unsafe(link_section = ".text.hot.child")]
pub fn requested() -> bool {
    stopped() || expired()
}

/// The UDP worker's one socket, on which it waits in recvmsg(2): a stop makes that wait return
/// within 1 ms, as it does a connection's read.
pub fn watch(socket: RawFd) {
    SOCKET.store(socket, Ordering::Release);
}

/// Call before the connection's fd is closed: from then on a stop signal has nothing to wake,
/// and must not touch whatever else might get the same fd number.
pub fn forget_socket() {
    SOCKET.store(-1, Ordering::Release);
}

/// Records which it was (SIGALRM: `--max-duration`; the others: a stop), then makes a read
/// about to block return within 1 ms (a blocked read or poll has already returned EINTR).
extern "C" fn on_signal(signal: nix::libc::c_int) {
    match signal {
        nix::libc::SIGALRM => EXPIRED.store(true, Ordering::Release),
        nix::libc::SIGUSR2 => {
            RESET.store(true, Ordering::Release);
            STOPPED.store(true, Ordering::Release);
        }
        _ => STOPPED.store(true, Ordering::Release),
    }
    let fd = SOCKET.load(Ordering::Acquire);
    if fd < 0 {
        return;
    }
    let timeout = nix::libc::timeval {
        tv_sec: 0,
        tv_usec: 1_000,
    };
    // The fd is the connection's until `forget_socket`, which runs before it is closed.
    // SAFETY: setsockopt is async-signal-safe and only reads the timeval on this stack.
    unsafe {
        nix::libc::setsockopt(
            fd,
            nix::libc::SOL_SOCKET,
            nix::libc::SO_RCVTIMEO,
            (&raw const timeout).cast(),
            size_of::<nix::libc::timeval>() as nix::libc::socklen_t,
        )
    };
}
