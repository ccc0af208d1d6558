//! The parent: poll, accept, fork, keep count of the children, and stop cleanly.
//!
//! One thread, one loop (`Parent::serve`, this file). poll(2) waits on the self-pipe (`signals`),
//! the lifeline, the `--metrics` listener (`scrape`), the listeners, and connections still sending
//! their PROXY header (`proxy`). With `--udp`, one more child serves every datagram (`udp`): the
//! parent forks it, and again if it dies, but never reads a datagram. A ready listener is accepted
//! in batches (`accept`); each client passes `admission` and gets a child through `fork`, with the
//! handled signals blocked across it. The SIGCHLD handler reaps exits into the `reaper`'s ring; the
//! loop collects them into the table of `children` and logs the abnormal ones. At `--max-clients`
//! the listeners are simply left out of the poll set, so new connections wait in the kernel's
//! backlog and the next child exit (SIGCHLD, through the self-pipe) resumes accepting. Failures of
//! accept or fork concern one connection or a passing shortage: they are logged (rate-limited) and
//! answered with a short pause in accepting, never with an exit or a busy loop. A stop signal ends
//! the loop; `shutdown` does the rest.
//!
//! What the parent fixes at startup (the listeners, the self-pipe, the children's context) sits
//! in `Parent` itself; what the loop writes while serving sits in `LoopState`, in memory
//! children do not inherit (see `memory`).

mod accept;
pub mod admission;
mod children;
mod control;
mod exits;
mod fault_set;
mod fork;
pub mod limits;
mod oom;
mod pollset;
mod proxy;
mod reaper;
mod scrape;
mod shutdown;
mod signals;
mod stats;
mod udp;

use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::unistd::Pid;

use crate::address::Addr;
use crate::child;
use crate::deadline;
use crate::faults::Faults;
use crate::log::logln;
use crate::log::{RateLimit, Suppressed};
use crate::memory::ParentOnly;
use crate::sandbox::{Confine, Sandbox};
use crate::setup::harness::Harness;
use crate::setup::listener::Listener;
use crate::shared::{self, Shared};
use admission::Admission;
use children::Children;
use proxy::WaitingRoom;
use signals::Wakeup;
use stats::{Counts, Snapshot};

/// The poll set's fixed entries: the self-pipe, the lifeline and the metrics listener (-1, which
/// poll skips, for either that is not there); with `--control`, the control socket and a slot
/// for each of its connections; the listeners follow. (No slot is there for nothing: poll(2)
/// refuses more entries than RLIMIT_NOFILE allows descriptors.)
const PIPE: usize = 0;
const LIFELINE: usize = 1;
const METRICS: usize = 2;
const CONTROL: usize = 3;
const CONTROL_CLIENTS: usize = 4;

/// How long accepting pauses after a resource shortage (EMFILE, fork's EAGAIN, ...).
const BACKOFF: Duration = Duration::from_millis(100);
/// At most one warning line per second for each kind of failure.
const WARN_INTERVAL: Duration = Duration::from_secs(1);

/// Catches the signals a serving process handles, first thing (see `signals::catch_early`).
pub fn catch_signals_early() -> Result<()> {
    signals::catch_early()
}

/// Gives those signals back to their default actions, in a process that turns out not to serve.
pub fn release_signals() {
    signals::release();
}

/// What the parent's loop enforces, from the options (`crate::settings`).
#[derive(Debug, Clone)]
pub struct Settings {
    pub admission: admission::Settings,
    /// With `--proxy-protocol`: how long a connection may take to send its header.
    pub proxy_deadline: Option<Duration>,
    /// `--grace`: how long children get to close their connections at shutdown.
    pub grace: Duration,
    /// `--quiet`: no accept lines.
    pub quiet: bool,
    /// With `--udp` or `--udp-only`: how the UDP worker serves.
    pub udp: Option<crate::child::udp::Settings>,
    /// `--backlog`, for listening again after the control socket's `down`.
    pub backlog: i32,
}

