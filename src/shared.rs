//! Memory the parent and every child share: the counters page and the close marks.
//!
//! Both are anonymous `MAP_SHARED` mappings made by the parent before its first fork, so every
//! child inherits the same pages, and every access is atomic (async-signal-safe, no locks).
//! - `Shared`, one page: the children add the bytes they echo and the log lines they could not
//!   write; the parent adds its own dropped lines and reads both for the `stats` and `stopped`
//!   lines (`parent/stats.rs`).
//! - `Marks`, one word per pid, with `--max-per-ip` only: a child writes its connection number
//!   just before it closes its connection; the parent reads them when it is about to refuse a
//!   client (`parent/admission.rs`), so a client that reconnects at once is not refused for a
//!   connection it knows is over. A mark holds the child's connection number, not a flag, so a
//!   stale mark from an earlier child with the same pid never counts.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use anyhow::{Context, Result};
use nix::sys::mman::MapFlags;
use nix::unistd::Pid;

use crate::log::{self, Drops};
use crate::memory;

/// What the parent and every child count together.
pub struct Shared {
    /// Bytes echoed by all children.
    pub bytes: AtomicU64,
    /// Log lines nobody could write.
    pub log: Drops,
}

/// Maps the shared page and starts counting dropped log lines in it; it stays mapped for the
/// process's life.
pub fn map() -> Result<&'static Shared> {
    const { assert!(size_of::<Shared>() <= 4096) };
    let page = memory::map(4096, MapFlags::MAP_SHARED)
        .context("unable to map shared memory for the counters")?;
    // The mapping is never unmapped, and every access to it, here and in the children sharing
    // the page, is atomic; zero is a count of nothing.
    // SAFETY: zeroed, page-aligned memory is a valid Shared that lives for the whole process.
    let shared = unsafe { page.cast::<Shared>().as_ref() };
    // Fault the page in now, in the parent: children then map the parent's page (shared) instead
    // of each child's first add allocating it as memory of its own.
    shared.bytes.store(0, Ordering::Relaxed);
    log::share_drops(&shared.log);
    Ok(shared)
}

/// Which children have closed their connections: one connection number per pid. Pages are
/// touched only where pids land.
#[derive(Debug, Clone, Copy)]
pub struct Marks {
    by_pid: &'static [AtomicU32],
}

impl Marks {
    /// Room for every pid up to kernel.pid_max (PID_MAX_LIMIT if it cannot be read); a child
    /// whose pid lies beyond (pid_max raised later) simply does not mark.
    pub fn map() -> nix::Result<Marks> {
        let pids = std::fs::read_to_string("/proc/sys/kernel/pid_max")
            .ok()
            .and_then(|text| text.trim().parse::<usize>().ok())
            .unwrap_or(4_194_304);
        let len = pids * size_of::<AtomicU32>();
        let start = memory::map(len, MapFlags::MAP_SHARED | MapFlags::MAP_NORESERVE)?;
        // Never unmapped, only ever accessed atomically, by the parent and its children.
        // SAFETY: zero-filled, page-aligned memory is `pids` valid AtomicU32s.
        let by_pid = unsafe { std::slice::from_raw_parts(start.as_ptr().cast(), pids) };
        Ok(Marks { by_pid })
    }

    /// In a child, just before it closes its connection: child number `serial` is done.
    pub fn mark_closed(&self, serial: u32) {
        if let Some(mark) = self.by_pid.get(std::process::id() as usize) {
            mark.store(serial, Ordering::Release);
        }
    }

    /// Whether child number `serial`, pid `pid`, has closed its connection.
    pub fn closed(&self, pid: Pid, serial: u32) -> bool {
        self.by_pid
            .get(pid.as_raw() as usize)
            .is_some_and(|mark| mark.load(Ordering::Acquire) == serial)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shared_counters_start_at_zero_and_count() {
        let shared = map().unwrap();
        assert_eq!(shared.bytes.load(Ordering::Relaxed), 0);
        assert_eq!(shared.log.total.load(Ordering::Relaxed), 0);
        shared.bytes.fetch_add(42, Ordering::Relaxed);
        assert_eq!(shared.bytes.load(Ordering::Relaxed), 42);
    }
}
