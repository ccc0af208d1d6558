//! How an echo session ends and what it did (`End`, `Outcome`, the close line's `end=` and
//! `bytes=`), and what every echo path is given besides its stream (`Session`). Every path in
//! `echo/` (and `child::tls_session`) writes an `Outcome`; `child::connection` reads it for the
//! close line and the metrics.

use std::fmt;
use std::io::{self, ErrorKind};
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use super::super::context::Context;
use super::super::stop;

/// Why an echo session ended.
///
/// Declared in the order of `KINDS`, so that `kind` is the enum's tag as it stands: in another
/// order, the compiler maps one to the other with a table among the constants, a page every
/// child that logs its close line faults in for it.
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
    /// `--websocket`: a request that was not an upgrade (answered 400 or 426), or a frame that
    /// broke the protocol (answered with a close of the code the close line's `ws-close=` says).
    WebSocket(String),
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
        "websocket-error",
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
            End::WebSocket(_) => 12,
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
/// `tls-handshake reason="…"`, `control-reset`, `inband-error reason="…"`, `error error="…"`,
/// or `websocket-error reason="…"`.
impl fmt::Display for End {
    #[unsafe(link_section = ".text.hot.child")]
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(End::KINDS[self.kind()])?;
        match self {
            End::Failed(err) => write!(f, " error=\"{err}\""),
            End::TlsHandshake(reason) | End::InbandError(reason) | End::WebSocket(reason) => {
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
