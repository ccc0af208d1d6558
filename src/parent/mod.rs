//! The parent: poll, accept, fork, keep count of the children, and stop cleanly.
//!
//! One thread, one loop (`Parent::serve`). poll(2) waits on the self-pipe (`signals`) and the
//! listeners. A ready listener is accepted in batches; each client is checked against the
//! `limits` and gets a child through `fork`, with the handled signals blocked across it. The
//! SIGCHLD handler reaps exits into the `reaper`'s ring; the loop collects them into the table
//! of `children` and logs the abnormal ones. At `--max-clients` the listeners are simply left out of
//! the poll set, so new connections wait in the kernel's backlog and the next child exit (SIGCHLD,
//! through the self-pipe) resumes accepting. Failures of accept or fork concern one connection or
//! a passing shortage: they are logged (rate-limited) and answered with a short pause in
//! accepting, never with an exit or a busy loop.
//!
//! What the parent fixes at startup (the listeners, the self-pipe, the children's settings) sits
//! in `Parent` itself; what it writes while serving sits in `Books`, in memory children do not
//! inherit (see `memory`).

mod children;
mod fork;
pub mod limits;
mod oom;
mod pollset;
pub mod proxy;
pub mod rate;
mod reaper;
pub mod signals;
pub mod stats;

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, poll};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;
use socket2::Socket;

use crate::child::{self, Inherited};
use crate::cli::Options;
use crate::log::{Peer, PeerVia, RateLimit, Secs, Suppressed, Via};
use crate::logln;
use crate::memory::ParentOnly;
use crate::setup::listener::Listener;
use crate::wait;
use children::{Child, Children};
use limits::Limits;
use signals::Wakeup;
use stats::{Counts, Snapshot};

/// Connections accepted per wake-up before the loop looks at signals and exits again.
const ACCEPT_BATCH: usize = 64;
/// How long accepting pauses after a resource shortage (EMFILE, fork's EAGAIN, ...).
const BACKOFF: Duration = Duration::from_millis(100);
/// How long to wait for SIGKILLed children to be reaped before giving up on them.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// At most one warning line per second for each kind of fault.
const WARN_INTERVAL: Duration = Duration::from_secs(1);

pub struct Parent {
    /// Empty once shutdown has closed them.
    listeners: Vec<Listener>,
    /// Their fds, which every child closes.
    listener_fds: &'static [RawFd],
    wakeup: Wakeup,
    /// What every child gets, by value.
    child: child::Config,
    /// Counters the children add to.
    shared: &'static stats::Shared,
    /// Raises the parent's oom_score_adj across each fork, for the child to inherit.
    oom: Option<oom::OomScore>,
    pid: Pid,
    grace: Duration,
    /// How long a connection may take to send its PROXY header.
    proxy_deadline: Duration,
    started: Instant,
    /// Installed on the parent (and so on every child) by `confine`.
    sandbox: Option<&'static child::sandbox::Sandbox>,
    books: ParentOnly<Books>,
}

/// What the parent writes while it serves: never seen by a child.
struct Books {
    children: Children,
    limits: Limits,
    /// `--rate-per-ip`'s table, when it is set.
    rates: Option<rate::RateTable>,
    /// With `--proxy-protocol`: where headers are read, and the connections whose header has
    /// not come in full yet.
    proxy: Option<proxy::Reader>,
    waiting: Vec<proxy::Waiting>,
    /// What the loop polls, refilled before every poll (see `pollset`).
    polled: pollset::PollSet,
    counts: Counts,
    /// Accepting resumes at this instant after a resource shortage.
    paused_until: Option<Instant>,
    /// Whether the last look found the server at --max-clients (to log reaching it once).
    was_full: bool,
    accept_warnings: RateLimit,
    fork_warnings: RateLimit,
    refusal_warnings: RateLimit,
    capacity_warnings: RateLimit,
    proxy_warnings: RateLimit,
    stopping: bool,
}

