//! One connection, from its first byte to its close line: time it, echo it, close it, log it.
//!
//! A forked child and `--inetd` both serve their connection here. A socket is echoed with
//! read/write through a small stack buffer until one read fills it, then with splice(2) (bulk
//! transfers are spliced after their first KiB; most connections never send that much at once,
//! and for them read/write is cheaper than a pipe and two splices per message). stdin and stdout
//! that are not one socket (`--inetd` under a launcher that passes pipes) are echoed with
//! read/write. A stop signal or `--max-duration` ends the echo before its next read (`stop`), and
//! `close` then closes the socket the way the end calls for. The connection is closed before its
//! line is logged, so the client's FIN never waits for the log.

use std::fmt::Display;
use std::fs::File;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use nix::sys::mman::MapFlags;
use socket2::SockRef;

use super::Config;
use super::echo::{self, Echoed, End, Outcome};
use super::faults::Faults;
use super::sandbox::Confine;
use super::shaped::{self, Acted};
use super::splice::{self, Spliced};
use super::stop;
use crate::debug::{self, Hook};
use crate::log::Secs;
use crate::logln;
use crate::memory;

/// What a connection arrives as.
pub enum Stream {
    /// A connected socket, with TCP_NODELAY, SO_OOBINLINE and the idle timeout (SO_RCVTIMEO)
    /// set on it already: a read that gets nothing for that long fails with EAGAIN, an idle
    /// client.
    Socket(TcpStream),
    /// Something to read from and something to write to (stdin and stdout pipes).
    Pipes(File, File),
}

/// Serves the connection and returns the exit status: 0 for connections that ended normally, 1
/// for I/O failures (the parent logs those exits too). `peer` is what the close line calls it.
pub fn serve(stream: Stream, peer: impl Display, config: Config) -> i32 {
    // Timed for the close line only. With --quiet there is none, and reading the clock would cost
    // each child its first touches of the vDSO and of that code: 2 to 3 page faults, 7 % of a
    // child's CPU on a 32-byte connection (measured: 192 against 179 µs).
    let started = (!config.quiet).then(Instant::now);
    if let Stream::Socket(socket) = &stream
        && !config.max_duration.is_zero()
    {
        stop::expire_after(socket.as_raw_fd(), config.max_duration);
    }
    // Last: the timer's handler is installed, and nothing else is left to set up.
    if let Some(sandbox) = config.sandbox
        && let Err(err) = enter(sandbox, &stream, config.serial)
    {
        logln!(
            "warning: connection from {peer} closed: unable to enter the sandbox ({err}); --no-sandbox serves without it"
        );
        return 1;
    }
    // With faults asked for: which acted on this connection (none, if `--fault-rate` left it out).
    let mut faulted = None;
    let mut outcome = match stream {
        Stream::Socket(mut socket) => {
            let outcome = match config.faults {
                Some(faults) if faults.applies(config.serial) => {
                    let (outcome, acted) = shaped(&mut socket, faults, config);
                    faulted = Some(acted);
                    outcome
                }
                Some(_) => {
                    faulted = Some(Acted::default());
                    echo_socket(&mut socket, config)
                }
                None => echo_socket(&mut socket, config),
            };
            stop::forget_socket();
            // Before the client can see the close: the parent must not count it against
            // --max-per-ip once the client may reconnect.
            if let Some(marks) = config.marks {
                marks.mark_closed(config.serial);
            }
            close(socket, &outcome.end);
            outcome
        }
        Stream::Pipes(from, to) => copy_echo(&mut Pipes(from, to), config),
    };
    // A stop or expiry makes a read or a stall time out: say which it was. (Other ends stand,
    // whatever signal came after them.)
    if matches!(
        outcome.end,
        End::IdleTimeout | End::WriteTimeout | End::Shutdown
    ) {
        if stop::stopped() {
            outcome.end = End::Shutdown;
        } else if stop::expired() {
            outcome.end = End::MaxDuration;
        }
    }
    if let Some(started) = started {
        logln!(
            "close peer={peer} pid={} bytes={} duration={} end={}{}",
            std::process::id(),
            outcome.bytes,
            Secs(started.elapsed()),
            outcome.end,
            FaultField(faulted)
        );
    }
    if outcome.end.is_normal() { 0 } else { 1 }
}

/// Enters the sandbox, keeping the connection's descriptors and the log's. `serial` is the
/// connection number (for the test hook).
fn enter(sandbox: Confine, stream: &Stream, serial: u32) -> io::Result<()> {
    let highest = match stream {
        Stream::Socket(socket) => socket.as_raw_fd(),
        Stream::Pipes(from, to) => from.as_raw_fd().max(to.as_raw_fd()),
    };
    sandbox.enter(highest.max(crate::log::fd()))?;
    if serial == 1 && debug::armed(Hook::ForbiddenSyscall) {
        // A system call no child makes: the sandbox kills the child here.
        // SAFETY: socket(2) with constant arguments; whatever it returns is left alone.
        unsafe { nix::libc::socket(nix::libc::AF_INET, nix::libc::SOCK_STREAM, 0) };
    }
    Ok(())
}

