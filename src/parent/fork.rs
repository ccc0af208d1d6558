//! The fork boundary: the one place forkecho calls fork(2), for a client (`spawn`), a metrics
//! scrape (`spawn_scrape`) or the UDP worker (`parent/udp_worker.rs`).
//!
//! `spawn` blocks the handled signals (`handlers::block`) from before the fork until the child is
//! in the table: no handler of the parent's runs in the child before the child has replaced them,
//! and no child's exit can be reaped before the parent has recorded the child. `fork_child` takes
//! only owned values: the client, its address (and how it came), and the child's `Context`,
//! copied out of the parent's state beforehand. So no borrow of the parent's state is live on
//! the child's side, and nothing the child runs can read or write the parent's bookkeeping (which
//! a child does not even have mapped: see `memory`). The child's side is `child::run`, which never
//! returns; a panic there is caught there, so it cannot unwind into the parent's frames.

use std::io;
use std::os::fd::RawFd;
use std::time::Instant;

use nix::errno::Errno;
use nix::unistd::{ForkResult, Pid, fork};
use socket2::Socket;

use super::children::{Child, Role};
use super::state::{BACKOFF, Parent};
use super::{handlers, oom};
use crate::child::metrics::Figures;
use crate::child::{self, Inherited, Job};
use crate::log::logln;
use crate::log::{Dec, Suppressed};
use crate::peer::{Peer, PeerVia, Via};

impl Parent {
    /// Forks a child for `client`, with the handled signals blocked from before the fork until
    /// the child is in the table.
    pub(super) fn spawn(&mut self, client: Socket, peer: Peer, via: Via) {
        let serial = (self.state.counts.accepted as u32).max(1);
        let context = child::Context {
            serial,
            peer: match peer {
                Peer::Ip(addr) => Some(addr.ip()),
                Peer::Unix(_) => None,
            },
            ..self.template
        };
        let job = Job::Echo {
            client,
            peer,
            via,
            context,
        };
        match self.fork_for(job, peer, serial, Role::Client) {
            Ok(pid) => {
                let state = &mut *self.state;
                state.admission.opened(peer);
                if !self.quiet {
                    logln!(
                        "accept peer={} pid={} live={}",
                        PeerVia(peer, via),
                        Dec(pid.as_raw() as u64),
                        Dec(state.children.serving() as u64)
                    );
                }
            }
            Err(errno) => {
                self.state.counts.fork_failures += 1;
                self.fork_failed(peer, errno);
            }
        }
    }

    /// Forks a child to answer the metrics scrape on `client`, from `peer`, with the parent's
    /// counts as they stand.
    pub(super) fn spawn_scrape(&mut self, client: Socket, peer: Peer) {
        let figures = Figures {
            live: self.state.live() as u64,
            uptime: self.started.elapsed(),
            dumps: (self.template.settings.dump).map(|dump| dump.counts.named()),
            udp_restarts: self.udp.is_some().then_some(self.state.counts.udp_restarts),
            ..self.state.counts.figures()
        };
        let job = Job::Metrics {
            client,
            figures,
            shared: self.shared,
            confine: self.template.confine,
        };
        if let Err(errno) = self.fork_for(job, peer, 0, Role::Scrape) {
            self.fork_failed(peer, errno);
        }
    }

    /// Forks a child for `job` and records it in the table in its `role`, with the handled
    /// signals blocked from before the fork until then. On failure the job's client, if any, is
    /// closed.
    pub(super) fn fork_for(
        &mut self,
        job: Job,
        peer: Peer,
        serial: u32,
        role: Role,
    ) -> nix::Result<Pid> {
        self.state.children.make_room()?;
        let blocked = handlers::block();
        let inherited = Inherited {
            fds: self.inherited_fds(),
            listeners: self.listener_fds,
            control: self
                .control
                .as_ref()
                .map_or([-1; child::CONTROL_FDS], |c| c.client_fds()),
            udp: self.udp.as_ref().map_or(&[], |udp| udp.bound),
            mask: blocked.previous(),
            parent: self.pid,
        };
        // The child is born with the raised score; the parent takes its own back at once.
        let oom = self.oom.as_ref().filter(|oom| oom.raise());
        let forked = fork_child(job, inherited);
        if let Some(oom) = oom {
            oom.restore();
        }
        let pid = forked?;
        // With SIGCHLD blocked nothing more can be reaped, so once the exits reaped so far are
        // collected, no pid in the table has been freed: the one fork just returned, possibly a
        // recycled one, cannot collide with a stale entry.
        self.collect_exits();
        let since = Instant::now();
        let child = Child {
            peer,
            since,
            serial,
            role,
        };
        self.state.children.insert(pid, child);
        drop(blocked);
        Ok(pid)
    }

    /// A child for `peer` could not be made (fork failed, or the table could not grow): the
    /// client saw its connection closed; the server pauses, then goes on.
    fn fork_failed(&mut self, peer: Peer, errno: Errno) {
        let now = self.pause_accepting();
        if let Some(held) = self.state.fork_warnings.allow(now) {
            logln!(
                "warning: fork failed for peer={} (connection closed, accepts paused {}ms): {}{}",
                peer,
                BACKOFF.as_millis(),
                io::Error::from(errno),
                Suppressed(held)
            );
        }
    }

    /// The parent's fds a child must close besides the listeners: both ends of the self-pipe,
    /// the oom_score_adj file and the harness's (-1, which close ignores, for each it has not).
    fn inherited_fds(&self) -> [RawFd; 6] {
        let [pipe_read, pipe_write] = self.wakeup.raw_fds();
        let oom = self.oom.as_ref().map_or(-1, oom::OomScore::fd);
        let [directory, notify, lifeline] = self.harness.fds();
        [pipe_read, pipe_write, oom, directory, notify, lifeline]
    }
}

/// Forks a child to do `job` and returns its pid. The parent's copy of the job's client socket is
/// closed either way: on failure the client sees its connection closed.
#[inline(never)]
#[unsafe(link_section = ".text.hot.child")]
fn fork_child(job: Job, inherited: Inherited) -> nix::Result<Pid> {
    // The parent never starts a thread, and its signal handlers are blocked here, so the child
    // may use the allocator and anything else, as the parent could.
    // SAFETY: fork in a single-threaded process leaves the child in a consistent state.
    match unsafe { fork() }? {
        ForkResult::Child => child::run(job, inherited),
        ForkResult::Parent { child } => Ok(child),
    }
}
