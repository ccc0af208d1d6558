//! Stopping cleanly: close the listeners, ask the children to close their connections, wait up
//! to `--grace` (cut short by a second stop signal), then SIGKILL the rest and reap them.
//!
//! Children are signalled with SIGCHLD blocked, after the exits reaped so far are collected, so
//! every pid signalled is a live child of ours, never a recycled pid.

use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, poll};
use nix::sys::signal::{Signal, kill};

use super::handlers;
use super::state::{Parent, Stop};
use crate::deadline;
use crate::log::Secs;
use crate::log::logln;

/// How long to wait for SIGKILLed children to be reaped before giving up on them.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// ` left-in-place="unix:/a unix:/b"` on the `stopped` line: socket files not removed because
/// they were no longer the ones this server bound; nothing when there are none.
struct LeftInPlace<'a>(&'a [String]);

impl std::fmt::Display for LeftInPlace<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            return Ok(());
        }
        write!(f, " left-in-place={}", crate::log::Quoted(self.0.join(" ")))
    }
}

impl Parent {
    /// Closes the listeners, asks the children to stop (SIGTERM: each closes its connection),
    /// waits up to `--grace` (cut short by a further stop signal), then SIGKILLs the rest and
    /// reaps them, removes the port file, and logs the `stopped` line.
    pub fn shutdown(&mut self, stop: Stop) {
        self.state.stopping = true;
        self.harness.stopping();
        // Closing the listeners first frees the port for a successor at once; connections still
        // waiting for their PROXY header go with them. A socket file that is no longer the one
        // bound (removed, and bound again by another server) is left to its new owner.
        let mut left: Vec<String> = (self.listeners.iter_mut())
            .filter_map(|listener| listener.remove_file())
            .collect();
        left.extend(self.control.as_mut().and_then(|c| c.remove_file()));
        self.listeners.clear();
        self.metrics = None;
        // The worker holds its own copies until it stops.
        if let Some(udp) = &mut self.udp {
            udp.sockets.clear();
        }
        if let Some(room) = &mut self.state.proxy {
            room.clear();
        }
        let started = Instant::now();
        let live = self.state.children.serving();
        // Stop signals seen so far: one more cuts the grace short.
        let stops = match stop {
            Stop::Signal(signal, stops) => {
                logln!("stopping signal={} live={live}", signal.as_str());
                stops
            }
            Stop::Lifeline => {
                logln!("stopping lifeline=stdin live={live}");
                0
            }
        };
        self.signal_children(Signal::SIGTERM);
        let mut killed = 0;
        if !self.wait_for_children(started + self.grace, Some(stops)) {
            killed = self.state.children.len();
            self.signal_children(Signal::SIGKILL);
            self.wait_for_children(Instant::now() + KILL_WAIT, None);
        }
        self.harness.stopped();
        logln!(
            "stopped killed={killed} unreaped={} duration={} {}{}",
            self.state.children.len(),
            Secs(started.elapsed()),
            self.snapshot(),
            LeftInPlace(&left)
        );
    }

    fn signal_children(&mut self, signal: Signal) {
        // With SIGCHLD blocked no child can be reaped, so every pid left in the table after
        // this collect is still ours: the signal cannot reach a recycled pid.
        let _blocked = handlers::block();
        self.collect_exits();
        for pid in self.state.children.pids() {
            let _ = kill(pid, signal);
        }
    }

    /// Waits until every child is reaped (true) or the deadline passes (false). With
    /// `stops_seen`, a further stop signal ends the wait early.
    fn wait_for_children(&mut self, deadline: Instant, stops_seen: Option<usize>) -> bool {
        let mut woken = false;
        loop {
            let pending = self.wakeup.take(woken);
            self.collect_exits();
            if self.state.children.is_empty() {
                return true;
            }
            let hurry = pending.stop.map(|(_, n)| n);
            if stops_seen.is_some() && hurry > stops_seen {
                return false;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let mut fds = [PollFd::new(self.wakeup.fd(), PollFlags::POLLIN)];
            let polled = poll(&mut fds, deadline::poll_timeout(Some(left)));
            woken = polled == Err(Errno::EINTR) || fds[0].any().unwrap_or(false);
        }
    }
}
