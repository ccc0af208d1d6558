//! The faults, acting on WebSocket messages (`--websocket` with `--delay`, `--chunk`, ...): what
//! each does to a message, and when a limit ends the session. Built by `websocket::echo` for a
//! connection the faults apply to (`--fault-on`, `--fault-rate`); it reads the faults the child
//! was forked with, and records which acted for the close line.
//!
//! - `--delay MS[:JITTER]`: each message is sent back that long after it came.
//! - `--rate BYTES`: the echo paced, each frame followed by its share of a second.
//! - `--chunk SIZE[:MS]`: each message sent back as frames of at most SIZE payload bytes, MS
//!   apart (a text message may be cut inside a character: only the whole message is UTF-8).
//! - `--close-after`, `--reset-after`, `--stall-after` with a byte count: the limit acts at the
//!   first message boundary at or past it (a message is never cut: every message that began
//!   before it is echoed whole); with a time, when the time comes; `--close-on` and
//!   `--reset-on`: at the first message that holds the pattern, which is not echoed.
//!   close: a close frame (1000, "close-after"), then the lingering close; reset: a TCP reset
//!   once the client has received what came before; stall: nothing more is read or written.
//! - `--slow-close MS`: the client's close is answered that long after it came.
//! - `--websocket-close CODE[:REASON]`: the close frame a close limit sends.
//! - `--websocket-ping MS`: the server pings the client that often.
//! - `--websocket-no-pong N`: the client's first N pings are answered, no later one.

use std::time::Duration;

use crate::clock::monotonic;
use crate::faults::{Acted, Faults, LimitKind, Rng, Trigger};

/// A connection's faults and what they did.
pub struct Shaping {
    pub faults: &'static Faults,
    rng: Rng,
    pub acted: Acted,
    /// When the connection started, on the monotonic clock (`crate::clock`).
    started: Duration,
}

impl Shaping {
    pub fn new(faults: &'static Faults, serial: u32) -> Shaping {
        Shaping {
            faults,
            rng: faults.rng(serial),
            acted: Acted::default(),
            started: monotonic(),
        }
    }

    /// The limit that is due with `echoed` bytes sent back so far, if any: a byte count reached,
    /// or a time passed.
    pub fn limit_due(&mut self, echoed: u64) -> Option<LimitKind> {
        let limit = self.faults.limit?;
        let due = match limit.at {
            Trigger::Bytes(bytes) => echoed >= bytes,
            Trigger::After(after) => monotonic().saturating_sub(self.started) >= after,
            Trigger::Pattern(_) => false,
        };
        due.then(|| self.acts(limit.kind))
    }

    /// The limit a message holding its pattern sets off (`--close-on`, `--reset-on`).
    pub fn pattern_in(&mut self, payload: &[u8]) -> Option<LimitKind> {
        let limit = self.faults.limit?;
        let Trigger::Pattern(pattern) = limit.at else {
            return None;
        };
        let found = pattern.is_empty() || memchr::memmem::find(payload, pattern).is_some();
        found.then(|| self.acts(limit.kind))
    }

    /// When a time-triggered limit comes, if one was asked for.
    pub fn limit_at(&self) -> Option<Duration> {
        match self.faults.limit?.at {
            Trigger::After(after) => Some(self.started + after),
            _ => None,
        }
    }

    fn acts(&mut self, kind: LimitKind) -> LimitKind {
        self.acted.add(Acted::limit(kind));
        kind
    }

    /// How long to hold a message back before sending it back (`--delay`).
    pub fn delay(&mut self) -> Option<Duration> {
        let delay = self.faults.delay?;
        self.acted.add(Acted::DELAY);
        Some(self.rng.around(delay.base, delay.jitter))
    }

    /// The frames to send a message of `len` bytes back in: their size, and the pause after
    /// each but the last (`--chunk`); the whole message at once without.
    pub fn frames(&mut self, len: usize) -> Option<(usize, Duration)> {
        let chunk = self.faults.chunk.filter(|chunk| chunk.size < len)?;
        self.acted.add(Acted::CHUNK);
        Some((chunk.size, chunk.gap))
    }

    /// The pause after sending `len` bytes (`--rate`).
    pub fn paced(&mut self, len: usize) -> Option<Duration> {
        let rate = self.faults.rate?;
        self.acted.add(Acted::RATE);
        Some(Duration::from_secs_f64(len as f64 / rate as f64))
    }

    /// The close frame a close limit sends: `--websocket-close`'s, or 1000 "close-after".
    pub fn close_frame(&mut self) -> (u16, &str) {
        match &self.faults.websocket.close {
            Some(close) => {
                self.acted.add(Acted::WEBSOCKET_CLOSE);
                (close.code, close.reason())
            }
            None => (1000, "close-after"),
        }
    }

    /// How often the server pings (`--websocket-ping`).
    pub fn ping_every(&self) -> Option<Duration> {
        self.faults.websocket.ping
    }

    /// A ping went out.
    pub fn pinged(&mut self) {
        self.acted.add(Acted::WEBSOCKET_PING);
    }

    /// Whether the client's ping number `count` (1 for the first) is answered.
    pub fn answers_ping(&mut self, count: u64) -> bool {
        match self.faults.websocket.pongs {
            Some(pongs) if count > pongs => {
                self.acted.add(Acted::WEBSOCKET_NO_PONG);
                false
            }
            _ => true,
        }
    }

    /// How long to hold the answer to the client's close (`--slow-close`).
    pub fn slow_close(&mut self) -> Option<Duration> {
        let wait = self.faults.slow_close?;
        self.acted.add(Acted::SLOW_CLOSE);
        Some(wait)
    }
}
