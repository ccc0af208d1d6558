//! The parent: poll, accept, fork, keep count of the children, and stop cleanly.
//!
//! One thread, one loop. poll(2) waits on the self-pipe (signals) and the listener. A ready
//! listener is accepted in batches; each client gets a child via fork(2) with the handled signals
//! blocked across it. Exits reaped by the SIGCHLD handler are collected and logged here. Failures
//! of accept or fork concern one connection or a passing shortage: they are logged (rate-limited)
//! and answered with a short pause in accepting, never with an exit or a busy loop.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Result;
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::WaitStatus;
use nix::unistd::{ForkResult, Pid, fork};
use socket2::Socket;

use crate::child;
use crate::children::{Child, Children};
use crate::cli::Options;
use crate::listener::{self, Listener};
use crate::log::{Peer, RateLimit, Secs, Suppressed};
use crate::logln;
use crate::reaper;
use crate::signals::{self, Wakeup};

/// Connections accepted per wake-up before the loop looks at signals and exits again.
const ACCEPT_BATCH: usize = 64;
/// How long accepting pauses after a resource shortage (EMFILE, fork's EAGAIN, ...).
const BACKOFF: Duration = Duration::from_millis(100);
/// How long children get to end after SIGTERM at shutdown before SIGKILL.
const GRACE: Duration = Duration::from_secs(5);
/// How long to wait for SIGKILLed children to be reaped before giving up on them.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// At most one warning line per second for each kind of fault.
const WARN_INTERVAL: Duration = Duration::from_secs(1);

/// Binds, announces readiness, serves until SIGTERM or SIGINT, then stops the children.
/// Errors are setup failures only; once listening, nothing ends the server but a stop signal.
pub fn run(options: &Options) -> Result<()> {
    let listener = Listener::bind(options.bind, options.port, options.backlog)?;
    let wakeup = signals::install()?;
    announce(listener.addr());
    logln!(
        "listening on {} pid={} backlog={} buffer={}",
        listener.addr(),
        std::process::id(),
        options.backlog,
        options.buffer_size
    );
    let mut parent = Parent {
        listener: Some(listener),
        wakeup,
        children: Children::with_capacity(1024),
        child_config: child::Config {
            buffer_size: options.buffer_size,
            quiet: options.quiet,
        },
        paused_until: None,
        accept_failures: Shortage::new(),
        fork_failures: Shortage::new(),
        accepted: 0,
        stopping: false,
    };
    parent.serve();
    parent.shutdown();
    Ok(())
}

/// The readiness line: the only thing forkecho ever writes to stdout, flushed at once so a
/// program that spawned us on port 0 can read the port. A closed stdout is not fatal.
fn announce(addr: SocketAddr) {
    let mut out = io::stdout().lock();
    if let Err(err) = writeln!(out, "listening on {addr}").and_then(|()| out.flush()) {
        logln!("warning: unable to write the listening line to stdout: {err}");
    }
}

struct Parent {
    /// None once shutdown has closed it.
    listener: Option<Listener>,
    wakeup: Wakeup,
    children: Children,
    child_config: child::Config,
    /// Accepting resumes at this instant after a resource shortage.
    paused_until: Option<Instant>,
    /// accept and poll failures for want of resources (not per-connection ones).
    accept_failures: Shortage,
    fork_failures: Shortage,
    accepted: u64,
    stopping: bool,
}

/// One kind of resource failure: every occurrence counted, warned about at most once per
/// `WARN_INTERVAL`.
struct Shortage {
    count: u64,
    warnings: RateLimit,
}

impl Shortage {
    fn new() -> Shortage {
        Shortage {
            count: 0,
            warnings: RateLimit::new(WARN_INTERVAL),
        }
    }

    /// Counts one failure; `Some(held back)` when it should be logged.
    fn record(&mut self, now: Instant) -> Option<u64> {
        self.count += 1;
        self.warnings.allow(now)
    }
}

