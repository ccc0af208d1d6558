//! Where log lines go: stderr, without ever waiting for it.
//!
//! A harness that captures stderr and never reads it would otherwise stop every child in its
//! close line and the parent in its accept line. Lines are written through `crate::nowait` (which
//! chooses how, by what stderr is): a line that cannot be written at once is dropped and counted
//! (`Drops`), and the next line that gets through is followed by one saying how many were lost.
//! A file at its size limit (RLIMIT_FSIZE) fails the write with EFBIG instead of killing the
//! process with SIGXFSZ, which is ignored.

use std::ptr;
use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicU8, AtomicU64, Ordering};

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

use crate::nowait::{How, Target};

/// Where lines go (fd 2, or a private non-blocking description of it), and how: a
/// `nowait::Target` kept in atomics, so that every process and a panic can read it at any time.
static FD: AtomicI32 = AtomicI32::new(2);
static HOW: AtomicU8 = AtomicU8::new(How::Plain as u8);

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

/// Chooses how to write to fd 2 (`nowait::Target::open`); call at startup, before privileges
/// are dropped, and again if fd 2 is replaced. Ignores SIGXFSZ. Logs a warning where lines may
/// wait for stderr's reader after all: returns why, for `log::init` to say.
pub fn init() -> Option<String> {
    let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
    // SAFETY: SIG_IGN runs no code of ours.
    let _ = unsafe { sigaction(Signal::SIGXFSZ, &ignore) };
    target().close();
    FD.store(2, Ordering::Release);
    HOW.store(How::Plain as u8, Ordering::Release);
    let (target, warning) = Target::open(2, "stderr");
    FD.store(target.fd, Ordering::Release);
    HOW.store(target.how as u8, Ordering::Release);
    warning
}

#[unsafe(link_section = ".text.hot.child")]
fn target() -> Target {
    Target {
        fd: FD.load(Ordering::Acquire),
        how: How::from_u8(HOW.load(Ordering::Acquire)),
        given: 2,
    }
}

/// Writes `line` without waiting for the reader; true if all of it went.
#[unsafe(link_section = ".text.hot.child")]
pub fn write(line: &[u8]) -> bool {
    target().write(line)
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