impl Parent {
    /// Everything the loop needs, made before the server says it is ready: the shared byte
    /// counter, the signal handlers and their self-pipe, the reaper's ring, the child table.
    pub fn new(listeners: Vec<Listener>, options: &Options, started: Instant) -> Result<Parent> {
        let shared = stats::shared()?;
        let sandbox = child::sandbox::prepare(options.no_sandbox).map_err(anyhow::Error::msg)?;
        let wakeup = signals::install()?;
        let max_clients = options.max_clients as usize;
        let books = ParentOnly::new(Books {
            children: Children::new()?,
            limits: Limits::new(
                max_clients,
                options.max_per_ip,
                limits::Grouping {
                    v4: options.ipv4_prefix,
                    v6: options.ipv6_prefix,
                },
            ),
            rates: options
                .rate_per_ip
                .map(rate::RateTable::new)
                .transpose()
                .context("unable to map the --rate-per-ip table")?,
            proxy: match options.proxy_protocol {
                true => {
                    Some(proxy::Reader::new().context("unable to map the PROXY header buffer")?)
                }
                false => None,
            },
            waiting: Vec::new(),
            // The self-pipe, every listener, and as many waiting connections as there may be.
            polled: pollset::PollSet::new(1 + listeners.len() + max_clients)
                .context("unable to map the poll set")?,
            counts: Counts::default(),
            paused_until: None,
            was_full: false,
            accept_warnings: RateLimit::new(WARN_INTERVAL),
            fork_warnings: RateLimit::new(WARN_INTERVAL),
            refusal_warnings: RateLimit::new(WARN_INTERVAL),
            capacity_warnings: RateLimit::new(WARN_INTERVAL),
            proxy_warnings: RateLimit::new(WARN_INTERVAL),
            stopping: false,
        })
        .context("unable to map the parent's bookkeeping")?;
        let listener_fds = listeners.iter().map(Listener::raw_fd).collect::<Vec<_>>();
        Ok(Parent {
            listener_fds: Vec::leak(listener_fds),
            listeners,
            wakeup,
            child: child::Config {
                buffer_size: options.buffer_size,
                quiet: options.quiet,
                bytes_total: &shared.bytes,
                splice: !options.no_splice,
                max_duration: options.max_duration,
                idle_timeout: options.idle_timeout,
                marks: match options.max_per_ip {
                    0 => None,
                    _ => Some(limits::Marks::map().context("unable to map the close marks")?),
                },
                serial: 0,
                faults: options.faults().map(|faults| &*Box::leak(Box::new(faults))),
                sandbox: sandbox.map(|_| child::sandbox::Confine::Inherited),
            },
            sandbox,
            shared,
            oom: oom::OomScore::open(),
            pid: nix::unistd::getpid(),
            grace: options.grace,
            proxy_deadline: proxy::deadline(options.idle_timeout),
            started,
            books,
        })
    }

    /// Installs the sandbox on the parent, once everything before serving is done: from here
    /// on the parent and every child it forks make only the system calls serving needs.
    pub fn confine(&self) -> Result<()> {
        if let Some(sandbox) = self.sandbox {
            sandbox.install().map_err(|err| {
                anyhow::anyhow!(
                    "unable to install the sandbox: {err}; --no-sandbox serves without it"
                )
            })?;
        }
        Ok(())
    }

