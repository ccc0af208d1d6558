//! The parent's signal handling: handlers record and wake; the main loop does the work.
//!
//! Handlers installed with signal-hook use SA_RESTART, so a parent blocked in accept(2) would
//! never notice them. Instead every handler writes one byte to a non-blocking self-pipe that the
//! main loop polls beside the listener. The handlers only do async-signal-safe work: SIGCHLD
//! reaps into `reaper::EXITS`; SIGTERM and SIGINT count a stop request. Around fork the parent
//! blocks these signals (`block`) so a signal can never run our handlers in a half-made child; the
//! child puts the default dispositions back (`reset_to_default`) before it unblocks them.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal, sigaction};

use crate::reaper;

/// The signals we handle, and so block around fork and reset in the child.
const HANDLED: [Signal; 3] = [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT];

/// Write end of the self-pipe, for the handlers. -1 until `install`.
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);
/// How many stop signals (SIGTERM, SIGINT) have arrived.
static STOPS: AtomicUsize = AtomicUsize::new(0);
/// The last stop signal's number.
static STOP_SIGNAL: AtomicI32 = AtomicI32::new(0);

/// The self-pipe the main loop polls: readable whenever a handler has run since the last `drain`.
pub struct Wakeup {
    read: OwnedFd,
    write: OwnedFd,
}

impl Wakeup {
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }

    /// Both ends, for the child to close.
    pub fn raw_fds(&self) -> [RawFd; 2] {
        [self.read.as_raw_fd(), self.write.as_raw_fd()]
    }

    /// Empties the pipe so the next poll sleeps until the next signal.
    pub fn drain(&self) {
        let mut buf = [0u8; 64];
        loop {
            match nix::unistd::read(&self.read, &mut buf) {
                Ok(n) if n == buf.len() => {}
                Err(Errno::EINTR) => {}
                _ => return,
            }
        }
    }
}

/// Creates the self-pipe and installs the handlers. Call once, before the first fork.
pub fn install() -> Result<Wakeup> {
    let (read, write) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)
        .context("unable to create the self-pipe")?;
    WAKE_FD.store(write.as_raw_fd(), Ordering::Release);
    // The action only calls waitpid(2), touches atomics and writes to a pipe: no allocation, no
    // locks, no panics.
    // SAFETY: the action is async-signal-safe.
    unsafe { signal_hook::low_level::register(Signal::SIGCHLD as i32, on_sigchld) }
        .context("unable to install the SIGCHLD handler")?;
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        // SAFETY: as above; the action only stores to atomics and writes to a pipe.
        unsafe { signal_hook::low_level::register(signal as i32, move || on_stop(signal)) }
            .with_context(|| format!("unable to install the {} handler", signal.as_str()))?;
    }
    Ok(Wakeup { read, write })
}

fn on_sigchld() {
    reaper::EXITS.reap();
    wake();
}

fn on_stop(signal: Signal) {
    STOP_SIGNAL.store(signal as i32, Ordering::Relaxed);
    STOPS.fetch_add(1, Ordering::Release);
    wake();
}

/// Makes the self-pipe readable. A full pipe (EAGAIN) already means a wake-up is pending.
fn wake() {
    let fd = WAKE_FD.load(Ordering::Acquire);
    let byte = 1u8;
    // The fd stays open for the parent's lifetime once set.
    // SAFETY: write(2) is async-signal-safe and reads one byte from a live stack variable.
    unsafe { nix::libc::write(fd, (&raw const byte).cast(), 1) };
}

/// The stop signal, if one has arrived, and how many have.
pub fn stop_requested() -> Option<(Signal, usize)> {
    match STOPS.load(Ordering::Acquire) {
        0 => None,
        n => Signal::try_from(STOP_SIGNAL.load(Ordering::Relaxed))
            .ok()
            .map(|signal| (signal, n)),
    }
}

/// The handled signals, blocked for as long as this guard lives; dropping it restores the mask.
#[must_use]
pub struct Blocked {
    previous: SigSet,
}

/// Blocks the handled signals: for fork, and whenever the main loop must not race a handler.
pub fn block() -> Blocked {
    let mut set = SigSet::empty();
    for signal in HANDLED {
        set.add(signal);
    }
    let mut previous = SigSet::empty();
    // sigprocmask fails only for an invalid `how`, which is a constant here.
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut previous))
        .expect("sigprocmask(SIG_BLOCK) with valid arguments");
    Blocked { previous }
}

impl Drop for Blocked {
    fn drop(&mut self) {
        let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&self.previous), None);
    }
}

/// In the child, while the signals are still blocked: back to the default dispositions, so a
/// SIGTERM sent to the child ends it and our handlers never run in it.
pub fn reset_to_default(_still_blocked: &Blocked) {
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for signal in HANDLED {
        // SAFETY: installing SIG_DFL replaces a handler; it cannot introduce unsafety.
        let _ = unsafe { sigaction(signal, &default) };
    }
}
