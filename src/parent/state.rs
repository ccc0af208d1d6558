//! What the parent is made of: `Parent`, fixed at startup (the listeners, the self-pipe, the
//! children's template), and `LoopState`, what the loop writes while serving, in memory children do
//! not inherit (see `memory`). Written by `start` (which makes them) and by the loop's files
//! (`serve`, `accept`, `fork`, `exits`, `control`, `udp_worker`, `metrics`, `shutdown`); nothing
//! outside `parent/` sees their fields.

use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use nix::unistd::Pid;

use super::admission::{self, Admission};
use super::children::Children;
use super::control_socket::{Control, Gate};
use super::fault_set::FaultSet;
use super::handlers::Wakeup;
use super::oom::OomScore;
use super::pollset::PollSet;
use super::proxy::WaitingRoom;
use super::stats::Counts;
use crate::child;
use crate::child::udp::{Bound, Serving};
use crate::log::RateLimit;
use crate::memory::ParentOnly;
use crate::sandbox::Sandbox;
use crate::setup::harness::Harness;
use crate::setup::listener::Listener;
use crate::setup::udp_sockets::UdpSocket;
use crate::shared::Shared;

/// How long accepting pauses after a resource shortage (EMFILE, fork's EAGAIN, ...).
pub(super) const BACKOFF: Duration = Duration::from_millis(100);
/// At most one warning line per second for each kind of failure.
pub(super) const WARN_INTERVAL: Duration = Duration::from_secs(1);
/// The first pause before a dead UDP worker is forked again (`udp_worker` doubles it).
pub(super) const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// What the parent's loop enforces, from the options (`crate::settings`).
#[derive(Debug, Clone)]
pub struct Settings {
    pub admission: admission::Policy,
    /// With `--proxy-protocol`: how long a connection may take to send its header.
    pub proxy_deadline: Option<Duration>,
    /// `--grace`: how long children get to close their connections at shutdown.
    pub grace: Duration,
    /// `--quiet`: no accept lines.
    pub quiet: bool,
    /// With `--udp` or `--udp-only`: how the UDP worker serves.
    pub udp: Option<Serving>,
    /// `--backlog`, for listening again after the control socket's `down`.
    pub backlog: i32,
}

pub struct Parent {
    /// Empty once shutdown has closed them.
    pub(super) listeners: Vec<Listener>,
    /// With `--metrics`: where scrapes come (closed with the listeners at shutdown).
    pub(super) metrics: Option<Listener>,
    /// With `--control`: the control socket and its connections.
    pub(super) control: Option<Control>,
    /// Whether systemd passed the listeners (the control socket's `down` cannot apply).
    pub(super) from_systemd: bool,
    /// `--backlog`, for listening again after the control socket's `down`.
    pub(super) backlog: i32,
    /// Their fds, the metrics listener's, and the directories of their socket files, which
    /// every child closes.
    pub(super) listener_fds: &'static [RawFd],
    /// With `--udp`: the UDP sockets (which every child but the worker closes) and how the
    /// worker serves them.
    pub(super) udp: Option<UdpService>,
    pub(super) wakeup: Wakeup,
    /// The template of what every child gets, by value (its `serial` set for each): changing
    /// it changes the next fork's child, never a live one.
    pub(super) template: child::Context,
    /// Counters the children add to.
    pub(super) shared: &'static Shared,
    /// Raises the parent's oom_score_adj across each fork, for the child to inherit.
    pub(super) oom: Option<OomScore>,
    pub(super) pid: Pid,
    pub(super) grace: Duration,
    pub(super) quiet: bool,
    pub(super) started: Instant,
    /// Installed on the parent (and so on every child) by `confine`.
    pub(super) sandbox: Option<&'static Sandbox>,
    /// What a harness is told, and the lifeline that ties forkecho to it.
    pub(super) harness: Harness,
    pub(super) state: ParentOnly<LoopState>,
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
pub(super) struct LoopState {
    pub(super) children: Children,
    pub(super) admission: Admission,
    /// With `--proxy-protocol`: the connections whose header has not come in full yet.
    pub(super) proxy: Option<WaitingRoom>,
    /// What the loop polls, refilled before every poll (see `pollset`).
    pub(super) polled: PollSet,
    pub(super) counts: Counts,
    /// Accepting resumes at this instant after a resource shortage.
    pub(super) paused_until: Option<Instant>,
    pub(super) accept_warnings: RateLimit,
    pub(super) fork_warnings: RateLimit,
    pub(super) stopping: bool,
    /// With `--udp`: the worker's restarts.
    pub(super) udp: Supervision,
    /// Whether the listeners take connections (the control socket's `down`, `blackhole`, `up`).
    pub(super) gate: Gate,
    /// The number of the first connection the faults in force apply to.
    pub(super) faults_from: u64,
    /// The fault set the control socket made last, which the fork template refers to; None
    /// while the template is the startup set or no set.
    pub(super) fault_set: Option<FaultSet>,
}

impl LoopState {
    /// Connections that hold a place under `--max-clients`: children, and connections waiting
    /// for their PROXY header.
    pub(super) fn live(&self) -> usize {
        self.children.serving() + self.proxy.as_ref().map_or(0, WaitingRoom::len)
    }
}

/// The UDP sockets and how they are served.
pub struct UdpService {
    /// Owned here, so they stay open for every worker; closed at shutdown.
    pub sockets: Vec<UdpSocket>,
    pub bound: &'static [Bound],
    pub settings: Serving,
}

/// The worker's life, as the loop sees it.
pub struct Supervision {
    /// When the running worker was forked.
    pub(super) started: Instant,
    /// When to fork a new one, after the last died.
    pub(super) restart_at: Option<Instant>,
    pub(super) backoff: Duration,
}

impl UdpService {
    /// The worker's sockets, their addresses as every worker gets them, and how it serves.
    pub fn new(sockets: Vec<UdpSocket>, settings: Serving) -> UdpService {
        let bound: Vec<_> = sockets.iter().map(|s| s.bound()).collect();
        UdpService {
            sockets,
            bound: Vec::leak(bound),
            settings,
        }
    }
}

impl Supervision {
    pub fn new() -> Supervision {
        Supervision {
            started: Instant::now(),
            restart_at: None,
            backoff: FIRST_BACKOFF,
        }
    }

    /// When the loop must wake to restart the worker.
    pub fn restart_at(&self) -> Option<Instant> {
        self.restart_at
    }
}
