//! Per-source summaries: no log line per datagram, but one per source once it has been quiet for
//! the idle timeout (`udp peer=ADDR datagrams=N bytes=N dropped=N`), and one for each source
//! still known when the worker stops.
//!
//! Written and read by the UDP worker alone. The table is bounded: once it holds `MOST` sources,
//! a new one is not tracked (its datagrams are still served and counted in the shared counts),
//! so a flood of spoofed sources costs no memory.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::log::logln;
use crate::peer::Peer;

/// Sources tracked at once.
const MOST: usize = 4096;
/// How often quiet sources are looked for.
pub const SWEEP: Duration = Duration::from_secs(1);

#[derive(Debug, Default, Clone, Copy)]
struct Source {
    datagrams: u64,
    bytes: u64,
    dropped: u64,
    last: Option<Instant>,
}

pub struct Sources {
    by_addr: HashMap<SocketAddr, Source>,
    /// Quiet this long, a source is summed up (zero: only at the stop).
    idle: Duration,
    /// `--quiet`: no summaries.
    quiet: bool,
    next_sweep: Instant,
}

impl Sources {
    pub fn new(idle: Duration, quiet: bool) -> Sources {
        Sources {
            by_addr: HashMap::new(),
            idle,
            quiet,
            next_sweep: Instant::now() + SWEEP,
        }
    }

    /// A datagram from `from`: echoed with `bytes`, or dropped.
    pub fn saw(&mut self, from: SocketAddr, bytes: Option<usize>, now: Instant) {
        if self.quiet {
            return;
        }
        let full = self.by_addr.len() >= MOST;
        let source = match self.by_addr.get_mut(&from) {
            Some(source) => source,
            None if full => return,
            None => self.by_addr.entry(from).or_default(),
        };
        match bytes {
            Some(bytes) => {
                source.datagrams += 1;
                source.bytes += bytes as u64;
            }
            None => source.dropped += 1,
        }
        source.last = Some(now);
    }

    /// When the next sweep is due, if there is anything to sweep.
    pub fn next_sweep(&self) -> Option<Instant> {
        (!self.by_addr.is_empty() && !self.idle.is_zero()).then_some(self.next_sweep)
    }

    /// Sums up the sources quiet for the idle timeout, if a sweep is due.
    pub fn sweep(&mut self, now: Instant) {
        if now < self.next_sweep {
            return;
        }
        self.next_sweep = now + SWEEP;
        if self.idle.is_zero() {
            return;
        }
        let idle = self.idle;
        self.by_addr.retain(|&from, source| {
            let quiet = source
                .last
                .is_none_or(|last| now.duration_since(last) >= idle);
            if quiet {
                summary(from, source);
            }
            !quiet
        });
    }

    /// Sums up every source left (the worker is stopping).
    pub fn flush(&mut self) {
        for (from, source) in self.by_addr.drain() {
            summary(from, &source);
        }
    }
}

fn summary(from: SocketAddr, source: &Source) {
    logln!(
        "udp peer={} datagrams={} bytes={} dropped={}",
        Peer::Ip(from),
        source.datagrams,
        source.bytes,
        source.dropped
    );
}
