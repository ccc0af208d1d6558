//! Memory the parent and every child share: the counters page and the close marks.
//!
//! Both are anonymous `MAP_SHARED` mappings made by the parent before its first fork, so every
//! child inherits the same pages, and every access is atomic (async-signal-safe, no locks).
//! - `Shared`, one page: the children add the bytes they echo and the log lines they could not
//!   write; the parent adds its own dropped lines and reads both for the `stats` and `stopped`
//!   lines (`parent/stats.rs`). With `--metrics`, each child also adds its connection to the
//!   `Tally` (how it ended, the faults that acted, how long it lasted), which a scrape child
//!   reads (`child/scrape.rs`); without it, no child touches the tally.
//! - `Marks`, one word per pid, with `--max-per-ip` only: a child writes its connection number
//!   just before it closes its connection; the parent reads them when it is about to refuse a
//!   client (`parent/admission.rs`), so a client that reconnects at once is not refused for a
//!   connection it knows is over. A mark holds the child's connection number, not a flag, so a
//!   stale mark from an earlier child with the same pid never counts.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

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
    /// With `--metrics`: the connections served, by how they ended.
    pub tally: Tally,
    /// With `--udp`: what the UDP worker did with the datagrams it received.
    pub udp: UdpCounts,
}

/// The UDP worker's counts, written by the worker alone and read by the parent for the `stats`
/// and `stopped` lines; they survive a worker's restart.
#[derive(Debug, Default)]
pub struct UdpCounts {
    pub received: AtomicU64,
    /// Echoed (a duplicate counts twice), and their bytes.
    pub echoed: AtomicU64,
    pub bytes: AtomicU64,
    /// Larger than the buffer (`--buffer-size`): never echoed short.
    pub truncated: AtomicU64,
    /// From port 0, or from a port whose service answers unsolicited datagrams.
    pub source_port: AtomicU64,
    /// From or to a broadcast, multicast or unspecified address.
    pub broadcast: AtomicU64,
    /// Over `--rate-per-ip`.
    pub rate_limited: AtomicU64,
    /// From the worker's own address, or an echo of an echo over its budget (`child::udp`'s
    /// loop guard).
    pub looping: AtomicU64,
    /// `--delay`: no room left in the queue of delayed answers.
    pub queue_full: AtomicU64,
    /// The faults: lost, duplicated, reordered, corrupted.
    pub lost: AtomicU64,
    pub duplicated: AtomicU64,
    pub reordered: AtomicU64,
    pub corrupted: AtomicU64,
    /// The kernel refused the answer (a full socket buffer, an unreachable client).
    pub send_failed: AtomicU64,
}

impl UdpCounts {
    /// Every count, by the name the `stats` line gives it after `udp-`.
    pub fn named(&self) -> [(&'static str, u64); 14] {
        let load = |n: &AtomicU64| n.load(Ordering::Relaxed);
        [
            ("received", load(&self.received)),
            ("echoed", load(&self.echoed)),
            ("bytes", load(&self.bytes)),
            ("truncated", load(&self.truncated)),
            ("source-port", load(&self.source_port)),
            ("broadcast", load(&self.broadcast)),
            ("rate-limited", load(&self.rate_limited)),
            ("loop", load(&self.looping)),
            ("queue-full", load(&self.queue_full)),
            ("lost", load(&self.lost)),
            ("duplicated", load(&self.duplicated)),
            ("reordered", load(&self.reordered)),
            ("corrupted", load(&self.corrupted)),
            ("send-failed", load(&self.send_failed)),
        ]
    }
}

/// The end kinds a child tallies (`child::echo::End::KINDS`).
pub const END_KINDS: usize = 13;
/// The faults a child tallies (`faults::Acted::NAMES`).
pub const FAULT_KINDS: usize = crate::faults::Acted::NAMES.len();
/// The WebSocket close codes a child tallies by name (`other` for the rest): the RFC's, as
/// sent or received (1005: a close without a code; 1006: no close at all).
pub const WEBSOCKET_CLOSES: [&str; 12] = [
    "1000", "1001", "1002", "1003", "1005", "1006", "1007", "1008", "1009", "1010", "1011", "other",
];
/// Upper bounds of the connection-duration histogram's buckets, in seconds (and +Inf after).
pub const DURATION_BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// The connections children have served, counted by each child as it closes (with `--metrics`).
#[derive(Debug)]
pub struct Tally {
    /// By end kind.
    pub ended: [AtomicU64; END_KINDS],
    /// Connections each fault acted on.
    pub faults: [AtomicU64; FAULT_KINDS],
    /// Connections per duration bucket (not cumulative), the last one +Inf.
    pub durations: [AtomicU64; DURATION_BUCKETS.len() + 1],
    /// The durations' sum, in microseconds.
    pub duration_micros: AtomicU64,
    /// `--websocket`: messages echoed.
    pub websocket_messages: AtomicU64,
    /// `--websocket`: sessions by close code, as `WEBSOCKET_CLOSES` orders them.
    pub websocket_closes: [AtomicU64; WEBSOCKET_CLOSES.len()],
}

impl Tally {
    /// One connection that ended as `end` (an index in `End::KINDS`), with the faults whose bits
    /// are `faults` (as `Acted::NAMES` orders them), after `lasted`.
    pub fn record(&self, end: usize, faults: u16, lasted: Duration) {
        self.ended[end.min(END_KINDS - 1)].fetch_add(1, Ordering::Relaxed);
        for (bit, count) in self.faults.iter().enumerate() {
            if faults & (1 << bit) != 0 {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
        let secs = lasted.as_secs_f64();
        let bucket = DURATION_BUCKETS
            .iter()
            .position(|&bound| secs <= bound)
            .unwrap_or(DURATION_BUCKETS.len());
        self.durations[bucket].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(lasted.as_micros()).unwrap_or(u64::MAX);
        self.duration_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// One WebSocket session's messages and close code (None: it ended before a close).
    pub fn record_websocket(&self, messages: u64, close: Option<u16>) {
        self.websocket_messages
            .fetch_add(messages, Ordering::Relaxed);
        if let Some(code) = close {
            let named = WEBSOCKET_CLOSES.iter().position(|c| c.parse() == Ok(code));
            let at = named.unwrap_or(WEBSOCKET_CLOSES.len() - 1);
            self.websocket_closes[at].fetch_add(1, Ordering::Relaxed);
        }
    }
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

    #[test]
    fn the_tally_counts_ends_faults_and_duration_buckets() {
        let shared = map().unwrap();
        let tally = &shared.tally;
        tally.record(0, 0, Duration::from_micros(500));
        tally.record(8, 0b101, Duration::from_millis(5));
        tally.record(1, 0b100, Duration::from_secs(3600));
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        assert_eq!(load(&tally.ended[0]), 1);
        assert_eq!(load(&tally.ended[8]), 1);
        assert_eq!(load(&tally.faults[0]), 1);
        assert_eq!(load(&tally.faults[2]), 2);
        // 0.0005 s in le=0.001, 0.005 s in le=0.005 (bounds are inclusive), an hour in +Inf.
        assert_eq!(load(&tally.durations[0]), 1);
        assert_eq!(load(&tally.durations[1]), 1);
        assert_eq!(load(&tally.durations[DURATION_BUCKETS.len()]), 1);
        assert_eq!(load(&tally.duration_micros), 500 + 5_000 + 3_600_000_000);
    }
}