/// How long a stopped connection waits for the client to finish: see `close`.
const LINGER: Duration = Duration::from_secs(2);

/// Closes the socket the way its end calls for.
/// - Ended by a stop signal or `--max-duration`: a lingering close (Apache's). The client may
///   still be sending, and closing with unread input, or receiving input after our FIN once the
///   receiving side is shut, makes the kernel answer with a reset that throws away the echo still
///   queued for the client. So: FIN after the queued echo (shutdown of the sending side only),
///   then read and discard until the client closes too, for at most `LINGER`, then close.
/// - A client that read nothing of its echo for the timeout: abort with a reset (SO_LINGER 0),
///   so its unsent echo does not sit in kernel memory for minutes. `--reset-after`: the same
///   reset, on purpose.
/// - `--close-after`: the lingering close, so the client gets exactly the bytes before the FIN
///   and no reset, whatever it still sends.
/// - Otherwise the client has closed, reset or gone idle: a plain close.
fn close(socket: TcpStream, end: &End) {
    match end {
        End::WriteTimeout | End::ResetAfter => {
            let _ = SockRef::from(&socket).set_linger(Some(Duration::ZERO));
        }
        End::CloseAfter => linger(&socket),
        End::Reset | End::ClientClosed | End::Failed(_) => {}
        _ if stop::requested() => linger(&socket),
        _ => {}
    }
}

fn linger(socket: &TcpStream) {
    if socket.shutdown(Shutdown::Write).is_err() {
        return;
    }
    let deadline = Instant::now() + LINGER;
    let mut discard = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || socket.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match (&*socket).read(&mut discard) {
            Ok(0) => return,
            Ok(_) => {}
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            // Timed out (perhaps early, after a second stop signal), or reset: done.
            Err(_) => return,
        }
    }
}

/// What ends the echo besides the client: a stop or `--max-duration`, and a client that takes
/// none of its echo for `--idle-timeout`.
fn watch(config: Config) -> echo::Watch {
    echo::Watch {
        stopped: stop::requested,
        stall: config.idle_timeout,
    }
}

/// A socket's echo without faults: small reads first, then splice, or read/write throughout.
fn echo_socket(socket: &mut TcpStream, config: Config) -> Outcome {
    match config.splice {
        true => small_then_splice(socket, config),
        false => copy_echo(socket, config),
    }
}

/// The echo of a connection `faults` picked (always read/write: splice cannot shape).
#[cold]
#[inline(never)]
fn shaped(socket: &mut TcpStream, faults: &Faults, config: Config) -> (Outcome, Acted) {
    let rng = faults.rng(config.serial);
    shaped::echo(
        socket,
        config.buffer_size,
        faults,
        rng,
        config.bytes_total,
        watch(config),
        config.idle_timeout,
    )
}

/// The close line's ` fault=…` field: present only when faults were asked for.
struct FaultField(Option<Acted>);

impl Display for FaultField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(acted) => write!(f, " fault={acted}"),
            None => Ok(()),
        }
    }
}

/// How much a read must fill before the connection counts as bulk and moves to splice. 1 KiB,
/// not 4: a 4 KiB buffer dirtied one more stack page in every child (USS 36 KiB against 32).
const SMALL: usize = 1024;

/// Echoes with read/write through a small stack buffer until one read fills it, then with
/// splice (or, where splice is refused, read/write through the full buffer).
fn small_then_splice(stream: &mut TcpStream, config: Config) -> Outcome {
    let mut small = [0u8; SMALL];
    let len = SMALL.min(config.buffer_size);
    let echoed =
        match echo::echo_small(stream, &mut small[..len], config.bytes_total, watch(config)) {
            Echoed::Ended(outcome) => return outcome,
            Echoed::Filled { bytes } => bytes,
        };
    let mut rest = match splice::echo(
        stream,
        config.buffer_size,
        config.bytes_total,
        watch(config),
    ) {
        Spliced::Done(outcome) => outcome,
        Spliced::Unsupported => copy_echo(stream, config),
    };
    rest.bytes += echoed;
    rest
}

/// The read/write echo, through a buffer of fresh anonymous memory: the child dirties only the
/// pages its reads fill, where a zeroed heap allocation would dirty all of them at once.
fn copy_echo<S: echo::Conn>(stream: &mut S, config: Config) -> Outcome {
    let len = config.buffer_size;
    match memory::map(len, MapFlags::MAP_PRIVATE) {
        Ok(start) => {
            // The child never unmaps it (it ends with _exit) and nothing else refers to it.
            // SAFETY: `len` readable, writable, zero-filled bytes, borrowed only here.
            let buf = unsafe { std::slice::from_raw_parts_mut(start.as_ptr(), len) };
            echo::echo(stream, buf, config.bytes_total, watch(config))
        }
        Err(_) => echo::echo(
            stream,
            &mut vec![0u8; len],
            config.bytes_total,
            watch(config),
        ),
    }
}

/// stdin for reading and stdout for writing, unbuffered (std's stdout buffers by line).
struct Pipes(File, File);

impl Read for Pipes {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl echo::Conn for Pipes {}

impl Write for Pipes {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.1.write(data)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
