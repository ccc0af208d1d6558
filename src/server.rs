//! The parent: poll, accept, fork, keep count of the children, and stop cleanly.
//!
//! One thread, one loop. poll(2) waits on the self-pipe (signals) and the listener. A ready
//! listener is accepted in batches; each client gets a child via fork(2) with the handled signals
//! blocked across it. Exits reaped by the SIGCHLD handler are collected and logged here. At
//! `--max-clients` the listener is simply left out of the poll set, so new connections wait in the
//! kernel's backlog and the next child exit (SIGCHLD, through the self-pipe) resumes accepting.
//! Failures of accept or fork concern one connection or a passing shortage: they are logged
//! (rate-limited) and answered with a short pause in accepting, never with an exit or a busy loop.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::WaitStatus;
use nix::unistd::{ForkResult, Pid, fork};
use socket2::Socket;

use crate::activation::{self, Expect};
use crate::child;
use crate::children::{Child, Children};
use crate::cli::Options;
use crate::listener::{self, Listener};
use crate::log::{Peer, RateLimit, Secs, Suppressed};
use crate::logln;
use crate::memory::ForkShared;
use crate::privileges;
use crate::reaper;
use crate::signals::{self, Wakeup};
use crate::stats::{self, Counts, Snapshot};

/// Connections accepted per wake-up before the loop looks at signals and exits again.
const ACCEPT_BATCH: usize = 64;
/// How long accepting pauses after a resource shortage (EMFILE, fork's EAGAIN, ...).
const BACKOFF: Duration = Duration::from_millis(100);
/// How long to wait for SIGKILLed children to be reaped before giving up on them.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// At most one warning line per second for each kind of fault.
const WARN_INTERVAL: Duration = Duration::from_secs(1);

/// Binds, drops privileges, announces readiness, serves until a stop signal, then stops the
/// children. Errors are setup failures only; once listening, only a stop signal ends the server.
pub fn run(options: &Options) -> Result<()> {
    let started = Instant::now();
    let passed = activation::passed_sockets()?;
    // Unknown users and groups are refused before anything is bound.
    let identity = privileges::resolve(options.user.as_deref(), options.group.as_deref())?;
    // A passed socket comes bound and listening: --port, --bind and --backlog do not apply.
    let (listener, origin, backlog) = match passed {
        0 => {
            let listener = Listener::bind(options.bind, options.port, options.backlog)?;
            (listener, "", options.backlog.to_string())
        }
        n => {
            let socket = activation::take_socket(n, Expect::Listening)?;
            (
                Listener::adopt(socket)?,
                " from=systemd",
                "unit".to_string(),
            )
        }
    };
    listener.set_connection_options(options.idle_timeout)?;
    if let Some(identity) = &identity {
        privileges::drop_to(identity)?;
    }
    let bytes_total = stats::shared_byte_counter()?;
    let wakeup = signals::install()?;
    announce(listener.addr());
    logln!(
        "listening on {}{origin} pid={} backlog={} buffer={} max-clients={} max-per-ip={} idle-timeout={}",
        listener.addr(),
        std::process::id(),
        backlog,
        options.buffer_size,
        options.max_clients,
        options.max_per_ip,
        Secs(options.idle_timeout)
    );
    if let Some(identity) = &identity {
        logln!("privileges dropped {}", identity.description);
    }
    // In memory fork does not write-protect: updating it after every fork costs no page copies.
    let mut parent = ForkShared::new(Parent {
        listener: Some(listener),
        wakeup,
        children: Children::new(options.max_clients as usize, options.max_per_ip > 0)?,
        child_config: child::Config {
            buffer_size: options.buffer_size,
            quiet: options.quiet,
            bytes_total,
            splice: !options.no_splice,
            parent: nix::unistd::getpid(),
        },
        max_clients: options.max_clients as usize,
        max_per_ip: options.max_per_ip,
        grace: options.grace,
        started,
        paused_until: None,
        counts: Counts::default(),
        accept_warnings: RateLimit::new(WARN_INTERVAL),
        fork_warnings: RateLimit::new(WARN_INTERVAL),
        refusal_warnings: RateLimit::new(WARN_INTERVAL),
        capacity_warnings: RateLimit::new(WARN_INTERVAL),
        stopping: false,
    })
    .context("unable to map the server's state")?;
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
    max_clients: usize,
    /// Zero: no limit.
    max_per_ip: u32,
    grace: Duration,
    started: Instant,
    /// Accepting resumes at this instant after a resource shortage.
    paused_until: Option<Instant>,
    counts: Counts,
    accept_warnings: RateLimit,
    fork_warnings: RateLimit,
    refusal_warnings: RateLimit,
    capacity_warnings: RateLimit,
    stopping: bool,
}

