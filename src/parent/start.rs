//! The parent before it serves: `Parent::new` makes everything the loop needs (the shared
//! memory, the signal handlers and their self-pipe, the reaper's ring, the tables), then the
//! steps up to the readiness line (`prepare_to_announce`, `announce`) and what `server` asks of
//! it meanwhile (the addresses, the faults, the UDP sockets).

use std::os::fd::RawFd;
use std::time::Instant;

use anyhow::{Context, Result};

use super::admission::Admission;
use super::children::Children;
use super::control_socket::{Control, Gate};
use super::proxy::WaitingRoom;
use super::serve::CONTROL_CLIENTS;
use super::state::{LoopState, Parent, Settings, Supervision, UdpService, WARN_INTERVAL};
use super::stats::Counts;
use super::{handlers, oom, pollset};
use crate::address::Addr;
use crate::child;
use crate::faults::Faults;
use crate::log::{RateLimit, logln};
use crate::memory::ParentOnly;
use crate::sandbox::Confine;
use crate::setup::listener::Listener;
use crate::shared;

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
        let control = control.map(|(socket, file)| Control::new(socket, file));
        let socket_dirs: Vec<RawFd> = listeners
            .iter()
            .filter_map(Listener::dir_fd)
            .chain(control.as_ref().and_then(Control::dir_fd))
            .collect();
        let sandbox = crate::sandbox::prepare(
            sandbox,
            harness.directory(),
            &socket_dirs,
            control.is_some(),
            template.dump.map(|dump| dump.dir),
        )
        .map_err(anyhow::Error::msg)?;
        let wakeup = handlers::install()?;
        let state = loop_state(ours, listeners.len(), template.faults.is_some())?;
        let marks = state.admission.marks();
        let listener_fds = listeners
            .iter()
            .chain(&metrics)
            .map(Listener::raw_fd)
            .chain(control.as_ref().map(Control::listener_fd))
            .chain(socket_dirs);
        let listener_fds = listener_fds.collect::<Vec<_>>();
        let udp = ours
            .udp
            .filter(|_| !udp_sockets.is_empty())
            .map(|settings| UdpService::new(udp_sockets, settings));
        Ok(Parent {
            udp,
            listener_fds: Vec::leak(listener_fds),
            listeners,
            wakeup,
            template: child::Context {
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
    pub(super) fn confine(&self) -> Result<()> {
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
        self.template.settings.faults
    }

    /// With `--metrics`: where scrapes are served, with the real port.
    pub fn metrics_addr(&self) -> Option<&Addr> {
        self.metrics.as_ref().map(Listener::addr)
    }

    /// The addresses listened on, with the real ports.
    pub fn addrs(&self) -> impl Iterator<Item = &Addr> + '_ {
        self.listeners.iter().map(Listener::addr)
    }
}

/// The loop's own bookkeeping, in memory children do not inherit: the table of children,
/// admission, the PROXY waiting room, the poll set (the self-pipe, the lifeline, the metrics
/// listener, the control slots, every listener, and as many waiting connections as there may
/// be), the counts. `faulted`: whether the startup faults apply from connection 1.
fn loop_state(ours: &Settings, listeners: usize, faulted: bool) -> Result<ParentOnly<LoopState>> {
    let poll_capacity = CONTROL_CLIENTS + super::control_socket::MOST + listeners;
    let poll_capacity = poll_capacity + ours.admission.max_clients;
    let state = LoopState {
        children: Children::new()?,
        admission: Admission::new(ours.admission)?,
        proxy: ours.proxy_deadline.map(WaitingRoom::new).transpose()?,
        polled: pollset::PollSet::new(poll_capacity).context("unable to map the poll set")?,
        counts: Counts::default(),
        paused_until: None,
        accept_warnings: RateLimit::new(WARN_INTERVAL),
        fork_warnings: RateLimit::new(WARN_INTERVAL),
        stopping: false,
        udp: Supervision::new(),
        gate: Gate::Up,
        faults_from: u64::from(faulted),
        fault_set: None,
    };
    ParentOnly::new(state).context("unable to map the parent's bookkeeping")
}
