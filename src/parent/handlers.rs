//! The parent's signals: handlers record and wake, and the main loop does the work.
//!
//! Handlers are installed with SA_RESTART (signal-hook's, and SIGCHLD's own sigaction), so a parent
//! blocked in accept(2) would never notice them. Instead every handler writes one byte to a
//! non-blocking self-pipe that the main loop polls beside the listeners. The handlers only do
//! async-signal-safe work: SIGCHLD reaps into `reaper::exits()`; SIGTERM, SIGINT and SIGHUP count a
//! stop request; SIGUSR1 asks for a statistics line. The loop takes a wake-up with `Wakeup::take`:
//! it clears the pipe first and reads the flags second (PostgreSQL's ServerLoop: `ResetLatch`, then
//! the `pending_*` flags), so a signal that lands in between leaves its flag for this look or its
//! byte for the next poll, and is never lost. Around fork the parent blocks these signals
//! (`block`): no handler of the parent's can run in a half-made child, and no child can be reaped
//! before it is in the table.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal, sigaction};

use super::reaper;
use crate::memory;
use crate::signals::STOP;
use crate::testhooks::{self, Hook};

/// Every signal the parent handles, and so blocks around fork.
const HANDLED: [Signal; 6] = [
    Signal::SIGCHLD,
    Signal::SIGUSR1,
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
];
/// Signals the parent ignores rather than die of: nothing of forkecho's sends them, and a stray
/// one must not end the server without its stopping and stopped lines. (A child sets SIGALRM's
/// handler itself for `--max-duration`.)
const IGNORED: [Signal; 2] = [Signal::SIGUSR2, Signal::SIGALRM];

/// The size of the stack the SIGCHLD handler runs on: room for the largest signal frame (the
/// CPU's vector state) and the handler, many times over; only the pages it touches cost memory.
const SIGNAL_STACK: usize = 64 * 1024;

/// Write end of the self-pipe, for the handlers. -1 until `install`.
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);
/// How many stop signals (SIGTERM, SIGINT) have arrived.
static STOPS: AtomicUsize = AtomicUsize::new(0);
/// The last stop signal's number.
static STOP_SIGNAL: AtomicI32 = AtomicI32::new(0);
/// Set by SIGUSR1, cleared when the main loop has logged the statistics.
static STATS_WANTED: AtomicBool = AtomicBool::new(false);

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

    /// Takes a wake-up: empties the pipe when `woken` (poll found it readable, or was
    /// interrupted by a handler), then reads what the handlers recorded. In that order: a
    /// handler that runs after the pipe was emptied has set its flag before its byte, so either
    /// this look sees the flag or the next poll sees the byte.
    pub fn take(&self, woken: bool) -> Pending {
        if woken {
            self.drain();
        }
        if testhooks::take(Hook::SigtermWhileWaking) {
            let _ = nix::sys::signal::raise(Signal::SIGTERM);
        }
        Pending {
            stop: stop_requested(),
            // Looked at before it is cleared: a swap writes even an unchanged value, and a page
            // the parent writes after a fork becomes one more page of the child's own memory.
            stats: STATS_WANTED.load(Ordering::Acquire)
                && STATS_WANTED.swap(false, Ordering::AcqRel),
        }
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

/// What the handlers asked of the main loop since it last looked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    /// The last stop signal and how many have arrived, once one has.
    pub stop: Option<(Signal, usize)>,
    /// SIGUSR1 asked for a statistics line.
    pub stats: bool,
}

/// Installs the handlers of the stop signals and SIGUSR1, and ignores SIGUSR2 and SIGALRM: first
/// thing in a serving process, so that a signal sent while it sets itself up is recorded, never
/// fatal (the self-pipe does not exist yet; `install` wakes the loop for what came meanwhile).
pub fn catch_early() -> Result<()> {
    for signal in STOP {
        // SAFETY: the action only stores to atomics and writes to a pipe.
        unsafe { signal_hook::low_level::register(signal as i32, move || on_stop(signal)) }
            .with_context(|| format!("unable to install the {} handler", signal.as_str()))?;
    }
    // SAFETY: the action only stores to an atomic and writes to a pipe.
    unsafe { signal_hook::low_level::register(Signal::SIGUSR1 as i32, on_usr1) }
        .context("unable to install the SIGUSR1 handler")?;
    let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
    for signal in IGNORED {
        // SAFETY: SIG_IGN runs no code of ours.
        unsafe { sigaction(signal, &ignore) }
            .with_context(|| format!("unable to ignore {}", signal.as_str()))?;
    }
    Ok(())
}

