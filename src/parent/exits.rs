//! The main loop's side of the reaper: the exits the SIGCHLD handler left in the ring
//! (`reaper::exits`) are taken off it, removed from the table of `children`, counted, and the
//! abnormal ones logged (`child pid=... killed signal=...`). A UDP worker's death goes to
//! `udp_worker` for a restart. Runs in the parent's loop only (and at shutdown), never in a
//! handler.

use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

use super::children::Role;
use super::handlers;
use super::reaper::exits;
use super::state::Parent;
use crate::log::Secs;
use crate::log::logln;

impl Parent {
    /// Takes the exits the SIGCHLD handler reaped, logging the abnormal ones.
    pub(super) fn collect_exits(&mut self) {
        while exits().drain(|pid, status| self.child_exited(Pid::from_raw(pid), status)) {
            // The ring overflowed and the handler left zombies: reap them here, with SIGCHLD
            // blocked so this loop is the ring's only producer meanwhile.
            let _blocked = handlers::block();
            exits().reap();
        }
    }

    fn child_exited(&mut self, pid: Pid, status: i32) {
        let state = &mut *self.state;
        let Some(child) = state.children.remove(pid) else {
            state.counts.reaped += 1;
            logln!("warning: reaped a child that was not in the table pid={pid}");
            return;
        };
        // waitpid without WUNTRACED/WCONTINUED reports only exits and deaths; anything else is
        // taken for a plain exit.
        let ending = match WaitStatus::from_raw(pid, status) {
            Ok(WaitStatus::Signaled(_, signal, core)) => Ending::Killed(signal, core),
            Ok(WaitStatus::Exited(_, code)) => Ending::Exited(code),
            _ => Ending::Exited(0),
        };
        if child.role == Role::Udp && !state.stopping {
            self.udp_worker_died(pid, ending);
            return;
        }
        if child.role == Role::Client {
            state.counts.reaped += 1;
            state.admission.closed(child.peer);
            // A child that exits 0 or 1 has counted its connection (`crate::shared::Tally`);
            // one that died otherwise has not.
            if !matches!(ending, Ending::Exited(0 | 1)) {
                state.counts.abnormal += 1;
            }
        }
        match ending {
            Ending::Exited(0) => {}
            // At shutdown we sent it ourselves; the summary line counts them.
            Ending::Killed(Signal::SIGKILL, _) if state.stopping => {}
            _ => logln!(
                "child pid={pid} peer={} {ending} after={}",
                child.peer,
                Secs(child.since.elapsed())
            ),
        }
    }
}

/// How a child ended, as its log line says it: `exited status=N`, or `killed signal=NAME` (with
/// ` core-dumped` if it did).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Exited(i32),
    Killed(Signal, bool),
}

impl std::fmt::Display for Ending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ending::Exited(code) => write!(f, "exited status={code}"),
            Ending::Killed(signal, core) => {
                let core = if *core { " core-dumped" } else { "" };
                write!(f, "killed signal={}{core}", signal.as_str())
            }
        }
    }
}
