//! How a child stops: SIGTERM (sent by the stopping parent, or as the parent-death signal),
//! SIGINT and SIGHUP shut its connection down.
//!
//! shutdown(2) is async-signal-safe, and it wakes a read or write blocked on the socket with no
//! window for a lost wake-up. The kernel still sends what was already written, then FIN, so the
//! client sees a clean close, and the echo loop ends as if the client had closed; `stopped` then
//! tells the close line it was a shutdown. SIGUSR1 is ignored (`pkill -USR1 forkecho` reaches the
//! children too, and its default action would kill them); SIGCHLD goes back to the default.
//! `--max-duration` works the same way: a timer's SIGALRM shuts the connection down, and
//! `expired` tells the close line.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::Duration;

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

/// The connection's fd, for the handler to shut down; -1 when there is none (any more).
static SOCKET: AtomicI32 = AtomicI32::new(-1);
/// Whether a stop signal closed the connection.
static STOPPED: AtomicBool = AtomicBool::new(false);
/// Whether `--max-duration` closed it.
static EXPIRED: AtomicBool = AtomicBool::new(false);

/// Replaces every handler the parent installed, while its signals are still blocked.
pub fn install(socket: RawFd) {
    SOCKET.store(socket, Ordering::Release);
    let stop = SigAction::new(
        SigHandler::Handler(on_stop),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for signal in crate::parent::signals::STOP {
        // SAFETY: on_stop is async-signal-safe: shutdown(2) and atomic stores only.
        let _ = unsafe { sigaction(signal, &stop) };
    }
    // SAFETY: SIG_IGN and SIG_DFL run no code of ours.
    let _ = unsafe { sigaction(Signal::SIGUSR1, &ignore) };
    // SAFETY: as above.
    let _ = unsafe { sigaction(Signal::SIGCHLD, &default) };
}

/// Arranges for `socket` to be shut down `after` from now (`--max-duration`): a SIGALRM from
/// a one-shot ITIMER_REAL, handled like a stop signal.
pub fn expire_after(socket: RawFd, after: Duration) {
    SOCKET.store(socket, Ordering::Release);
    let expire = SigAction::new(
        SigHandler::Handler(on_expire),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    // SAFETY: on_expire is async-signal-safe: shutdown(2) and atomic stores only.
    let _ = unsafe { sigaction(Signal::SIGALRM, &expire) };
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

/// Whether `--max-duration` closed the connection.
pub fn expired() -> bool {
    EXPIRED.load(Ordering::Acquire)
}

extern "C" fn on_expire(_signal: nix::libc::c_int) {
    EXPIRED.store(true, Ordering::Release);
    shut_down();
}

/// Call before the connection's fd is closed: from then on a stop signal has nothing to shut
/// down, and must not shut down whatever else might get the same fd number.
pub fn forget_socket() {
    SOCKET.store(-1, Ordering::Release);
}

/// Whether a stop signal closed the connection.
pub fn stopped() -> bool {
    STOPPED.load(Ordering::Acquire)
}

extern "C" fn on_stop(_signal: nix::libc::c_int) {
    STOPPED.store(true, Ordering::Release);
    shut_down();
}

/// Async-signal-safe: one load and shutdown(2).
fn shut_down() {
    let fd = SOCKET.load(Ordering::Acquire);
    if fd >= 0 {
        // SAFETY: shutdown(2) is async-signal-safe; the fd is the connection's until
        // `forget_socket`, which runs before it is closed.
        unsafe { nix::libc::shutdown(fd, nix::libc::SHUT_RDWR) };
    }
}
