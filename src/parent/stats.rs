//! Counters for the SIGUSR1 statistics line and the stopped line.
//!
//! The parent counts what it sees (accepts, refusals, failures, reaps). Bytes are echoed, and log
//! lines dropped, by the children too, so those counts live in one page of anonymous shared
//! memory, mapped before the first fork: every child inherits the same page and adds to its
//! atomic counters, and the parent reads them. Atomics on shared memory are async-signal-safe and
//! need no locks.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sys::mman::MapFlags;

use crate::log::{self, Drops, Secs};
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
pub fn shared() -> Result<&'static Shared> {
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

/// What the parent counts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub accepted: u64,
    pub refused_per_ip: u64,
    pub rate_limited: u64,
    pub proxy_errors: u64,
    pub accept_failures: u64,
    pub fork_failures: u64,
    pub reaped: u64,
}

/// One statistics line's fields, after `stats `.
pub struct Snapshot {
    pub live: usize,
    pub counts: Counts,
    pub bytes: u64,
    pub log_dropped: u64,
    pub uptime: Duration,
}

impl Snapshot {
    pub fn take(live: usize, counts: Counts, shared: &Shared, started: Instant) -> Snapshot {
        Snapshot {
            live,
            counts,
            bytes: shared.bytes.load(Ordering::Relaxed),
            log_dropped: shared.log.total.load(Ordering::Relaxed),
            uptime: started.elapsed(),
        }
    }
}

impl fmt::Display for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.counts;
        write!(
            f,
            "live={} accepted={} refused={} rate-limited={} proxy-errors={} accept-failures={} fork-failures={} reaped={} bytes={} log-dropped={} uptime={}",
            self.live,
            c.accepted,
            c.refused_per_ip,
            c.rate_limited,
            c.proxy_errors,
            c.accept_failures,
            c.fork_failures,
            c.reaped,
            self.bytes,
            self.log_dropped,
            Secs(self.uptime)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shared_counters_start_at_zero_and_count() {
        let shared = shared().unwrap();
        assert_eq!(shared.bytes.load(Ordering::Relaxed), 0);
        assert_eq!(shared.log.total.load(Ordering::Relaxed), 0);
        shared.bytes.fetch_add(42, Ordering::Relaxed);
        assert_eq!(shared.bytes.load(Ordering::Relaxed), 42);
    }

    #[test]
    fn the_line_names_every_count() {
        let snapshot = Snapshot {
            live: 3,
            counts: Counts {
                accepted: 10,
                refused_per_ip: 2,
                rate_limited: 6,
                proxy_errors: 8,
                accept_failures: 1,
                fork_failures: 4,
                reaped: 7,
            },
            bytes: 1234,
            log_dropped: 5,
            uptime: Duration::from_millis(61_500),
        };
        assert_eq!(
            snapshot.to_string(),
            "live=3 accepted=10 refused=2 rate-limited=6 proxy-errors=8 accept-failures=1 fork-failures=4 reaped=7 bytes=1234 log-dropped=5 uptime=61.500s"
        );
    }
}
