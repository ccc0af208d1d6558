//! Reaping exited children from the SIGCHLD handler, and handing their statuses to the main loop.
//!
//! The handler calls `reap`, which runs `waitpid(WNOHANG)` until no exited child is left and
//! pushes each (pid, raw status) into `exits()`, a fixed ring of atomics. The main loop pops them
//! (`Parent::collect_exits`, in `exits`) and does the logging and bookkeeping the handler may
//! not do. Nothing the handler runs allocates or locks.
//!
//! The ring has one producer at a time: the handler (SIGCHLD is blocked while its own handler
//! runs) or the main loop with SIGCHLD blocked. If the ring is full the producer leaves the rest
//! as zombies and raises `backlogged`; the consumer reaps them once it has made room, so a burst
//! of exits larger than the ring is delayed, never lost.

use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};

use anyhow::{Context, Result};

use crate::memory;

/// How many exits can wait for the main loop. A burst beyond this waits as zombies for a moment.
const CAPACITY: usize = 1024;

/// The ring the SIGCHLD handler fills and the main loop drains, once `init` has mapped it.
static EXITS: AtomicPtr<Ring> = AtomicPtr::new(ptr::null_mut());

/// Maps the ring in memory children do not inherit, so the handler's and the main loop's writes
/// after each fork cost no page copies (see `memory`). Call before the SIGCHLD handler exists.
pub fn init() -> Result<()> {
    if EXITS.load(Ordering::Acquire).is_null() {
        let ring = memory::map_parent_only(size_of::<Ring>())
            .context("unable to map the reaper's ring")?;
        // Zero-filled memory is a valid empty Ring: it is all atomics whose zero means empty.
        EXITS.store(ring.as_ptr().cast(), Ordering::Release);
    }
    Ok(())
}

/// The ring `init` mapped.
pub fn exits() -> &'static Ring {
    let ring = EXITS.load(Ordering::Acquire);
    assert!(
        !ring.is_null(),
        "reaper::init runs before any handler or loop"
    );
    // Non-null: `init` stored a mapping of a whole Ring, never unmapped, page-aligned and
    // zero-filled, which is a valid Ring.
    // SAFETY: a valid Ring for the rest of the process, and a Ring is only used through `&`.
    unsafe { &*ring }
}

/// A single-producer single-consumer ring of (pid, wait status) pairs, safe to push from a
/// signal handler that interrupts the consumer.
pub struct Ring {
    slots: [AtomicU64; CAPACITY],
    /// Count of pushes; written only by the producer.
    head: AtomicUsize,
    /// Count of pops; written only by the consumer.
    tail: AtomicUsize,
    /// Set by the producer when it stopped reaping because the ring was full.
    backlogged: AtomicBool,
}

impl Ring {
    #[cfg(test)]
    pub const fn new() -> Ring {
        Ring {
            slots: [const { AtomicU64::new(0) }; CAPACITY],
            head: AtomicUsize::new(0),
            tail: AtomicUsize::new(0),
            backlogged: AtomicBool::new(false),
        }
    }

    fn has_room(&self) -> bool {
        let head = self.head.load(Ordering::Relaxed);
        head.wrapping_sub(self.tail.load(Ordering::Acquire)) < CAPACITY
    }

    /// Producer side. The caller has checked `has_room`.
    fn push(&self, pid: i32, status: i32) {
        let head = self.head.load(Ordering::Relaxed);
        let packed = (u64::from(pid as u32) << 32) | u64::from(status as u32);
        self.slots[head % CAPACITY].store(packed, Ordering::Relaxed);
        self.head.store(head.wrapping_add(1), Ordering::Release);
    }

    /// Consumer side: calls `f(pid, raw wait status)` for every exit pushed so far, oldest first.
    /// Returns true when the producer left children unreaped for want of room; the caller should
    /// then call `reap` with SIGCHLD blocked, and drain again.
    pub fn drain(&self, mut f: impl FnMut(i32, i32)) -> bool {
        let head = self.head.load(Ordering::Acquire);
        let mut tail = self.tail.load(Ordering::Relaxed);
        while tail != head {
            let packed = self.slots[tail % CAPACITY].load(Ordering::Relaxed);
            f((packed >> 32) as u32 as i32, packed as u32 as i32);
            tail = tail.wrapping_add(1);
        }
        self.tail.store(tail, Ordering::Release);
        self.backlogged.swap(false, Ordering::AcqRel)
    }

    /// Reaps every exited child that fits in the ring. Async-signal-safe: only `waitpid(2)` and
    /// atomics. The caller is the only producer for its duration (see the module docs).
    pub fn reap(&self) {
        while self.has_room() {
            let mut status = 0;
            // waitpid is async-signal-safe, so it may run inside the SIGCHLD handler.
            // SAFETY: waitpid writes only the status, through a pointer to a live local.
            let pid = unsafe { nix::libc::waitpid(-1, &mut status, nix::libc::WNOHANG) };
            // 0: children remain, none has exited; -1: ECHILD, no children at all.
            if pid <= 0 {
                return;
            }
            self.push(pid, status);
        }
        self.backlogged.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drained(ring: &Ring) -> (Vec<(i32, i32)>, bool) {
        let mut out = Vec::new();
        let backlogged = ring.drain(|pid, status| out.push((pid, status)));
        (out, backlogged)
    }

    #[test]
    fn pushes_come_out_in_order_with_pid_and_status_intact() {
        let ring = Ring::new();
        ring.push(1, 0);
        ring.push(i32::MAX, 0x7f00); // largest pid; a stopped-style status
        ring.push(42, -1);
        assert_eq!(
            drained(&ring),
            (vec![(1, 0), (i32::MAX, 0x7f00), (42, -1)], false)
        );
        assert_eq!(drained(&ring), (vec![], false));
    }

    #[test]
    fn a_full_ring_refuses_more_until_drained() {
        let ring = Ring::new();
        for pid in 0..CAPACITY as i32 {
            assert!(ring.has_room());
            ring.push(pid + 1, 0);
        }
        assert!(!ring.has_room());
        let (exits, _) = drained(&ring);
        assert_eq!(exits.len(), CAPACITY);
        assert_eq!(exits.last(), Some(&(CAPACITY as i32, 0)));
        assert!(ring.has_room());
    }

    #[test]
    fn the_ring_wraps_around_many_times() {
        let ring = Ring::new();
        for round in 0..5 {
            for i in 0..700 {
                ring.push(round * 1000 + i, i);
            }
            let (exits, _) = drained(&ring);
            assert_eq!(exits.len(), 700);
            assert_eq!(exits[699], (round * 1000 + 699, 699));
        }
    }

    #[test]
    fn reap_on_a_full_ring_reports_a_backlog_once() {
        let ring = Ring::new();
        for pid in 0..CAPACITY as i32 {
            ring.push(pid + 1, 0);
        }
        // With no room, reap must not call waitpid at all (it would lose the status).
        ring.reap();
        let (_, backlogged) = drained(&ring);
        assert!(backlogged);
        assert!(!drained(&ring).1);
    }
}
