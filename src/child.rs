//! The child half: serve one connection, log how it ended, and `_exit`.
//!
//! The child first undoes what it inherited and does not need: the parent's signal handlers
//! (back to the defaults, then unblocked), the listener and the self-pipe. Then it echoes, logs
//! its close line and leaves with `_exit`, never returning into the parent's code: `exit` would
//! run the parent's atexit handlers and flush stdio buffers the child only holds copies of.

use std::net::{SocketAddr, TcpStream};
use std::os::fd::RawFd;
use std::time::Instant;

use socket2::Socket;

use crate::echo;
use crate::log::{Peer, Secs};
use crate::logln;
use crate::signals::{self, Blocked};

/// What every child needs to know, fixed at startup.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    pub buffer_size: usize,
    pub quiet: bool,
}

/// Runs in the child right after fork, with the handled signals still blocked by `blocked`.
/// `inherited` are the parent's fds the child must close.
pub fn serve(
    blocked: Blocked,
    client: Socket,
    peer: SocketAddr,
    inherited: &[RawFd],
    config: Config,
) -> ! {
    signals::reset_to_default(&blocked);
    drop(blocked);
    for &fd in inherited {
        // The fds belong to the parent's objects, which the child never uses: it never returns
        // into the parent's code.
        // SAFETY: nothing in the child refers to these fd numbers after this close.
        unsafe { nix::libc::close(fd) };
    }
    let code = echo_connection(client, peer, config);
    // _exit, not exit: no atexit handlers, no second flush of stdio buffers copied from the parent.
    // SAFETY: _exit ends the process at once; nothing of the child's needs to run after it.
    unsafe { nix::libc::_exit(code) }
}

/// Echoes one client and returns the exit status: 0 for connections that ended normally, 1 for
/// I/O failures (the parent logs those exits too).
fn echo_connection(client: Socket, peer: SocketAddr, config: Config) -> i32 {
    let started = Instant::now();
    // Each read is written back at once; Nagle's algorithm would only hold small echoes back.
    let _ = client.set_tcp_nodelay(true);
    let mut stream = TcpStream::from(client);
    let mut buf = vec![0u8; config.buffer_size];
    let outcome = echo::echo(&mut stream, &mut buf);
    if !config.quiet {
        logln!(
            "close peer={} pid={} bytes={} duration={} end={}",
            Peer(peer),
            std::process::id(),
            outcome.bytes,
            Secs(started.elapsed()),
            outcome.end
        );
    }
    if outcome.end.is_normal() { 0 } else { 1 }
}