pub struct Parent {
    /// Empty once shutdown has closed them.
    listeners: Vec<Listener>,
    /// With `--metrics`: where scrapes come (closed with the listeners at shutdown).
    metrics: Option<Listener>,
    /// With `--control`: the control socket and its connections.
    control: Option<control::Control>,
    /// Whether systemd passed the listeners (the control socket's `down` cannot apply).
    from_systemd: bool,
    /// `--backlog`, for listening again after the control socket's `down`.
    backlog: i32,
    /// Their fds, the metrics listener's, and the directories of their socket files, which
    /// every child closes.
    listener_fds: &'static [RawFd],
    /// With `--udp`: the UDP sockets (which every child but the worker closes) and how the
    /// worker serves them.
    udp: Option<udp::UdpService>,
    wakeup: Wakeup,
    /// What every child gets, by value (its `serial` set for each).
    child: child::Context,
    /// Counters the children add to.
    shared: &'static Shared,
    /// Raises the parent's oom_score_adj across each fork, for the child to inherit.
    oom: Option<oom::OomScore>,
    pid: Pid,
    grace: Duration,
    quiet: bool,
    started: Instant,
    /// Installed on the parent (and so on every child) by `confine`.
    sandbox: Option<&'static Sandbox>,
    /// What a harness is told, and the lifeline that ties forkecho to it.
    harness: Harness,
    state: ParentOnly<LoopState>,
}

/// Why the loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// A stop signal, the last one and how many have come.
    Signal(nix::sys::signal::Signal, usize),
    /// `--stdin-lifeline`: stdin reached its end.
    Lifeline,
}

/// What the loop writes while it serves: never seen by a child.
struct LoopState {
    children: Children,
    admission: Admission,
    /// With `--proxy-protocol`: the connections whose header has not come in full yet.
    proxy: Option<WaitingRoom>,
    /// What the loop polls, refilled before every poll (see `pollset`).
    polled: pollset::PollSet,
    counts: Counts,
    /// Accepting resumes at this instant after a resource shortage.
    paused_until: Option<Instant>,
    accept_warnings: RateLimit,
    fork_warnings: RateLimit,
    stopping: bool,
    /// With `--udp`: the worker's restarts.
    udp: udp::Supervision,
    /// Whether the listeners take connections (the control socket's `down`, `blackhole`, `up`).
    gate: control::Gate,
    /// The number of the first connection the faults in force apply to.
    faults_from: u64,
    /// The fault set the control socket made last, which the fork template refers to; None
    /// while the template is the startup set or no set.
    fault_set: Option<fault_set::FaultSet>,
}

impl LoopState {
    /// Connections that hold a place under `--max-clients`: children, and connections waiting
    /// for their PROXY header.
    fn live(&self) -> usize {
        self.children.serving() + self.proxy.as_ref().map_or(0, WaitingRoom::len)
    }
}