impl Parent {
    fn serve(&mut self) {
        loop {
            let now = Instant::now();
            let pause = self
                .paused_until
                .map(|until| until.saturating_duration_since(now))
                .filter(|left| !left.is_zero());
            if pause.is_none() {
                self.paused_until = None;
            }
            let (polled, listener_ready) = {
                let listener = self.listener.as_ref().expect("listening until shutdown");
                let mut fds = [
                    PollFd::new(self.wakeup.fd(), PollFlags::POLLIN),
                    PollFd::new(listener.fd(), PollFlags::POLLIN),
                ];
                // While paused, only signals (and the end of the pause) wake us.
                let (fds, timeout) = match pause {
                    None => (&mut fds[..], PollTimeout::NONE),
                    Some(left) => (&mut fds[..1], timeout_of(left)),
                };
                let polled = poll(fds, timeout);
                let ready = fds.len() == 2 && fds[1].any().unwrap_or(false);
                (polled, ready)
            };
            if signals::stop_requested().is_some() {
                return;
            }
            if let Err(errno) = polled
                && errno != Errno::EINTR
            {
                // Only ENOMEM is plausible here; do not spin while memory is short.
                if let Some(held) = self.accept_failures.record(Instant::now()) {
                    logln!(
                        "warning: poll failed: {errno}; retrying in 100ms{}",
                        Suppressed(held)
                    );
                }
                std::thread::sleep(BACKOFF);
            }
            self.wakeup.drain();
            self.collect_exits();
            if listener_ready {
                self.accept_batch();
            }
        }
    }

