//! The child half: serve one connection, log how it ended, and `_exit`.
//!
//! The child first undoes what it inherited and does not need: the parent's signal handlers
//! (replaced by the child's own, then unblocked), the listener and the self-pipe. It asks to be
//! sent SIGTERM if the parent dies, so no child outlives a killed server. Then it echoes, logs its
//! close line and leaves with `_exit`, never returning into the parent's code: `exit` would run
//! the parent's atexit handlers and flush stdio buffers the child only holds copies of.

use std::fmt::Display;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use nix::sys::mman::MapFlags;
use nix::unistd::Pid;
use socket2::Socket;

use crate::echo::{self, Echoed, End, Outcome};
use crate::log::{Peer, Secs};
use crate::logln;
use crate::memory;
use crate::signals::{self, Blocked};
use crate::splice::{self, Spliced};

/// What every child needs to know, fixed at startup.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    pub buffer_size: usize,
    pub quiet: bool,
    /// The server-wide bytes-echoed counter, in memory shared with the parent.
    pub bytes_total: &'static AtomicU64,
    /// Echo with splice(2) (falling back to read/write where it is refused), or read/write only.
    pub splice: bool,
    pub parent: Pid,
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
    let parent_alive = signals::prepare_child(&blocked, client.as_raw_fd(), config.parent);
    drop(blocked);
    for &fd in inherited {
        // The fds belong to the parent's objects, which the child never uses: it never returns
        // into the parent's code.
        // SAFETY: nothing in the child refers to these fd numbers after this close.
        unsafe { nix::libc::close(fd) };
    }
    let code = if parent_alive {
        echo_connection(client, peer, config)
    } else {
        0
    };
    // _exit, not exit: no atexit handlers, no second flush of stdio buffers copied from the parent.
    // SAFETY: _exit ends the process at once; nothing of the child's needs to run after it.
    unsafe { nix::libc::_exit(code) }
}

/// Echoes one client and returns the exit status: 0 for connections that ended normally, 1 for
/// I/O failures (the parent logs those exits too). Also serves `--inetd`'s one connection.
pub fn echo_connection(client: Socket, peer: SocketAddr, config: Config) -> i32 {
    let started = Instant::now();
    // TCP_NODELAY and the idle timeouts (SO_RCVTIMEO/SO_SNDTIMEO) came with the socket from the
    // listener (`Listener::set_connection_options`). A read that gets nothing, or a write that
    // moves nothing, for that long fails with EAGAIN: an idle or stalled client.
    let mut stream = TcpStream::from(client);
    let mut outcome = match config.splice {
        true => small_then_splice(&mut stream, config),
        false => copy_echo(&mut stream, config),
    };
    if signals::child_stopped() {
        outcome.end = End::Shutdown;
    }
    // Close before logging, so the client's FIN does not wait for the log line.
    drop(stream);
    finish(Peer(peer), started, outcome, config.quiet)
}

/// Logs the close line (unless `quiet`) and returns the exit status for `outcome`.
pub fn finish(peer: impl Display, started: Instant, outcome: Outcome, quiet: bool) -> i32 {
    if !quiet {
        logln!(
            "close peer={peer} pid={} bytes={} duration={} end={}",
            std::process::id(),
            outcome.bytes,
            Secs(started.elapsed()),
            outcome.end
        );
    }
    if outcome.end.is_normal() { 0 } else { 1 }
}

/// How much a read must fill before the connection counts as bulk and moves to splice. 1 KiB,
/// not 4: a 4 KiB buffer dirtied one more stack page in every child (USS 36 KiB against 32).
const SMALL: usize = 1024;

/// Echoes with read/write through a small stack buffer until one read fills it, then with
/// splice. Most connections never send that much at once, and for them read/write is cheaper
/// than creating a pipe and splicing twice per message (`Echoed`); bulk transfers fill it at once
/// and are spliced after their first KiB.
fn small_then_splice(stream: &mut TcpStream, config: Config) -> Outcome {
    let mut small = [0u8; SMALL];
    let len = SMALL.min(config.buffer_size);
    let echoed = match echo::echo_small(stream, &mut small[..len], config.bytes_total) {
        Echoed::Ended(outcome) => return outcome,
        Echoed::Filled { bytes } => bytes,
    };
    let mut rest = match splice::echo(stream, config.buffer_size, config.bytes_total) {
        Spliced::Done(outcome) => outcome,
        Spliced::Unsupported => copy_echo(stream, config),
    };
    rest.bytes += echoed;
    rest
}

/// The read/write echo, through a buffer of fresh anonymous memory: the child dirties only the
/// pages its reads fill, where a zeroed heap allocation would dirty all of them at once.
pub fn copy_echo<S: Read + Write>(stream: &mut S, config: Config) -> Outcome {
    let len = config.buffer_size;
    match memory::map(len, MapFlags::MAP_PRIVATE) {
        Ok(start) => {
            // The child never unmaps it (it ends with _exit) and nothing else refers to it.
            // SAFETY: `len` readable, writable, zero-filled bytes, borrowed only here.
            let buf = unsafe { std::slice::from_raw_parts_mut(start.as_ptr(), len) };
            echo::echo(stream, buf, config.bytes_total)
        }
        Err(_) => echo::echo(stream, &mut vec![0u8; len], config.bytes_total),
    }
}
