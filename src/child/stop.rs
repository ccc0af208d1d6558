//! How a child stops: SIGTERM (sent by the stopping parent, or as the parent-death signal),
//! SIGINT and SIGHUP shut its connection down.
//!
//! shutdown(2) is async-signal-safe, and it wakes a read or write blocked on the socket with no
//! window for a lost wake-up. The kernel still sends what was already written, then FIN, so the
//! client sees a clean close, and the echo loop ends as if the client had closed; `stopped` then
//! tells the close line it was a shutdown. SIGUSR1 is ignored (`pkill -USR1 forkecho` reaches the
//! children too, and its default action would kill them); SIGCHLD goes back to the default.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

/// The connection's fd, for the handler to shut down; -1 when there is none (any more).
static SOCKET: AtomicI32 = AtomicI32::new(-1);
/// Whether a stop signal closed the connection.
static STOPPED: AtomicBool = AtomicBool::new(false);

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
    let fd = SOCKET.load(Ordering::Acquire);
    if fd >= 0 {
        // SAFETY: shutdown(2) is async-signal-safe; the fd is the connection's until
        // `forget_socket`, which runs before it is closed.
        unsafe { nix::libc::shutdown(fd, nix::libc::SHUT_RDWR) };
    }
}