/// Undoes `catch_early` (SIG_DFL: signal-hook's unregister would not restore the default).
pub fn release() {
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for signal in STOP.into_iter().chain([Signal::SIGUSR1]).chain(IGNORED) {
        // SAFETY: SIG_DFL runs no code of ours.
        let _ = unsafe { sigaction(signal, &default) };
    }
}

/// Creates the self-pipe and installs the SIGCHLD handler (after `catch_early`). Call once,
/// before the first fork.
pub fn install() -> Result<Wakeup> {
    let (read, write) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)
        .context("unable to create the self-pipe")?;
    WAKE_FD.store(write.as_raw_fd(), Ordering::Release);
    // A signal that came before the pipe: its flag is set, and now its byte too, so the loop's
    // first poll returns at once.
    if STOPS.load(Ordering::Acquire) > 0 || STATS_WANTED.load(Ordering::Acquire) {
        wake();
    }
    reaper::init()?;
    // SIGCHLD comes once per connection, so its handler is a plain sigaction one. signal-hook's
    // dispatcher counts itself into its registry on every signal: a write to the parent's heap,
    // whose page each fork shares with the new child, so each SIGCHLD cost the parent a page copy
    // (0.93 page faults per connection, counted from /proc over 2 000 sequential connections in
    // round 2). This handler writes only the reaper's ring, in memory children do not inherit,
    // and the pipe.
    //
    // And it runs on a stack of its own, in memory children do not inherit (`memory`): on the
    // main stack, its frame (some 3 KiB, most of it the CPU's vector registers) reached a page
    // below the ones the loop writes anyway, one more page copied per connection while children
    // share it. The children never use this stack: their handlers run on their own (a child has
    // no mapping there; a fault that wanted it kills the child, as the fault would).
    let stack = memory::map_parent_only(SIGNAL_STACK).context("unable to map the signal stack")?;
    let alternate = nix::libc::stack_t {
        ss_sp: stack.as_ptr().cast(),
        ss_flags: 0,
        ss_size: SIGNAL_STACK,
    };
    // SAFETY: the mapping is SIGNAL_STACK bytes, never unmapped, used by nothing else.
    if unsafe { nix::libc::sigaltstack(&alternate, std::ptr::null_mut()) } != 0 {
        return Err(std::io::Error::last_os_error()).context("unable to set the signal stack");
    }
    let sigchld = SigAction::new(
        SigHandler::Handler(on_sigchld),
        SaFlags::SA_RESTART | SaFlags::SA_ONSTACK,
        SigSet::empty(),
    );
    // SAFETY: on_sigchld is async-signal-safe (see there).
    unsafe { sigaction(Signal::SIGCHLD, &sigchld) }
        .context("unable to install the SIGCHLD handler")?;
    Ok(Wakeup { read, write })
}

fn on_usr1() {
    STATS_WANTED.store(true, Ordering::Release);
    wake();
}

/// Reaps into the ring and wakes the loop: waitpid(2), atomics and write(2), no allocation, no
/// locks, no panics. errno is put back as it was: the handler may interrupt the main loop between
/// a failed call and its look at errno (what signal-hook-registry ≥ 1.4.8 does for the others).
extern "C" fn on_sigchld(_: nix::libc::c_int) {
    let errno = Errno::last_raw();
    reaper::exits().reap();
    wake();
    Errno::set_raw(errno);
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

impl Blocked {
    /// The mask from before: what a child restores once its own handlers are in place.
    pub fn previous(&self) -> SigSet {
        self.previous
    }
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
