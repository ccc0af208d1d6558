//! The parent's side of `--udp`: the UDP sockets (bound by `setup`, held here, never read by the
//! parent) and the one worker process that serves them (`child::udp`).
//!
//! The worker is forked once everything else is set up (after the sandbox, which it inherits)
//! and before the readiness line, so a client that reads that line finds UDP served. It is in
//! the table of children like any other (`Role::Udp`): reaped by the same SIGCHLD handler,
//! signalled and waited for at shutdown. If it dies while the server is serving, the loop forks
//! a new one after `backoff` (100 ms, doubling up to 10 s for a worker that keeps dying at once;
//! back to 100 ms after one that served `STEADY`), logging each restart.
//!
//! `UdpService` is fixed at startup (in `Parent`); `Supervision` is what the loop writes (in
//! `LoopState`).

use std::time::{Duration, Instant};

use anyhow::Result;
use nix::unistd::Pid;

use super::children::Role;
use super::state::{FIRST_BACKOFF, Parent};
use crate::child::Job;
use crate::log::logln;
use crate::peer::Peer;

const MOST_BACKOFF: Duration = Duration::from_secs(10);
/// A worker that served this long before dying is restarted after the first backoff again.
const STEADY: Duration = Duration::from_secs(10);

impl Parent {
    /// Forks the UDP worker (at startup, and to restart it). An error only at startup is fatal.
    pub(super) fn start_udp_worker(&mut self) -> Result<Option<Pid>> {
        let Some(service) = &self.udp else {
            return Ok(None);
        };
        let job = Job::Udp {
            sockets: service.bound,
            settings: service.settings,
            counts: &self.shared.udp,
            confine: self.template.confine,
        };
        let peer = Peer::Ip(service.bound[0].addr);
        let pid = self
            .fork_for(job, peer, 0, Role::Udp)
            .map_err(|errno| anyhow::anyhow!("unable to fork the udp worker: {errno}"))?;
        self.state.udp.started = Instant::now();
        self.state.udp.restart_at = None;
        Ok(Some(pid))
    }

    /// The worker `pid` died while serving: a new one after the backoff.
    pub(super) fn udp_worker_died(&mut self, pid: Pid, how: impl std::fmt::Display) {
        let now = Instant::now();
        let supervision = &mut self.state.udp;
        if now.duration_since(supervision.started) >= STEADY {
            supervision.backoff = FIRST_BACKOFF;
        }
        let wait = supervision.backoff;
        supervision.restart_at = Some(now + wait);
        supervision.backoff = (wait * 2).min(MOST_BACKOFF);
        logln!(
            "warning: udp worker pid={pid} {how}: restarting in {}ms",
            wait.as_millis()
        );
    }

    /// Restarts the worker if its time has come.
    pub(super) fn restart_udp_worker(&mut self, now: Instant) {
        if self.state.stopping || self.state.udp.restart_at.is_none_or(|at| at > now) {
            return;
        }
        match self.start_udp_worker() {
            Ok(Some(pid)) => {
                self.state.counts.udp_restarts += 1;
                logln!("udp worker restarted pid={pid}");
            }
            Ok(None) => {}
            Err(err) => self.udp_worker_died(Pid::from_raw(0), format!("not forked ({err})")),
        }
    }
}
