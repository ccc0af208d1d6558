//! Signal handling: in the parent, handlers record and wake and the main loop does the work; in
//! a child, a stop signal closes the connection.
//!
//! Handlers installed with signal-hook use SA_RESTART, so a parent blocked in accept(2) would
//! never notice them. Instead every handler writes one byte to a non-blocking self-pipe that the
//! main loop polls beside the listener. The handlers only do async-signal-safe work: SIGCHLD
//! reaps into `reaper::exits()`; SIGTERM, SIGINT and SIGHUP count a stop request; SIGUSR1 asks for
//! a statistics line. Around fork the parent blocks these signals (`block`) so a signal can never
//! run the parent's handlers in a half-made child; the child installs its own (`prepare_child`)
//! before it unblocks them.
//!
//! In a child, SIGTERM (sent by the stopping parent, or as the parent-death signal), SIGINT and
//! SIGHUP call shutdown(2) on the connection: async-signal-safe, and it wakes a read or write
//! blocked on the socket with no window for a lost wake-up. The kernel still sends what was
//! already written, then FIN, so the client sees a clean close.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal, sigaction};
use nix::unistd::Pid;

use crate::reaper;

/// Signals that stop the server (in the parent) or close the connection (in a child).
const STOP: [Signal; 3] = [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP];
/// Every signal the parent handles, and so blocks around fork.
const HANDLED: [Signal; 5] = [
    Signal::SIGCHLD,
    Signal::SIGUSR1,
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
];

/// Write end of the self-pipe, for the handlers. -1 until `install`.
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);
/// How many stop signals (SIGTERM, SIGINT) have arrived.
static STOPS: AtomicUsize = AtomicUsize::new(0);
/// The last stop signal's number.
static STOP_SIGNAL: AtomicI32 = AtomicI32::new(0);
/// Set by SIGUSR1, cleared when the main loop has logged the statistics.
static STATS_WANTED: AtomicBool = AtomicBool::new(false);

/// In a child: its connection's fd, for the stop handler to shut down. -1 until set.
static CHILD_SOCKET: AtomicI32 = AtomicI32::new(-1);
/// In a child: whether a stop signal closed the connection.
static CHILD_STOPPED: AtomicBool = AtomicBool::new(false);

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
    reaper::init()?;
    // The action only calls waitpid(2), touches atomics and writes to a pipe: no allocation, no
    // locks, no panics.
    // SAFETY: the action is async-signal-safe.
    unsafe { signal_hook::low_level::register(Signal::SIGCHLD as i32, on_sigchld) }
        .context("unable to install the SIGCHLD handler")?;
    for signal in STOP {
        // SAFETY: the action only stores to atomics and writes to a pipe.
        unsafe { signal_hook::low_level::register(signal as i32, move || on_stop(signal)) }
            .with_context(|| format!("unable to install the {} handler", signal.as_str()))?;
    }
    // SAFETY: the action only stores to an atomic and writes to a pipe.
    unsafe { signal_hook::low_level::register(Signal::SIGUSR1 as i32, on_usr1) }
        .context("unable to install the SIGUSR1 handler")?;
    Ok(Wakeup { read, write })
}

fn on_usr1() {
    STATS_WANTED.store(true, Ordering::Release);
    wake();
}

/// Whether SIGUSR1 asked for statistics since the last call.
pub fn stats_requested() -> bool {
    STATS_WANTED.swap(false, Ordering::AcqRel)
}

fn on_sigchld() {
    reaper::exits().reap();
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

/// In a child, while the signals are still blocked: replaces every parent handler. Stop signals
/// shut `socket` down; SIGUSR1 is ignored (`pkill -USR1 forkecho` reaches the children too, and
/// its default action would kill them); SIGCHLD goes back to the default. Then asks for SIGTERM
/// when the parent dies, and returns false if the parent is already gone (it died before the
/// request took effect), in which case the child should not serve at all.
pub fn prepare_child(_still_blocked: &Blocked, socket: RawFd, parent: Pid) -> bool {
    CHILD_SOCKET.store(socket, Ordering::Release);
    let stop = SigAction::new(
        SigHandler::Handler(on_child_stop),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for signal in STOP {
        // SAFETY: on_child_stop is async-signal-safe: shutdown(2) and atomic stores only.
        let _ = unsafe { sigaction(signal, &stop) };
    }
    // SAFETY: SIG_IGN and SIG_DFL run no code of ours.
    let _ = unsafe { sigaction(Signal::SIGUSR1, &ignore) };
    // SAFETY: as above.
    let _ = unsafe { sigaction(Signal::SIGCHLD, &default) };
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGTERM);
    // If the parent died before prctl, no signal will come: we were reparented already.
    nix::unistd::getppid() == parent
}

extern "C" fn on_child_stop(_signal: nix::libc::c_int) {
    CHILD_STOPPED.store(true, Ordering::Release);
    let fd = CHILD_SOCKET.load(Ordering::Acquire);
    // SAFETY: shutdown(2) is async-signal-safe; on a stale or invalid fd it only fails.
    unsafe { nix::libc::shutdown(fd, nix::libc::SHUT_RDWR) };
}

/// In a child: whether a stop signal closed the connection.
pub fn child_stopped() -> bool {
    CHILD_STOPPED.load(Ordering::Acquire)
}