    fn accept_batch(&mut self) {
        for _ in 0..ACCEPT_BATCH {
            if signals::stop_requested().is_some() {
                return;
            }
            let accepted = self.listener.as_ref().expect("listening").accept();
            match accepted {
                Ok((client, peer)) => self.spawn(client, peer),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) if listener::is_per_connection(&err) => {}
                Err(err) => {
                    // EMFILE, ENFILE, ENOBUFS, ENOMEM: the listener stays readable, so polling it
                    // again at once would spin. Pause; the connection waits in the backlog.
                    let now = self.pause_accepting();
                    if let Some(held) = self.accept_failures.record(now) {
                        logln!(
                            "warning: accept failed (accepts paused {}ms): {err}{}",
                            BACKOFF.as_millis(),
                            Suppressed(held)
                        );
                    }
                    return;
                }
            }
        }
    }

    /// Forks a child for `client`. The handled signals stay blocked across fork so no handler
    /// runs in the child, and so the child's SIGCHLD cannot be handled before it is in the table.
    fn spawn(&mut self, client: Socket, peer: SocketAddr) {
        let blocked = signals::block();
        // The parent never starts a thread; signal handlers run on the main thread and are
        // blocked here. So the child may use the allocator and anything else, as the parent could.
        // SAFETY: fork in a single-threaded process leaves the child in a consistent state.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                let listener = self.listener.as_ref().expect("listening").raw_fd();
                let [pipe_read, pipe_write] = self.wakeup.raw_fds();
                child::serve(
                    blocked,
                    client,
                    peer,
                    &[listener, pipe_read, pipe_write],
                    self.child_config,
                )
            }
            Ok(ForkResult::Parent { child }) => {
                self.children.insert(
                    child,
                    Child {
                        peer,
                        since: Instant::now(),
                    },
                );
                drop(client);
                drop(blocked);
                self.accepted += 1;
                if !self.child_config.quiet {
                    logln!(
                        "accept peer={} pid={child} live={}",
                        Peer(peer),
                        self.children.len()
                    );
                }
            }
            Err(errno) => {
                drop(blocked);
                // The client sees the connection closed; the server pauses, then goes on.
                drop(client);
                let now = self.pause_accepting();
                if let Some(held) = self.fork_failures.record(now) {
                    logln!(
                        "warning: fork failed for peer={} (connection closed, accepts paused {}ms): {}{}",
                        Peer(peer),
                        BACKOFF.as_millis(),
                        io::Error::from(errno),
                        Suppressed(held)
                    );
                }
            }
        }
    }

    /// Stops polling the listener for `BACKOFF`; returns now.
    fn pause_accepting(&mut self) -> Instant {
        let now = Instant::now();
        self.paused_until = Some(now + BACKOFF);
        now
    }

    /// Takes the exits the SIGCHLD handler reaped, logging the abnormal ones.
    fn collect_exits(&mut self) {
        while reaper::EXITS.drain(|pid, status| self.child_exited(Pid::from_raw(pid), status)) {
            // The ring overflowed and the handler left zombies: reap them here, with SIGCHLD
            // blocked so this loop is the ring's only producer meanwhile.
            let _blocked = signals::block();
            reaper::EXITS.reap();
        }
    }

    fn child_exited(&mut self, pid: Pid, status: i32) {
        let Some(child) = self.children.remove(pid) else {
            logln!("warning: reaped a child that was not in the table pid={pid}");
            return;
        };
        let peer = Peer(child.peer);
        let lived = Secs(child.since.elapsed());
        match WaitStatus::from_raw(pid, status) {
            Ok(WaitStatus::Exited(_, 0)) => {}
            Ok(WaitStatus::Exited(_, code)) => {
                logln!("child pid={pid} peer={peer} exited status={code} after={lived}");
            }
            // At shutdown we sent these ourselves; the summary line counts them.
            Ok(WaitStatus::Signaled(_, Signal::SIGTERM | Signal::SIGINT | Signal::SIGKILL, _))
                if self.stopping => {}
            Ok(WaitStatus::Signaled(_, signal, core)) => {
                let core = if core { " core-dumped" } else { "" };
                logln!(
                    "child pid={pid} peer={peer} killed signal={}{core} after={lived}",
                    signal.as_str()
                );
            }
            // waitpid without WUNTRACED/WCONTINUED reports only exits and deaths.
            _ => {}
        }
    }

    /// Closes the listener, asks the children to stop (SIGTERM), waits up to `GRACE` (cut short
    /// by a second stop signal), then SIGKILLs the rest and reaps them.
    fn shutdown(mut self) {
        let Some((signal, stops)) = signals::stop_requested() else {
            return;
        };
        self.stopping = true;
        // Closing the listener first frees the port for a successor at once.
        self.listener = None;
        let started = Instant::now();
        logln!(
            "stopping signal={} live={}",
            signal.as_str(),
            self.children.len()
        );
        self.signal_children(Signal::SIGTERM);
        let mut killed = 0;
        if !self.wait_for_children(started + GRACE, Some(stops)) {
            killed = self.children.len();
            self.signal_children(Signal::SIGKILL);
            self.wait_for_children(Instant::now() + KILL_WAIT, None);
        }
        logln!(
            "stopped accepted={} accept-failures={} fork-failures={} killed={killed} unreaped={} duration={}",
            self.accepted,
            self.accept_failures.count,
            self.fork_failures.count,
            self.children.len(),
            Secs(started.elapsed())
        );
    }

    fn signal_children(&mut self, signal: Signal) {
        // With SIGCHLD blocked no child can be reaped, so every pid left in the table after
        // this collect is still ours: the signal cannot reach a recycled pid.
        let _blocked = signals::block();
        self.collect_exits();
        for pid in self.children.pids() {
            let _ = kill(pid, signal);
        }
    }

    /// Waits until every child is reaped (true) or the deadline passes (false). With
    /// `stops_seen`, a further stop signal ends the wait early.
    fn wait_for_children(&mut self, deadline: Instant, stops_seen: Option<usize>) -> bool {
        loop {
            self.collect_exits();
            if self.children.is_empty() {
                return true;
            }
            let hurry = signals::stop_requested().map(|(_, n)| n);
            if stops_seen.is_some() && hurry > stops_seen {
                return false;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let mut fds = [PollFd::new(self.wakeup.fd(), PollFlags::POLLIN)];
            let _ = poll(&mut fds, timeout_of(left));
            self.wakeup.drain();
        }
    }
}

/// A poll timeout that never rounds a pending wait down to zero (which would spin).
fn timeout_of(left: Duration) -> PollTimeout {
    let millis = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
    PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_round_up_to_whole_milliseconds() {
        assert_eq!(i32::from(timeout_of(Duration::from_micros(1))), 1);
        assert_eq!(i32::from(timeout_of(Duration::from_millis(100))), 100);
        assert_eq!(i32::from(timeout_of(Duration::from_micros(100_001))), 101);
        assert_eq!(
            i32::from(timeout_of(Duration::from_secs(u64::MAX))),
            i32::MAX
        );
    }
}
