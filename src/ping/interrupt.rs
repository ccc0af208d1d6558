//! Ctrl-C during `forkecho ping`: the handler sets a flag (`interrupted`), every wait is a poll
//! the signal cuts short, and the run ends with its summary. Written by the handler alone; read
//! by every probe loop (`mod`, `probe`, `link`, `udp`).

use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

extern "C" fn on_interrupt(_: nix::libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// Ctrl-C ends the run with its summary: the handler sets a flag, and every wait is a poll,
/// which the signal interrupts.
pub fn on_ctrl_c() {
    let action = SigAction::new(
        SigHandler::Handler(on_interrupt),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: on_interrupt only stores to an atomic, which is async-signal-safe.
    let _ = unsafe { sigaction(Signal::SIGINT, &action) };
}