impl Parent {
    /// Everything the loop needs, made before the server says it is ready: the shared memory,
    /// the signal handlers and their self-pipe, the reaper's ring, the tables.
    pub fn new(
        listening: crate::setup::Listening,
        ours: &Settings,
        template: crate::child::Settings,
        sandbox: bool,
        started: Instant,
    ) -> Result<Parent> {
        let crate::setup::Listening {
            listeners,
            metrics,
            udp: udp_sockets,
            harness,
            control,
            from_systemd,
            ..
        } = listening;
        let shared = shared::map()?;
        let control = control.map(|(socket, file)| control::Control::new(socket, file));
        let socket_dirs: Vec<RawFd> = listeners
            .iter()
            .filter_map(Listener::dir_fd)
            .chain(control.as_ref().and_then(control::Control::dir_fd))
            .collect();
        let sandbox = crate::sandbox::prepare(
            sandbox,
            harness.directory(),
            &socket_dirs,
            control.is_some(),
        )
        .map_err(anyhow::Error::msg)?;
        let wakeup = signals::install()?;
        let admission = Admission::new(ours.admission)?;
        let marks = admission.marks();
        let proxy = ours.proxy_deadline.map(WaitingRoom::new).transpose()?;
        // The self-pipe, the lifeline, the metrics listener, every listener, and as many waiting
        // connections as there may be.
        let poll_capacity = CONTROL_CLIENTS + control::MOST + listeners.len();
        let poll_capacity = poll_capacity + ours.admission.max_clients;
        let state = ParentOnly::new(LoopState {
            children: Children::new()?,
            admission,
            proxy,
            polled: pollset::PollSet::new(poll_capacity).context("unable to map the poll set")?,
            counts: Counts::default(),
            paused_until: None,
            accept_warnings: RateLimit::new(WARN_INTERVAL),
            fork_warnings: RateLimit::new(WARN_INTERVAL),
            stopping: false,
            udp: udp::Supervision::new(),
            gate: control::Gate::Up,
            faults_from: template.faults.map_or(0, |_| 1),
            fault_set: None,
        })
        .context("unable to map the parent's bookkeeping")?;
        let listener_fds = listeners
            .iter()
            .chain(&metrics)
            .map(Listener::raw_fd)
            .chain(control.as_ref().map(control::Control::listener_fd))
            .chain(socket_dirs);
        let listener_fds = listener_fds.collect::<Vec<_>>();
        let udp = ours
            .udp
            .filter(|_| !udp_sockets.is_empty())
            .map(|settings| {
                let bound: Vec<_> = udp_sockets.iter().map(|s| s.bound()).collect();
                udp::UdpService {
                    sockets: udp_sockets,
                    bound: Vec::leak(bound),
                    settings,
                }
            });
        Ok(Parent {
            udp,
            listener_fds: Vec::leak(listener_fds),
            listeners,
            wakeup,
            child: child::Context {
                settings: template,
                serial: 0,
                peer: None,
                total: &shared.bytes,
                marks,
                confine: sandbox.map(|_| Confine::Inherited),
                // Without --metrics no child touches the tally.
                tally: metrics.as_ref().map(|_| &shared.tally),
            },
            metrics,
            control,
            from_systemd,
            backlog: ours.backlog,
            shared,
            oom: oom::OomScore::open().unwrap_or_else(|why| {
                logln!("warning: children are not made the OOM killer's first choice: {why}");
                None
            }),
            pid: nix::unistd::getpid(),
            grace: ours.grace,
            quiet: ours.quiet,
            started,
            sandbox,
            harness,
            state,
        })
    }

    /// The steps before the readiness line that can still fail: `--exit-with-parent` (after the
    /// privileges are dropped, which would clear it), the port file under its temporary name,
    /// and the sandbox.
    pub fn prepare_to_announce(&mut self) -> Result<()> {
        self.harness.follow_parent()?;
        // Who may use the control socket: the user forkecho now runs as (and root).
        if let Some(control) = &mut self.control {
            control.owner = nix::unistd::geteuid().as_raw();
        }
        // The port of the IP listeners (they share one, with the UDP sockets); with Unix
        // listeners alone, none.
        let port = self.listeners.iter().find_map(|l| l.addr().port());
        let port = port.or_else(|| self.udp_addrs().next().map(|addr| addr.port()));
        self.harness.stage(port)?;
        // Before the first fork, and before the sandbox keeps /proc/self/maps out of reach.
        crate::memory::shed_startup();
        self.confine()?;
        // Last, under the sandbox it inherits: UDP is served from the readiness line on.
        self.start_udp_worker()?;
        Ok(())
    }

