//! Counters for the SIGUSR1 statistics line and the stopped line.
//!
//! The parent counts what it sees (accepts, refusals, failures, reaps) in `Counts`, which only
//! the parent's loop writes and reads. Bytes echoed and log lines dropped are counted by the
//! children too, in the page of `crate::shared`; a `Snapshot` reads both.

use std::fmt;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::child::dump::settings::DumpCounts;
use crate::child::metrics::Figures;
use crate::log::Secs;
use crate::shared::Shared;

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
    /// Children that died without counting their connection (killed, or panicked).
    pub abnormal: u64,
    /// Times the UDP worker was forked anew after it died.
    pub udp_restarts: u64,
}

impl Counts {
    /// What a metrics scrape is told of them (the live count and uptime left to the caller).
    pub fn figures(&self) -> Figures {
        Figures {
            admitted: self.accepted,
            refused_per_ip: self.refused_per_ip,
            rate_limited: self.rate_limited,
            proxy_errors: self.proxy_errors,
            fork_failures: self.fork_failures,
            accept_failures: self.accept_failures,
            abnormal: self.abnormal,
            ..Figures::default()
        }
    }
}

/// One statistics line's fields, after `stats `.
pub struct Snapshot {
    pub live: usize,
    pub counts: Counts,
    pub bytes: u64,
    pub log_dropped: u64,
    pub uptime: Duration,
    /// With `--udp`: the UDP worker's counts, by name, as the line shows them.
    pub udp: Option<[(&'static str, u64); 15]>,
    /// With `--dump`: the dumps' counts (`child::dump::DumpCounts`), by name.
    pub dumps: Option<[(&'static str, u64); 3]>,
}

impl Snapshot {
    pub fn take(
        live: usize,
        counts: Counts,
        shared: &Shared,
        started: Instant,
        udp: bool,
        dumps: Option<&DumpCounts>,
    ) -> Snapshot {
        let load = |n: &std::sync::atomic::AtomicU64| n.load(Ordering::Relaxed);
        Snapshot {
            live,
            counts,
            bytes: load(&shared.bytes),
            log_dropped: load(&shared.log.total),
            uptime: started.elapsed(),
            udp: udp.then(|| {
                let mut all = [("restarts", counts.udp_restarts); 15];
                all[..14].copy_from_slice(&shared.udp.named());
                all
            }),
            dumps: dumps.map(DumpCounts::named),
        }
    }
}

impl fmt::Display for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.counts;
        write!(
            f,
            concat!(
                "live={} accepted={} refused={} rate-limited={} proxy-errors={} ",
                "accept-failures={} fork-failures={} reaped={} bytes={} log-dropped={} uptime={}"
            ),
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
        )?;
        for (name, count) in self.udp.iter().flatten() {
            write!(f, " udp-{name}={count}")?;
        }
        for (name, count) in self.dumps.iter().flatten() {
            write!(f, " dump-{name}={count}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
                abnormal: 0,
                udp_restarts: 0,
            },
            bytes: 1234,
            log_dropped: 5,
            uptime: Duration::from_millis(61_500),
            udp: None,
            dumps: Some([("files", 9), ("cut", 1), ("failed", 2)]),
        };
        assert_eq!(
            snapshot.to_string(),
            concat!(
                "live=3 accepted=10 refused=2 rate-limited=6 proxy-errors=8 accept-failures=1 ",
                "fork-failures=4 reaped=7 bytes=1234 log-dropped=5 uptime=61.500s ",
                "dump-files=9 dump-cut=1 dump-failed=2"
            )
        );
    }
}