impl Parent {
    fn serve(&mut self) {
        let mut was_full = false;
        loop {
            let now = Instant::now();
            let pause = self
                .paused_until
                .map(|until| until.saturating_duration_since(now))
                .filter(|left| !left.is_zero());
            if pause.is_none() {
                self.paused_until = None;
            }
            let full = self.children.len() >= self.max_clients;
            if full && !was_full {
                if let Some(held) = self.capacity_warnings.allow(now) {
                    logln!(
                        "limit max-clients={} reached: new connections wait in the backlog{}",
                        self.max_clients,
                        Suppressed(held)
                    );
                }
            }
            was_full = full;
            let (polled, signalled, listener_ready) = {
                let listener = self.listener.as_ref().expect("listening until shutdown");
                let mut fds = [
                    PollFd::new(self.wakeup.fd(), PollFlags::POLLIN),
                    PollFd::new(listener.fd(), PollFlags::POLLIN),
                ];
                // Paused or full, only signals (a child exit, say) and the end of a pause wake us.
                let watched = if pause.is_some() || full { 1 } else { 2 };
                let timeout = pause.map_or(PollTimeout::NONE, timeout_of);
                let fds = &mut fds[..watched];
                let polled = poll(fds, timeout);
                // EINTR means a handler ran: its byte is in the pipe, so drain it now rather than
                // pay another poll to find it.
                let signalled = polled == Err(Errno::EINTR) || fds[0].any().unwrap_or(false);
                let ready = fds.len() == 2 && fds[1].any().unwrap_or(false);
                (polled, signalled, ready)
            };
            if signals::stop_requested().is_some() {
                return;
            }
            if let Err(errno) = polled
                && errno != Errno::EINTR
            {
                // Only ENOMEM is plausible here; do not spin while memory is short.
                self.counts.accept_failures += 1;
                if let Some(held) = self.accept_warnings.allow(Instant::now()) {
                    logln!(
                        "warning: poll failed (retrying in 100ms): {errno}{}",
                        Suppressed(held)
                    );
                }
                std::thread::sleep(BACKOFF);
            }
            if signalled {
                self.wakeup.drain();
            }
            self.collect_exits();
            if signals::stats_requested() {
                logln!("stats {}", self.snapshot());
            }
            if listener_ready {
                self.accept_batch();
            }
        }
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot::take(
            self.children.len(),
            self.counts,
            self.child_config.bytes_total,
            self.started,
        )
    }

    fn accept_batch(&mut self) {
        for _ in 0..ACCEPT_BATCH {
            // A failed fork pauses accepting: the rest of the backlog waits for the pause to end
            // (processes may have freed up by then) instead of being accepted and closed at once.
            if signals::stop_requested().is_some()
                || self.children.len() >= self.max_clients
                || self.paused_until.is_some()
            {
                return;
            }
            let accepted = self.listener.as_ref().expect("listening").accept();
            match accepted {
                Ok((client, peer)) => self.admit(client, peer),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) if listener::is_per_connection(&err) => {}
                Err(err) => {
                    // EMFILE, ENFILE, ENOBUFS, ENOMEM: the listener stays readable, so polling it
                    // again at once would spin. Pause; the connection waits in the backlog.
                    let now = self.pause_accepting();
                    self.counts.accept_failures += 1;
                    if let Some(held) = self.accept_warnings.allow(now) {
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

    /// Serves `client` unless its address is at `--max-per-ip`: then it is closed at once, told
    /// nothing, and logged (rate-limited) as refused.
    fn admit(&mut self, client: Socket, peer: SocketAddr) {
        if self.max_per_ip > 0 && self.children.serving(peer) >= self.max_per_ip {
            drop(client);
            self.counts.refused_per_ip += 1;
            if let Some(held) = self.refusal_warnings.allow(Instant::now()) {
                logln!(
                    "refused peer={} reason=max-per-ip limit={}{}",
                    Peer(peer),
                    self.max_per_ip,
                    Suppressed(held)
                );
            }
            return;
        }
        self.counts.accepted += 1;
        self.spawn(client, peer);
    }

    /// Forks a child for `client`. The handled signals stay blocked across fork so no handler
    /// runs in the child, and so the child's SIGCHLD cannot be handled before it is in the table.
    fn spawn(&mut self, client: Socket, peer: SocketAddr) {
        let listener = self.listener.as_ref().expect("listening").raw_fd();
        let [pipe_read, pipe_write] = self.wakeup.raw_fds();
        let inherited = [listener, pipe_read, pipe_write];
        let config = self.child_config;
        let blocked = signals::block();
        // The parent never starts a thread; signal handlers run on the main thread and are
        // blocked here. So the child may use the allocator and anything else, as the parent could.
        // SAFETY: fork in a single-threaded process leaves the child in a consistent state.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => child::serve(blocked, client, peer, &inherited, config),
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
                self.counts.fork_failures += 1;
                if let Some(held) = self.fork_warnings.allow(now) {
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
        while reaper::exits().drain(|pid, status| self.child_exited(Pid::from_raw(pid), status)) {
            // The ring overflowed and the handler left zombies: reap them here, with SIGCHLD
            // blocked so this loop is the ring's only producer meanwhile.
            let _blocked = signals::block();
            reaper::exits().reap();
        }
    }

    fn child_exited(&mut self, pid: Pid, status: i32) {
        self.counts.reaped += 1;
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
            // At shutdown we sent it ourselves; the summary line counts them.
            Ok(WaitStatus::Signaled(_, Signal::SIGKILL, _)) if self.stopping => {}
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

    /// Closes the listener, asks the children to stop (SIGTERM: each closes its connection), waits
    /// up to `--grace` (cut short by a second stop signal), then SIGKILLs the rest and reaps them.
    fn shutdown(&mut self) {
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
        if !self.wait_for_children(started + self.grace, Some(stops)) {
            killed = self.children.len();
            self.signal_children(Signal::SIGKILL);
            self.wait_for_children(Instant::now() + KILL_WAIT, None);
        }
        logln!(
            "stopped killed={killed} unreaped={} duration={} {}",
            self.children.len(),
            Secs(started.elapsed()),
            self.snapshot()
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
