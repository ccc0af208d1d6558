//! Which signal means what, on both sides of the fork.
//!
//! Read by the parent, which handles them (`parent/handlers.rs`), and by each child, which
//! replaces the parent's handlers with its own (`child/stop.rs`). Nobody writes anything here.

use nix::sys::signal::Signal;

/// Signals that stop the server (in the parent) or close the connection (in a child). SIGQUIT
/// (Ctrl-\ in a terminal) stops it like SIGINT (Ctrl-C), cleanly, rather than with a core dump.
pub const STOP: [Signal; 4] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
];
