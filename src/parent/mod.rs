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
mod control_socket;
mod exits;
mod fault_set;
mod fork;
pub mod limits;
mod oom;
mod pollset;
mod proxy;
mod reaper;
mod scrape;
mod serve;
mod shutdown;
mod signals;
mod start;
mod state;
mod stats;
mod udp;

use anyhow::Result;

pub use state::{Parent, Settings};

/// Catches the signals a serving process handles, first thing (see `signals::catch_early`).
pub fn catch_signals_early() -> Result<()> {
    signals::catch_early()
}

/// Gives those signals back to their default actions, in a process that turns out not to serve.
pub fn release_signals() {
    signals::release();
}
