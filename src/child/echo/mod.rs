//! The echo protocol (RFC 862): every byte read is written back, in order, until the client ends.
//!
//! `echo_socket` chooses the path for a connection, in this one place:
//! - a connection `faults` picked: `shaped` (read/write, delayed, throttled, cut, reset, ...);
//! - otherwise `copy::echo_small` through a small stack buffer until one read fills it, then
//!   `splice` (bulk transfers are spliced after their first KiB; most connections never send that
//!   much at once, and for them read/write is cheaper than a pipe and two splices per message);
//! - with `--no-splice`, or where splice is refused, `copy::echo_copying` through the whole
//!   buffer;
//! - a TLS session (`echo_tls`): shaped, or `copy::echo_copying`, over the plaintext.
//!
//! Every path writes through `stall` (never blocking, stalls timed from the last byte the client
//! took), counts what reached the client in the `Session`'s total, and ends with an `Outcome`:
//! the bytes echoed and why it ended (`End`, the close line's `end=`).

pub mod copy;
pub mod shaped;
pub mod splice;
pub mod stall;

use std::fmt;
use std::io::{self, ErrorKind};
use std::net::TcpStream;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use nix::sys::mman::MapFlags;

use super::tls::TlsStream;
use super::{Context, stop};
use crate::faults::Acted;
use crate::memory;
use shaped::Shapeable;
use splice::Spliced;
use stall::Conn;

/// Why an echo session ended.
#[derive(Debug)]
pub enum End {
    /// The client sent FIN and everything it sent was echoed.
    ClientClosed,
    /// The client reset the connection or went away while we were writing (ECONNRESET, EPIPE).
    Reset,
    /// The client sent nothing for the idle timeout.
    IdleTimeout,
    /// The client read none of the echo for the idle timeout.
    WriteTimeout,
    /// The server is stopping and closed the connection.
    Shutdown,
    /// The connection reached `--max-duration` (set by `connection`, not by a path).
    MaxDuration,
    /// `--close-after`: the limit was echoed; the connection closes with a FIN.
    CloseAfter,
    /// `--reset-after`: the limit was echoed and acknowledged; the connection closes with a reset.
    ResetAfter,
    /// `--tls`: the handshake failed (why, as the close line's `reason=` says), or was broken
    /// on purpose (`--tls-fault`). Nothing was echoed.
    TlsHandshake(String),
    /// `--control`: the control socket's `reset` ended it, with a reset.
    ControlReset,
    /// `--inband`: a malformed `FORKECHO` line (why), answered with an error line.
    InbandError(String),
    /// Any other I/O error.
    Failed(io::Error),
}

impl End {
    /// `timed_out` is what a timeout means where the error happened (reading or writing).
    pub(crate) fn from_error(err: io::Error, timed_out: End) -> End {
        match err.kind() {
            ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::ConnectionAborted => {
                End::Reset
            }
            // An expired SO_RCVTIMEO, or a stall past its limit (`stall`), is EAGAIN.
            ErrorKind::WouldBlock => timed_out,
            _ => End::Failed(err),
        }
    }

    /// Every kind of end, by `kind`: the close line's `end=` words, and the metrics' labels.
    pub const KINDS: [&str; crate::shared::END_KINDS] = [
        "client-closed",
        "reset",
        "idle-timeout",
        "write-timeout",
        "shutdown",
        "max-duration",
        "close-after",
        "reset-after",
        "tls-handshake",
        "control-reset",
        "inband-error",
        "error",
    ];

    /// `kind` of every `Failed` end.
    pub const ERROR: usize = 11;

    /// This end's index in `KINDS`.
    pub fn kind(&self) -> usize {
        match self {
            End::ClientClosed => 0,
            End::Reset => 1,
            End::IdleTimeout => 2,
            End::WriteTimeout => 3,
            End::Shutdown => 4,
            End::MaxDuration => 5,
            End::CloseAfter => 6,
            End::ResetAfter => 7,
            End::TlsHandshake(_) => 8,
            End::ControlReset => 9,
            End::InbandError(_) => 10,
            End::Failed(_) => End::ERROR,
        }
    }

    /// Whether the session ended the way connections are supposed to end (a handshake the
    /// client failed is the client's doing, like a reset).
    pub fn is_normal(&self) -> bool {
        !matches!(self, End::Failed(_))
    }
}

/// The close-line fields after `end=`: `client-closed`, `reset`, `idle-timeout`,
/// `write-timeout`, `shutdown`, `max-duration`, `close-after`, `reset-after`,
/// `tls-handshake reason="…"`, `control-reset`, `inband-error reason="…"`, or
/// `error error="…"`.
impl fmt::Display for End {
    #[unsafe(link_section = ".text.hot.child")]
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(End::KINDS[self.kind()])?;
        match self {
            End::Failed(err) => write!(f, " error=\"{err}\""),
            End::TlsHandshake(reason) | End::InbandError(reason) => {
                write!(f, " reason=\"{}\"", reason.replace('"', "'"))
            }
            _ => Ok(()),
        }
    }
}

/// What an echo session did: bytes written back, and why it ended.
#[derive(Debug)]
pub struct Outcome {
    pub bytes: u64,
    pub end: End,
}

