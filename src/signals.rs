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

#[cfg(test)]
mod tests {
    use super::*;

    /// `--help` and the man page's SIGNALS name every signal that stops the server.
    #[test]
    fn the_help_and_the_man_page_name_every_stop_signal() {
        let help = <crate::cli::Options as clap::CommandFactory>::command()
            .get_long_about()
            .map(ToString::to_string)
            .unwrap_or_default();
        let reference = include_str!("cli/reference.txt");
        let signals = reference.split("# SIGNALS").nth(1).unwrap();
        let signals = signals.split("\n# ").next().unwrap();
        for signal in STOP {
            assert!(help.contains(signal.as_str()), "--help lacks {signal}");
            assert!(signals.contains(signal.as_str()), "SIGNALS lacks {signal}");
        }
    }
}
