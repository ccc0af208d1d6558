//! Why a probe got no intact echo (`Failure`): written by `probe` and `link` as they read an
//! echo back, read by `report` to count it lost or corrupt and say so.

use std::fmt;
use std::io;

/// Why a probe got no intact echo.
#[derive(Debug)]
pub enum Failure {
    /// Not all of the echo came back before the deadline (lost).
    Timeout { received: usize },
    /// The connection could not be made, or failed (lost).
    Error(io::Error),
    /// A byte came back different (corrupt).
    Corrupt { at: usize, got: u8, want: u8 },
    /// The server closed before the whole echo came back (corrupt).
    Truncated { received: usize },
    /// The whole echo came back, and then more bytes than were sent (corrupt: a server that
    /// duplicates or adds data).
    Surplus { bytes: usize },
    /// Something else came back, said in words (a WebSocket server's close, a text message for a
    /// binary one, an upgrade refused): corrupt.
    Message(String),
    /// Ctrl-C: the probe is abandoned and not counted.
    Interrupted,
}

impl Failure {
    /// Whether the echo came back wrong (as opposed to not at all).
    pub fn is_corrupt(&self) -> bool {
        matches!(
            self,
            Failure::Corrupt { .. }
                | Failure::Truncated { .. }
                | Failure::Surplus { .. }
                | Failure::Message(_)
        )
    }

    /// Whether the connection turned out closed (FIN or reset) before any of the echo came
    /// back: what a connection the server closed while idle looks like.
    pub fn is_closed_before_echo(&self) -> bool {
        match self {
            Failure::Truncated { received } => *received == 0,
            Failure::Error(err) => matches!(
                err.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
            ),
            _ => false,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Timeout { received } => write!(f, "timeout ({received} bytes back)"),
            Failure::Error(err) => write!(f, "error: {err}"),
            Failure::Corrupt { at, got, want } => {
                write!(f, "corrupt: byte {at} is {got:#04x}, sent {want:#04x}")
            }
            Failure::Truncated { received } => {
                write!(f, "truncated: connection closed after {received} bytes")
            }
            Failure::Surplus { bytes } => write!(f, "surplus: {bytes} bytes"),
            Failure::Message(what) => f.write_str(what),
            Failure::Interrupted => f.write_str("interrupted"),
        }
    }
}
