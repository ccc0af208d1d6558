//! Who is served, decided in one call at the accept site (OpenSSH's `drop_connection`, with the
//! policy in `srclimit.c`): `--max-clients` in all, and per source address group `--rate-per-ip`
//! (`rate`) and `--max-per-ip` (`limits`).
//!
//! A client over its group's rate or at its group's limit is closed at once, before any fork,
//! told nothing, counted, and logged (rate-limited) as `refused`. A client is counted under its
//! address group (`crate::groups`) from its fork until its exit is collected, less the
//! children that have already marked their connection closed (`crate::shared::Marks`).
//!
//! All of this is the parent's own: the loop writes it, in memory children do not inherit
//! (`parent::LoopState`); children only write their close marks.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::children::Children;
use super::limits::Limits;
use super::stats::Counts;
use crate::cli::Rate;
use crate::groups::{Group, Grouping};
use crate::log::logln;
use crate::log::{RateLimit, Suppressed};
use crate::peer::{Peer, PeerVia, Via};
use crate::rate::RateTable;
use crate::shared::Marks;

/// At most one `refused` line, and one `limit max-clients` line, per second.
const WARN_INTERVAL: Duration = Duration::from_secs(1);

/// The admission policy, from the options (`crate::settings`).
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// `--max-clients`.
    pub max_clients: usize,
    /// `--max-per-ip` (0: no limit).
    pub max_per_ip: u32,
    /// `--ipv4-prefix` and `--ipv6-prefix`.
    pub grouping: Grouping,
    /// `--rate-per-ip`.
    pub rate_per_ip: Option<Rate>,
}

pub struct Admission {
    limits: Limits,
    /// `--rate-per-ip`'s table, when it is set.
    rates: Option<RateTable>,
    /// With `--max-per-ip`: the children's close marks.
    marks: Option<Marks>,
    /// Whether the last look found the server at --max-clients (to log reaching it once).
    was_full: bool,
    refusals: RateLimit,
    capacity_warnings: RateLimit,
}

impl Admission {
    pub fn new(settings: Policy) -> Result<Admission> {
        Ok(Admission {
            limits: Limits::new(settings.max_clients, settings.max_per_ip, settings.grouping),
            rates: settings
                .rate_per_ip
                .map(RateTable::new)
                .transpose()
                .context("unable to map the --rate-per-ip table")?,
            marks: match settings.max_per_ip {
                0 => None,
                _ => Some(Marks::map().context("unable to map the close marks")?),
            },
            was_full: false,
            refusals: RateLimit::new(WARN_INTERVAL),
            capacity_warnings: RateLimit::new(WARN_INTERVAL),
        })
    }

    /// Where children mark their connections closed, for their context.
    pub fn marks(&self) -> Option<Marks> {
        self.marks
    }

    /// Whether `live` connections (children, and connections waiting for their PROXY header)
    /// are as many as may be: then accepting waits.
    pub fn full(&self, live: usize) -> bool {
        self.limits.full(live)
    }

    /// `full`, logging (rate-limited) when the server gets there.
    pub fn note_capacity(&mut self, live: usize, now: Instant) -> bool {
        let full = self.full(live);
        if full
            && !self.was_full
            && let Some(held) = self.capacity_warnings.allow(now)
        {
            logln!(
                "limit max-clients={} reached: new connections wait in the backlog{}",
                self.limits.max_clients(),
                Suppressed(held)
            );
        }
        self.was_full = full;
        full
    }

    /// Whether to drop a new connection from `peer` (from the PROXY header, if there was one)
    /// before any fork: its address group is over `--rate-per-ip` or at `--max-per-ip`. A dropped
    /// connection is counted in `counts` and logged; the caller only closes it.
    pub fn drop_connection(
        &mut self,
        peer: Peer,
        via: Via,
        children: &Children,
        counts: &mut Counts,
    ) -> bool {
        let grouping = self.limits.grouping();
        if let Some(rates) = &mut self.rates
            && !rates.admit(grouping.key(peer), Instant::now())
        {
            counts.rate_limited += 1;
            let rate = rates.rate();
            self.refused(PeerVia(peer, via), "rate-per-ip", rate, grouping.show(peer));
            return true;
        }
        let marks = self.marks;
        let closed = || match marks {
            Some(marks) => closed_from(children, &marks, grouping, peer),
            None => 0,
        };
        if self.limits.refuses(peer, closed) {
            counts.refused_per_ip += 1;
            let limit = self.limits.max_per_ip();
            self.refused(PeerVia(peer, via), "max-per-ip", limit, grouping.show(peer));
            return true;
        }
        false
    }

    /// A child now serves `peer`.
    pub fn opened(&mut self, peer: Peer) {
        self.limits.opened(peer);
    }

    /// The child serving `peer` is gone.
    pub fn closed(&mut self, peer: Peer) {
        self.limits.closed(peer);
    }

    /// The `refused` line (rate-limited) for a client turned away by a per-source limit.
    fn refused(
        &mut self,
        peer: PeerVia,
        reason: &str,
        limit: impl std::fmt::Display,
        group: Group,
    ) {
        if let Some(held) = self.refusals.allow(Instant::now()) {
            logln!(
                "refused peer={peer} reason={reason} limit={limit} group={group}{}",
                Suppressed(held)
            );
        }
    }
}

/// How many children serving `peer`'s address group have marked their connection closed.
fn closed_from(children: &Children, marks: &Marks, grouping: Grouping, peer: Peer) -> u32 {
    let group = grouping.key(peer);
    children
        .iter()
        .filter(|(pid, child)| {
            grouping.key(child.peer) == group && marks.closed(*pid, child.serial)
        })
        .count() as u32
}
