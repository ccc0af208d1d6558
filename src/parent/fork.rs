//! The fork boundary: the one place forkecho calls fork(2).
//!
//! `fork_child` takes only owned values: the client, its address (and how it came), and what
//! the child needs, copied out of the parent's state beforehand. So no borrow of the parent's state is live on
//! the child's side, and nothing the child runs can read or write the parent's bookkeeping (which
//! a child does not even have mapped: see `memory`). The child's side is `child::run`, which never
//! returns; a panic there is caught there, so it cannot unwind into the parent's frames.
//!
//! The caller holds the handled signals blocked across the call (`signals::block`): no handler
//! of the parent's runs in the child before the child has replaced them, and no child's exit can
//! be reaped before the caller has recorded the child.

use std::net::SocketAddr;

use nix::unistd::{ForkResult, Pid, fork};
use socket2::Socket;

use crate::child::{self, Config, Inherited};
use crate::log::Via;

/// Forks a child to serve `client` and returns its pid. The parent's copy of the client socket
/// is closed either way: on failure the client sees its connection closed.
#[inline(never)]
pub fn fork_child(
    client: Socket,
    peer: SocketAddr,
    via: Via,
    config: Config,
    inherited: Inherited,
) -> nix::Result<Pid> {
    // The parent never starts a thread, and its signal handlers are blocked here, so the child
    // may use the allocator and anything else, as the parent could.
    // SAFETY: fork in a single-threaded process leaves the child in a consistent state.
    match unsafe { fork() }? {
        ForkResult::Child => child::run(client, peer, via, config, inherited),
        ForkResult::Parent { child } => Ok(child),
    }
}