    /// With `--udp`: the UDP sockets' addresses, with the real port.
    pub fn udp_addrs(&self) -> impl Iterator<Item = std::net::SocketAddr> + '_ {
        self.udp
            .iter()
            .flat_map(|udp| udp.bound.iter().map(|b| b.addr))
    }

    /// With datagram faults: what they are, for the startup line.
    pub fn datagram_faults(&self) -> Option<&'static crate::faults::DatagramFaults> {
        self.udp.as_ref().and_then(|udp| udp.settings.faults)
    }

    /// A start that failed in `prepare_to_announce`: nothing of the port file is left.
    pub fn unannounce(&mut self) {
        self.harness.unstage();
    }

    /// The moment of the readiness line: the harness is told (`line` is the stdout line).
    pub fn announce(&mut self, line: &str) {
        self.harness.announce(line);
    }

    /// Installs the sandbox on the parent, once everything before serving is done: from here
    /// on the parent and every child it forks make only the system calls serving needs.
    fn confine(&self) -> Result<()> {
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
    pub fn faults(&self) -> Option<&'static Faults> {
        self.child.settings.faults
    }

    /// With `--metrics`: where scrapes are served, with the real port.
    pub fn metrics_addr(&self) -> Option<&Addr> {
        self.metrics.as_ref().map(Listener::addr)
    }

    /// The addresses listened on, with the real ports.
    pub fn addrs(&self) -> impl Iterator<Item = &Addr> + '_ {
        self.listeners.iter().map(Listener::addr)
    }

    /// Serves until a stop signal, or the end of the lifeline. Never inlined into its caller,
    /// whose startup locals would sit between the loop's own and every fork: the parent copies
    /// each stack page it writes after a fork, so the loop's stack stays as shallow as it can.
    #[inline(never)]
    pub fn serve(&mut self) -> Stop {
        let lifeline = self.harness.lifeline();
        loop {
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
            let until_restart =
                (state.udp.restart_at()).map(|at| at.saturating_duration_since(now));
            let until_idle = (self.control.as_ref())
                .and_then(control::Control::next_deadline)
                .map(|at| at.saturating_duration_since(now));
            let timeout = pause
                .into_iter()
                .chain(until_deadline)
                .chain(until_restart)
                .chain(until_idle)
                .min();
            let listening = match pause.is_none() && !full && state.gate == control::Gate::Up {
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
                for i in 0..control::MOST {
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
            // EINTR means a handler ran: its byte is in the pipe, so drain it now rather than pay
            // another poll to find it.
            let woken = polled == Err(Errno::EINTR) || set.ready(PIPE);
            // Which listeners have connections waiting, as a bit set (up to 64 listeners are
            // polled; `setup` refuses more).
            let ready = (0..listening)
                .filter(|&i| set.ready(first_listener + i))
                .fold(0u64, |bits, i| bits | 1 << i);
            let lifeline_ready = set.ready(LIFELINE);
            let scrapes_ready = set.ready(METRICS);
            let control_ready = self.control.is_some() && set.ready(CONTROL);
            let controllers = (0..control::MOST)
                .filter(|&i| self.control.is_some() && set.ready(CONTROL_CLIENTS + i))
                .fold(0u64, |bits, i| bits | 1 << i);
            let pending = self.wakeup.take(woken);
            if let Some((signal, count)) = pending.stop {
                return Stop::Signal(signal, count);
            }
            if lifeline_ready && self.harness.lifeline_ended() {
                return Stop::Lifeline;
            }
            if let Err(errno) = polled
                && errno != Errno::EINTR
            {
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
            if scrapes_ready {
                self.accept_scrapes();
            }
            if self.control.is_some() {
                self.serve_control(control_ready, controllers);
            }
            // The waiting connections follow the listeners in the poll set.
            self.admit_waiting(first_listener + listening);
            for index in 0..self.listeners.len() {
                if ready & (1 << index) != 0 {
                    self.accept_batch(index);
                }
            }
        }
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot::take(
            self.state.children.serving(),
            self.state.counts,
            self.shared,
            self.started,
            self.udp.is_some(),
        )
    }
}
