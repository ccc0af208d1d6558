//! The parent: poll, accept, fork, keep count of the children, and stop cleanly.
//!
//! One thread, one loop (`Parent::serve`). poll(2) waits on the self-pipe (`handlers`), the
//! lifeline, the `--metrics` listener (`metrics`), the listeners, and connections still sending
//! their PROXY header (`proxy`). With `--udp`, one more child serves every datagram (`udp_worker`):
//! the parent forks it, and again if it dies, but never reads a datagram. A ready listener is
//! accepted in batches (`accept`); each client passes `admission` and gets a child through `fork`,
//! with the handled signals blocked across it. The SIGCHLD handler reaps exits into the `reaper`'s
//! ring; the loop collects them (`exits`) into the table of `children` and logs the abnormal ones.
//! At `--max-clients` the listeners are simply left out of the poll set, so new connections wait in
//! the kernel's backlog and the next child exit (SIGCHLD, through the self-pipe) resumes accepting.
//! Failures of accept or fork concern one connection or a passing shortage: they are logged
//! (rate-limited) and answered with a short pause in accepting, never with an exit or a busy loop.
//! A stop signal ends the loop; `shutdown` does the rest.
//!
//! What the parent fixes at startup (the listeners, the self-pipe, the children's template) sits
//! in `Parent` itself; what the loop writes while serving sits in `LoopState`, in memory
//! children do not inherit (see `memory`); both are defined in `state`. `Parent`'s methods, by
//! file, in the order a run meets them:
//!
//! | file | methods |
//! |---|---|
//! | `start` | `new`, `prepare_to_announce`, `announce`, `unannounce`, `addrs`, `faults`, ... |
//! | `serve` | `serve` (the loop: `wait`, then `act`), `snapshot` |
//! | `accept` | `accept_batch`, `admit_waiting`, `accept_failed`, `pause_accepting` |
//! | `fork` | `spawn`, `spawn_scrape`, `fork_for` |
//! | `exits` | `collect_exits` |
//! | `udp_worker` | `start_udp_worker`, `udp_worker_died`, `restart_udp_worker` |
//! | `metrics` | `accept_scrapes` |
//! | `control` | `serve_control`, and a method per control request |
//! | `shutdown` | `shutdown` |

mod accept;
pub mod admission;
mod children;
mod control;
mod control_socket;
mod exits;
mod fault_set;
mod fork;
mod handlers;
pub mod limits;
mod metrics;
mod oom;
mod pollset;
mod proxy;
mod reaper;
mod serve;
mod shutdown;
mod start;
mod state;
mod stats;
mod udp_worker;

use anyhow::Result;

pub use state::{Parent, Settings};

/// Catches the signals a serving process handles, first thing (see `handlers::catch_early`).
pub fn catch_signals_early() -> Result<()> {
    handlers::catch_early()
}

/// Gives those signals back to their default actions, in a process that turns out not to serve.
pub fn release_signals() {
    handlers::release();
}
