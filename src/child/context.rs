//! What every connection's child is handed at fork, by value: the `Settings` fixed at startup
//! (from `crate::settings`, once) and the one connection's `Context` (its number, its client,
//! the memory it shares with the parent). The parent's `fork` writes a `Context` for each child;
//! `--inetd` builds the same for its one connection; everything in `child/` reads it.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use crate::faults::Faults;
use crate::sandbox::Confine;
use crate::shared::{Marks, Tally};

/// How every connection is served, fixed at startup from the options (`crate::settings`).
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// `--buffer-size`: the most bytes one transfer moves.
    pub buffer_size: usize,
    /// `--quiet`: no close line.
    pub quiet: bool,
    /// Echo with splice(2) (falling back to read/write where it is refused), or read/write only.
    pub splice: bool,
    /// `--max-duration`: a connection's whole life at most (zero: no limit).
    pub max_duration: Duration,
    /// `--idle-timeout`: how long a client may send nothing, or take none of its echo (zero:
    /// no limit). Reads are timed by the socket (SO_RCVTIMEO); stalled writes by the echo.
    pub idle_timeout: Duration,
    /// `--delay`, `--chunk` and the other faults, if any are asked for.
    pub faults: Option<&'static Faults>,
    /// `--grace`: once the server is stopping, how long the parent waits before it kills the
    /// children; a child closes its connection within it (`connection::close`).
    pub grace: Duration,
    /// `--tls`: the configuration each connection's handshake uses (`tls_session`).
    pub tls: Option<&'static crate::tls::Tls>,
    /// `--control`: SIGUSR2 resets the connection (the control socket's `reset`).
    pub control: bool,
    /// `--inband`: a connection may begin with a `FORKECHO` line asking for faults (`inband`).
    pub inband: bool,
    /// `--websocket`: the most bytes one message may hold (`child::websocket`); None: raw echo.
    pub websocket: Option<usize>,
    /// `--dump`: where each connection's traffic is written (`child::dump`); None: nowhere.
    pub dump: Option<&'static super::dump::settings::Dump>,
}

/// One connection's context: everything its child needs, handed over by value at fork.
#[derive(Debug, Clone, Copy)]
pub struct Context {
    pub settings: Settings,
    /// The connection's number (the count of connections accepted, 1 for the first), for its
    /// close mark and for `faults`.
    pub serial: u32,
    /// The client's address (the PROXY header's, if one came), for `--fault-on from:`; None for
    /// a Unix client.
    pub peer: Option<std::net::IpAddr>,
    /// The server-wide bytes-echoed counter, in memory shared with the parent.
    pub total: &'static AtomicU64,
    /// With `--max-per-ip`: where to mark the connection closed, just before closing it.
    pub marks: Option<Marks>,
    /// How the child confines itself before its first read (None with `--no-sandbox`).
    pub confine: Option<Confine>,
    /// With `--metrics`: where the child counts its connection when it closes.
    pub tally: Option<&'static Tally>,
}