/// What every path is given besides its stream: where to count the bytes echoed, and what ends
/// the session besides the client.
#[derive(Debug, Clone, Copy)]
pub struct Session {
    /// The server-wide counter every byte that reached the client is added to.
    pub total: &'static AtomicU64,
    /// Asked before every read (the stop handler makes a read about to block return soon).
    pub stopped: fn() -> bool,
    /// How long a client may take none of its echo, counted from the last byte it took; zero
    /// for never. Once stopped, `stopped_stall` at most.
    pub stall: Duration,
    /// Once the server is stopping, a client that reads nothing of its echo for this long is let
    /// go: a second, or a quarter of `--grace` if that is shorter.
    pub stopped_stall: Duration,
}

/// Once the server is stopping, a client that reads nothing of its echo is let go after this
/// long at most.
const STOPPED_STALL: Duration = Duration::from_secs(1);

impl Session {
    /// A connection's session: stopped by a stop signal or `--max-duration`, stalls limited by
    /// `--idle-timeout`.
    pub fn of(context: &Context) -> Session {
        Session {
            total: context.total,
            stopped: stop::requested,
            stall: context.settings.idle_timeout,
            stopped_stall: STOPPED_STALL.min(context.settings.grace / 4),
        }
    }

    /// How long the current stall may last; None for no limit.
    pub fn stall_limit(&self) -> Option<Duration> {
        let limit = Some(self.stall).filter(|stall| !stall.is_zero());
        match (self.stopped)() {
            true => Some(limit.map_or(self.stopped_stall, |limit| limit.min(self.stopped_stall))),
            false => limit,
        }
    }
}

/// Echoes a TLS session: shaped when `faults` picked the connection, otherwise read/write
/// through the buffer (splice cannot see plaintext).
pub fn echo_tls(stream: &mut TlsStream, context: &Context) -> (Outcome, Option<Acted>) {
    shaped_or(stream, context, echo_through_buffer)
}

/// Echoes a connection's socket on the path its context calls for (see the module docs).
/// Returns the outcome and, when faults were asked for, which of them acted (none, if
/// `--fault-rate` left this connection out).
#[unsafe(link_section = ".text.hot.child")]
pub fn echo_socket(socket: &mut TcpStream, context: &Context) -> (Outcome, Option<Acted>) {
    shaped_or(socket, context, echo_plain)
}

/// The unshaped echo of a socket. A named function, not a closure: a closure is compiled apart
/// from the function it is written in, outside its section (`.text.hot.child`: see `child`).
#[unsafe(link_section = ".text.hot.child")]
fn echo_plain(socket: &mut TcpStream, context: &Context) -> Outcome {
    match context.settings.splice {
        true => small_then_splice(socket, context),
        false => echo_through_buffer(socket, context),
    }
}

/// The shaped echo if the faults pick this connection, otherwise `plain`; with the faults that
/// acted, when any were asked for.
#[inline(always)]
fn shaped_or<S: Shapeable>(
    stream: &mut S,
    context: &Context,
    // A function pointer, not `impl FnOnce`: called through the FnOnce trait, a function gets a
    // shim compiled outside `.text.hot.child`, with the function inlined into it.
    plain: fn(&mut S, &Context) -> Outcome,
) -> (Outcome, Option<Acted>) {
    match context.settings.faults {
        Some(faults) if faults.applies(context.serial, context.peer) => {
            let (outcome, acted) = shaped::echo_shaped(stream, faults, context);
            (outcome, Some(acted))
        }
        faults => (plain(stream, context), faults.map(|_| Acted::default())),
    }
}

/// How much a read must fill before the connection counts as bulk and moves to splice. 1 KiB,
/// not 4: a 4 KiB buffer dirtied one more stack page in every child (USS 36 KiB against 32,
/// measured in round 2).
const SMALL: usize = 1024;

/// Echoes with read/write through a small stack buffer until one read fills it, then with
/// splice (or, where splice is refused, read/write through the full buffer).
#[unsafe(link_section = ".text.hot.child")]
fn small_then_splice(socket: &mut TcpStream, context: &Context) -> Outcome {
    let session = Session::of(context);
    let mut small = [0u8; SMALL];
    let len = SMALL.min(context.settings.buffer_size);
    let echoed = match copy::echo_small(socket, &mut small[..len], &session) {
        copy::Echoed::Ended(outcome) => return outcome,
        copy::Echoed::Filled { bytes } => bytes,
    };
    let mut rest = match splice::echo_spliced(socket, context.settings.buffer_size, &session) {
        Spliced::Done(outcome) => outcome,
        Spliced::Unsupported => echo_through_buffer(socket, context),
    };
    rest.bytes += echoed;
    rest
}

/// The read/write echo, through a buffer of fresh anonymous memory: the child dirties only the
/// pages its reads fill, where a zeroed heap allocation would dirty all of them at once.
pub fn echo_through_buffer<S: Conn>(stream: &mut S, context: &Context) -> Outcome {
    let session = Session::of(context);
    let len = context.settings.buffer_size;
    match memory::map(len, MapFlags::MAP_PRIVATE) {
        Ok(start) => {
            // The child never unmaps it (it ends with _exit) and nothing else refers to it.
            // SAFETY: `len` readable, writable, zero-filled bytes, borrowed only here.
            let buf = unsafe { std::slice::from_raw_parts_mut(start.as_ptr(), len) };
            copy::echo_copying(stream, buf, &session)
        }
        Err(_) => copy::echo_copying(stream, &mut vec![0u8; len], &session),
    }
}
