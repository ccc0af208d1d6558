//! The loop: one poll(2) over the self-pipe, the lifeline, the metrics listener, the control
//! socket and its connections, the listeners and the connections still sending their PROXY
//! header, in that fixed layout (the constants below, `pollset` for the set itself); then each
//! ready source handed to the file that serves it (`exits`, `udp_worker`, `metrics`, `control`,
//! `accept`). Ends at a stop signal or the lifeline's end, with the `Stop` that says which.

use std::time::Instant;

use nix::errno::Errno;

use super::control_socket::{self, Control, Gate};
use super::proxy::WaitingRoom;
use super::state::{BACKOFF, Parent, Stop};
use super::stats::Snapshot;
use crate::deadline;
use crate::log::{Suppressed, logln};
use crate::setup::listener::Listener;

/// The poll set's fixed entries: the self-pipe, the lifeline and the metrics listener (-1, which
/// poll skips, for either that is not there); with `--control`, the control socket and a slot
/// for each of its connections; the listeners follow. (No slot is there for nothing: poll(2)
/// refuses more entries than RLIMIT_NOFILE allows descriptors.)
const PIPE: usize = 0;
const LIFELINE: usize = 1;
const METRICS: usize = 2;
const CONTROL: usize = 3;
pub(super) const CONTROL_CLIENTS: usize = 4;

impl Parent {
    /// Serves until a stop signal, or the end of the lifeline: poll (`wait`), then serve what
    /// was ready (`act`). Never inlined into its caller, whose startup locals would sit between
    /// the loop's own and every fork: the parent copies each stack page it writes after a fork,
    /// so the loop's stack stays as shallow as it can (its two steps are inlined into it, one
    /// frame).
    #[inline(never)]
    pub fn serve(&mut self) -> Stop {
        let lifeline = self.harness.lifeline();
        loop {
            let ready = self.wait(lifeline);
            if let Some(stop) = self.act(ready) {
                return stop;
            }
        }
    }

    /// Fills the poll set (in the layout above) and polls it, with a timeout from the next
    /// deadline: the end of an accept pause, a PROXY header's, a UDP worker's restart, an idle
    /// control connection's. What came ready, as `Ready`.
    #[inline(always)]
    fn wait(&mut self, lifeline: Option<std::os::fd::RawFd>) -> Ready {
        let now = Instant::now();
        let pause = self
            .state
            .paused_until
            .map(|until| until.saturating_duration_since(now))
            .filter(|left| !left.is_zero());
        if pause.is_none() {
            self.state.paused_until = None;
        }
        let state = &mut *self.state;
        let full = state.admission.note_capacity(state.live(), now);
        // Until the pause ends, or the first PROXY header's deadline passes, at most.
        let until_deadline = state
            .proxy
            .as_ref()
            .and_then(WaitingRoom::next_deadline)
            .map(|at| at.saturating_duration_since(now));
        let until_restart = (state.udp.restart_at()).map(|at| at.saturating_duration_since(now));
        let until_idle = (self.control.as_ref())
            .and_then(Control::next_deadline)
            .map(|at| at.saturating_duration_since(now));
        let timeout = pause
            .into_iter()
            .chain(until_deadline)
            .chain(until_restart)
            .chain(until_idle)
            .min();
        let listening = match pause.is_none() && !full && state.gate == Gate::Up {
            true => self.listeners.len(),
            false => 0,
        };
        let set = &mut state.polled;
        set.clear();
        set.push(self.wakeup.raw_fds()[0]);
        set.push(lifeline.unwrap_or(-1));
        // Scrapes are served at --max-clients too (that is when they matter), not in a pause.
        let metrics = self.metrics.as_ref().filter(|_| pause.is_none());
        set.push(metrics.map_or(-1, Listener::raw_fd));
        if let Some(control) = &self.control {
            set.push(control.listener_fd());
            for i in 0..control_socket::MOST {
                set.push(control.client_fd(i));
            }
        }
        let first_listener = set.len();
        // Paused or full, only signals (a child exit, say) and the end of a pause wake us.
        for listener in &self.listeners[..listening] {
            set.push(listener.raw_fd());
        }
        for fd in state.proxy.iter().flat_map(WaitingRoom::fds) {
            set.push(fd);
        }
        let polled = set.poll(deadline::poll_timeout(timeout));
        let control = self.control.is_some();
        Ready {
            // EINTR means a handler ran: its byte is in the pipe, so drain it now rather than
            // pay another poll to find it.
            woken: polled == Err(Errno::EINTR) || set.ready(PIPE),
            failed: polled.err().filter(|&errno| errno != Errno::EINTR),
            // Up to 64 listeners are polled (`setup` refuses more).
            listeners: (0..listening)
                .filter(|&i| set.ready(first_listener + i))
                .fold(0u64, |bits, i| bits | 1 << i),
            waiting_from: first_listener + listening,
            lifeline: set.ready(LIFELINE),
            scrapes: set.ready(METRICS),
            control: control && set.ready(CONTROL),
            controllers: (0..control_socket::MOST)
                .filter(|&i| control && set.ready(CONTROL_CLIENTS + i))
                .fold(0u64, |bits, i| bits | 1 << i),
        }
    }

    /// Serves what `wait` found ready: signals first (a stop ends the loop), then exits, the UDP
    /// worker, scrapes, the control socket, PROXY headers, and the listeners.
    #[inline(always)]
    fn act(&mut self, ready: Ready) -> Option<Stop> {
        let pending = self.wakeup.take(ready.woken);
        if let Some((signal, count)) = pending.stop {
            return Some(Stop::Signal(signal, count));
        }
        if ready.lifeline && self.harness.lifeline_ended() {
            return Some(Stop::Lifeline);
        }
        if let Some(errno) = ready.failed {
            // Only ENOMEM is plausible here; do not spin while memory is short.
            self.state.counts.accept_failures += 1;
            if let Some(held) = self.state.accept_warnings.allow(Instant::now()) {
                logln!(
                    "warning: poll failed (retrying in 100ms): {errno}{}",
                    Suppressed(held)
                );
            }
            std::thread::sleep(BACKOFF);
        }
        self.collect_exits();
        if self.udp.is_some() {
            self.restart_udp_worker(Instant::now());
        }
        if pending.stats {
            logln!("stats {}", self.snapshot());
        }
        if ready.scrapes {
            self.accept_scrapes();
        }
        if self.control.is_some() {
            self.serve_control(ready.control, ready.controllers);
        }
        // The waiting connections follow the listeners in the poll set.
        self.admit_waiting(ready.waiting_from);
        for index in 0..self.listeners.len() {
            if ready.listeners & (1 << index) != 0 {
                self.accept_batch(index);
            }
        }
        None
    }

    pub(super) fn snapshot(&self) -> Snapshot {
        Snapshot::take(
            self.state.children.serving(),
            self.state.counts,
            self.shared,
            self.started,
            self.udp.is_some(),
            self.template.settings.dump.map(|dump| dump.counts),
        )
    }
}

/// What one poll found: read once, right after it, so the loop acts on one consistent picture.
struct Ready {
    /// A signal handler wrote to the self-pipe.
    woken: bool,
    /// poll(2) itself failed (not EINTR).
    failed: Option<Errno>,
    /// Which listeners have connections waiting, as a bit set.
    listeners: u64,
    /// Where the connections waiting for their PROXY header begin in the poll set.
    waiting_from: usize,
    lifeline: bool,
    scrapes: bool,
    control: bool,
    /// Which control connections have something, as a bit set.
    controllers: u64,
}
