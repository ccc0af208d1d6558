//! The faults only a WebSocket session has (`--websocket-close`, `--websocket-ping`,
//! `--websocket-no-pong`): made by `cli::faults` (at startup, or for the control socket) like
//! the others, part of every `crate::faults::Faults`, read by `child::websocket`.

use std::fmt;
use std::time::Duration;

/// The longest reason a close frame holds (125 bytes of payload, less the code's 2).
pub const REASON_MAX: usize = 123;

/// The WebSocket faults asked for; all off by default.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WebSocketFaults {
    /// `--websocket-close CODE[:REASON]`: the close frame `--close-after` and `--close-on` send.
    pub close: Option<Close>,
    /// `--websocket-ping MS`: the server pings the client this often.
    pub ping: Option<Duration>,
    /// `--websocket-no-pong N`: the client's first N pings are answered, no later one.
    pub pongs: Option<u64>,
}

/// A close frame's code and reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Close {
    pub code: u16,
    reason: [u8; REASON_MAX],
    len: u8,
}

impl Close {
    /// `code` with `reason` (at most `REASON_MAX` bytes: the caller has checked).
    pub fn new(code: u16, reason: &str) -> Close {
        let mut close = Close {
            code,
            reason: [0; REASON_MAX],
            len: reason.len().min(REASON_MAX) as u8,
        };
        close.reason[..close.len as usize]
            .copy_from_slice(&reason.as_bytes()[..close.len as usize]);
        close
    }

    pub fn reason(&self) -> &str {
        std::str::from_utf8(&self.reason[..self.len as usize]).unwrap_or("")
    }
}

impl WebSocketFaults {
    pub fn any(&self) -> bool {
        *self != WebSocketFaults::default()
    }
}

/// The startup line's words for them (`websocket-close=1011 websocket-ping=500ms ...`).
impl fmt::Display for WebSocketFaults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(close) = self.close {
            write!(f, "websocket-close={} ", close.code)?;
        }
        if let Some(ping) = self.ping {
            write!(f, "websocket-ping={}ms ", ping.as_millis())?;
        }
        if let Some(pongs) = self.pongs {
            write!(f, "websocket-no-pong={pongs} ")?;
        }
        Ok(())
    }
}