    /// The faults children apply, if any were asked for (with the seed chosen).
    pub fn faults(&self) -> Option<&'static child::faults::Faults> {
        self.child.faults
    }

    /// The addresses listened on, with the real ports.
    pub fn addrs(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.listeners.iter().map(Listener::addr)
    }

    /// Serves until a stop signal.
    pub fn serve(&mut self) {
        loop {
            let now = Instant::now();
            let pause = self
                .books
                .paused_until
                .map(|until| until.saturating_duration_since(now))
                .filter(|left| !left.is_zero());
            if pause.is_none() {
                self.books.paused_until = None;
            }
            let full = self.note_capacity(now);
            // Until the pause ends, or the first PROXY header's deadline passes, at most.
            let deadlines = self.books.waiting.iter().map(|w| w.deadline);
            let until_deadline = deadlines.min().map(|at| at.saturating_duration_since(now));
            let timeout = pause.into_iter().chain(until_deadline).min();
            let listening = match pause.is_none() && !full {
                true => self.listeners.len(),
                false => 0,
            };
            let books = &mut *self.books;
            let set = &mut books.polled;
            set.clear();
            set.push(self.wakeup.raw_fds()[0]);
            // Paused or full, only signals (a child exit, say) and the end of a pause wake us.
            for listener in &self.listeners[..listening] {
                set.push(listener.raw_fd());
            }
            for waiting in &books.waiting {
                set.push(waiting.socket.as_raw_fd());
            }
            let polled = set.poll(wait::timeout(timeout));
            // EINTR means a handler ran: its byte is in the pipe, so drain it now rather than pay
            // another poll to find it.
            let woken = polled == Err(Errno::EINTR) || set.ready(0);
            // Which listeners have connections waiting, as a bit set (up to 64 listeners are
            // polled; `setup` refuses more).
            let ready = (0..listening)
                .filter(|&i| set.ready(1 + i))
                .fold(0u64, |bits, i| bits | 1 << i);
            let pending = self.wakeup.take(woken);
            if pending.stop.is_some() {
                return;
            }
            if let Err(errno) = polled
                && errno != Errno::EINTR
            {
                // Only ENOMEM is plausible here; do not spin while memory is short.
                self.books.counts.accept_failures += 1;
                if let Some(held) = self.books.accept_warnings.allow(Instant::now()) {
                    logln!(
                        "warning: poll failed (retrying in 100ms): {errno}{}",
                        Suppressed(held)
                    );
                }
                std::thread::sleep(BACKOFF);
            }
            self.collect_exits();
            if pending.stats {
                logln!("stats {}", self.snapshot());
            }
            if !self.books.waiting.is_empty() {
                // The waiting connections follow the listeners in the poll set.
                self.read_headers(1 + listening);
            }
            for index in 0..self.listeners.len() {
                if ready & (1 << index) != 0 {
                    self.accept_batch(index);
                }
            }
        }
    }

    /// Whether the server is at --max-clients; logs (rate-limited) when it gets there.
    fn note_capacity(&mut self, now: Instant) -> bool {
        let books = &mut *self.books;
        let full = books
            .limits
            .full(books.children.len() + books.waiting.len());
        if full
            && !books.was_full
            && let Some(held) = books.capacity_warnings.allow(now)
        {
            logln!(
                "limit max-clients={} reached: new connections wait in the backlog{}",
                books.limits.max_clients(),
                Suppressed(held)
            );
        }
        books.was_full = full;
        full
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot::take(
            self.books.children.len(),
            self.books.counts,
            self.shared,
            self.started,
        )
    }

    fn accept_batch(&mut self, index: usize) {
        for _ in 0..ACCEPT_BATCH {
            // A failed fork pauses accepting: the rest of the backlog waits for the pause to end
            // (processes may have freed up by then) instead of being accepted and closed at once.
            let books = &*self.books;
            if signals::stop_requested().is_some()
                || books
                    .limits
                    .full(books.children.len() + books.waiting.len())
                || books.paused_until.is_some()
            {
                return;
            }
            let accepted = self.listeners[index].accept();
            match accepted {
                Ok((client, peer)) => match self.books.proxy.is_some() {
                    true => self.read_header(client, peer),
                    false => self.admit(client, peer, Via::Direct),
                },
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) if crate::setup::listener::is_per_connection(&err) => {}
                Err(err) => {
                    // EMFILE, ENFILE, ENOBUFS, ENOMEM: the listener stays readable, so polling it
                    // again at once would spin. Pause; the connection waits in the backlog.
                    let now = self.pause_accepting();
                    self.books.counts.accept_failures += 1;
                    if let Some(held) = self.books.accept_warnings.allow(now) {
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

    /// With `--proxy-protocol`, a new connection from `from`: its header is read at once if it
    /// is all there (the usual case), or the connection waits for the rest (`read_headers`).
    fn read_header(&mut self, client: Socket, from: SocketAddr) {
        let reader = self.books.proxy.as_mut().expect("--proxy-protocol");
        match reader.read(&client) {
            proxy::Read::Done(source) => self.admit_proxied(client, from, source),
            proxy::Read::More => {
                let deadline = Instant::now() + self.proxy_deadline;
                let waiting = proxy::Waiting {
                    socket: client,
                    from,
                    deadline,
                };
                self.books.waiting.push(waiting);
            }
            proxy::Read::Fail(why) => self.proxy_failed(client, from, &why),
        }
    }

    /// Reads on the waiting connections the last poll found something on (entry `first` + i of
    /// the poll set is `waiting[i]`), and gives up on those past their deadline. Last to first,
    /// so a removal (`swap_remove`) moves only an entry already seen.
    fn read_headers(&mut self, first: usize) {
        let now = Instant::now();
        for index in (0..self.books.waiting.len()).rev() {
            let books = &mut *self.books;
            let readable = books.polled.ready(first + index);
            let waiting = &books.waiting[index];
            let expired = waiting.deadline <= now;
            if !readable && !expired {
                continue;
            }
            let reader = books.proxy.as_mut().expect("--proxy-protocol");
            let read = reader.read(&waiting.socket);
            if matches!(read, proxy::Read::More) && !expired {
                continue;
            }
            let proxy::Waiting { socket, from, .. } = books.waiting.swap_remove(index);
            match read {
                proxy::Read::Done(source) => self.admit_proxied(socket, from, source),
                proxy::Read::Fail(why) => self.proxy_failed(socket, from, &why),
                proxy::Read::More => {
                    let why = format!(
                        "no complete PROXY header within {}",
                        Secs(self.proxy_deadline)
                    );
                    self.proxy_failed(socket, from, &why);
                }
            }
        }
    }

    /// Serves a connection whose PROXY header said where it comes from.
    fn admit_proxied(&mut self, client: Socket, from: SocketAddr, source: proxy::Source) {
        match source {
            proxy::Source::Client(peer) => self.admit(client, peer, Via::Proxy(from)),
            proxy::Source::Local => self.admit(client, from, Via::Local),
        }
    }

    /// Closes a connection whose PROXY header is missing or broken, and says why.
    fn proxy_failed(&mut self, client: Socket, from: SocketAddr, why: &str) {
        drop(client);
        let books = &mut *self.books;
        books.counts.proxy_errors += 1;
        if let Some(held) = books.proxy_warnings.allow(Instant::now()) {
            logln!(
                "proxy-error peer={} error=\"{why}\"{}",
                Peer(from),
                Suppressed(held)
            );
        }
    }

    /// Serves `client` unless its address group is over `--rate-per-ip` or at `--max-per-ip`:
    /// then it is closed at once, before any fork, told nothing, and logged (rate-limited) as
    /// refused. `peer` is the client (from the PROXY header, if there was one).
    fn admit(&mut self, client: Socket, peer: SocketAddr, via: Via) {
        let books = &mut *self.books;
        let grouping = books.limits.grouping();
        if let Some(rates) = &mut books.rates
            && !rates.admit(grouping.key(peer), Instant::now())
        {
            drop(client);
            books.counts.rate_limited += 1;
            let rate = rates.rate();
            refused(
                books,
                PeerVia(peer, via),
                "rate-per-ip",
                rate,
                grouping.show(peer),
            );
            return;
        }
        let closed = || match self.child.marks {
            Some(marks) => closed_from(&books.children, &marks, grouping, peer),
            None => 0,
        };
        if books.limits.refuses(peer, closed) {
            drop(client);
            books.counts.refused_per_ip += 1;
            let limit = books.limits.max_per_ip();
            refused(
                books,
                PeerVia(peer, via),
                "max-per-ip",
                limit,
                grouping.show(peer),
            );
            return;
        }
        books.counts.accepted += 1;
        self.spawn(client, peer, via);
    }

    /// Forks a child for `client`, with the handled signals blocked from before the fork until
    /// the child is in the table.
    fn spawn(&mut self, client: Socket, peer: SocketAddr, via: Via) {
        if let Err(errno) = self.books.children.make_room() {
            self.fork_failed(peer, errno);
            return;
        }
        let blocked = signals::block();
        let inherited = Inherited {
            fds: self.inherited_fds(),
            listeners: self.listener_fds,
            mask: blocked.previous(),
            parent: self.pid,
        };
        let serial = (self.books.counts.accepted as u32).max(1);
        let config = child::Config {
            serial,
            ..self.child
        };
        // The child is born with the raised score; the parent takes its own back at once.
        let oom = self.oom.as_ref().filter(|oom| oom.raise());
        let forked = fork::fork_child(client, peer, via, config, inherited);
        if let Some(oom) = oom {
            oom.restore();
        }
        match forked {
            Ok(pid) => {
                // With SIGCHLD blocked nothing more can be reaped, so once the exits reaped so
                // far are collected, no pid in the table has been freed: the one fork just
                // returned, possibly a recycled one, cannot collide with a stale entry.
                self.collect_exits();
                let books = &mut *self.books;
                books.children.insert(
                    pid,
                    Child {
                        peer,
                        since: Instant::now(),
                        serial,
                    },
                );
                books.limits.opened(peer);
                drop(blocked);
                if !self.child.quiet {
                    logln!(
                        "accept peer={} pid={pid} live={}",
                        PeerVia(peer, via),
                        books.children.len()
                    );
                }
            }
            Err(errno) => {
                drop(blocked);
                self.fork_failed(peer, errno);
            }
        }
    }

    /// A child for `peer` could not be made (fork failed, or the table could not grow): the
    /// client saw its connection closed; the server pauses, then goes on.
    fn fork_failed(&mut self, peer: SocketAddr, errno: Errno) {
        let now = self.pause_accepting();
        self.books.counts.fork_failures += 1;
        if let Some(held) = self.books.fork_warnings.allow(now) {
            logln!(
                "warning: fork failed for peer={} (connection closed, accepts paused {}ms): {}{}",
                Peer(peer),
                BACKOFF.as_millis(),
                io::Error::from(errno),
                Suppressed(held)
            );
        }
    }

    /// The parent's fds a child must close besides the listeners: both ends of the self-pipe,
    /// and the oom_score_adj file (-1, which close ignores, when there is none).
    fn inherited_fds(&self) -> [RawFd; 3] {
        let [pipe_read, pipe_write] = self.wakeup.raw_fds();
        let oom = self.oom.as_ref().map_or(-1, oom::OomScore::fd);
        [pipe_read, pipe_write, oom]
    }

    /// Stops polling the listener for `BACKOFF`; returns now.
    fn pause_accepting(&mut self) -> Instant {
        let now = Instant::now();
        self.books.paused_until = Some(now + BACKOFF);
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
        let books = &mut *self.books;
        books.counts.reaped += 1;
        let Some(child) = books.children.remove(pid) else {
            logln!("warning: reaped a child that was not in the table pid={pid}");
            return;
        };
        books.limits.closed(child.peer);
        let peer = Peer(child.peer);
        let lived = Secs(child.since.elapsed());
        match WaitStatus::from_raw(pid, status) {
            Ok(WaitStatus::Exited(_, 0)) => {}
            Ok(WaitStatus::Exited(_, code)) => {
                logln!("child pid={pid} peer={peer} exited status={code} after={lived}");
            }
            // At shutdown we sent it ourselves; the summary line counts them.
            Ok(WaitStatus::Signaled(_, Signal::SIGKILL, _)) if books.stopping => {}
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
    pub fn shutdown(&mut self) {
        let Some((signal, stops)) = signals::stop_requested() else {
            return;
        };
        self.books.stopping = true;
        // Closing the listeners first frees the port for a successor at once; connections still
        // waiting for their PROXY header go with them.
        self.listeners.clear();
        self.books.waiting.clear();
        let started = Instant::now();
        logln!(
            "stopping signal={} live={}",
            signal.as_str(),
            self.books.children.len()
        );
        self.signal_children(Signal::SIGTERM);
        let mut killed = 0;
        if !self.wait_for_children(started + self.grace, Some(stops)) {
            killed = self.books.children.len();
            self.signal_children(Signal::SIGKILL);
            self.wait_for_children(Instant::now() + KILL_WAIT, None);
        }
        logln!(
            "stopped killed={killed} unreaped={} duration={} {}",
            self.books.children.len(),
            Secs(started.elapsed()),
            self.snapshot()
        );
    }

    fn signal_children(&mut self, signal: Signal) {
        // With SIGCHLD blocked no child can be reaped, so every pid left in the table after
        // this collect is still ours: the signal cannot reach a recycled pid.
        let _blocked = signals::block();
        self.collect_exits();
        for pid in self.books.children.pids() {
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
            if self.books.children.is_empty() {
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
            let polled = poll(&mut fds, wait::timeout(Some(left)));
            woken = polled == Err(Errno::EINTR) || fds[0].any().unwrap_or(false);
        }
    }
}

/// The `refused` line (rate-limited) for a client turned away by a per-source limit.
fn refused(
    books: &mut Books,
    peer: PeerVia,
    reason: &str,
    limit: impl std::fmt::Display,
    group: limits::Group,
) {
    if let Some(held) = books.refusal_warnings.allow(Instant::now()) {
        logln!(
            "refused peer={peer} reason={reason} limit={limit} group={group}{}",
            Suppressed(held)
        );
    }
}

/// How many children serving `peer`'s address group have marked their connection closed.
fn closed_from(
    children: &Children,
    marks: &limits::Marks,
    grouping: limits::Grouping,
    peer: SocketAddr,
) -> u32 {
    let group = grouping.key(peer);
    children
        .iter()
        .filter(|(pid, child)| {
            grouping.key(child.peer) == group && marks.closed(*pid, child.serial)
        })
        .count() as u32
}
